#!/bin/sh
# A fleet host: its own ssh host key, then sshd in the foreground as the
# container's main process; with -e it logs "Server listening on" to the
# container log, which the harness waits for. A container of the fleet image
# has no key (the image is made without the one the package made, or every
# container would share it) and makes one at its first start; a container of
# a prepared fleet's snapshot keeps the key of the host it was made from, so
# the deploy host's known hosts, made once, name it. Only an ed25519 key:
# everything that connects asks for it, and RSA keys would cost most of a
# container's start in CPU.
#
# A deploy host serves /srv over HTTP (the apt and deployment repositories)
# on the port the harness wrote to /etc/release-harness/http-port: a
# snapshot's container starts serving before sshd listens, so a fleet is
# ready once every sshd is. `serve-http` starts the server alone (the harness
# runs it on the host it prepares). `python3 -S`: the standard library is
# all it needs, and it skips the site hooks (the coverage collector's).
set -e
serve_http() {
    port=$(cat /etc/release-harness/http-port)
    (setsid python3 -S -m http.server "$port" --directory /srv \
        >/var/log/release-harness-http.log 2>&1 &)
    for i in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 0.05
    done
}
if [ "$1" = serve-http ]; then
    serve_http
    exit 0
fi
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
    rm -f /etc/ssh/ssh_host_*
    ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
if [ -s /etc/release-harness/http-port ]; then
    serve_http
fi
mkdir -p /run/sshd
chmod 0755 /run/sshd
exec /usr/sbin/sshd -D -e
