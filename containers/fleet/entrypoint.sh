#!/bin/sh
# A fleet host: its own ssh host key (containers of one image must not share
# them), then sshd in the foreground as the container's main process; with -e
# it logs "Server listening on" to the container log, which the harness waits
# for. Only an ed25519 key: everything that connects asks for it, and RSA keys
# would cost most of a container's start in CPU.
set -e
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
mkdir -p /run/sshd
chmod 0755 /run/sshd
exec /usr/sbin/sshd -D -e
