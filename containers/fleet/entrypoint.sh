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
set -e
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
    rm -f /etc/ssh/ssh_host_*
    ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
fi
mkdir -p /run/sshd
chmod 0755 /run/sshd
exec /usr/sbin/sshd -D -e
