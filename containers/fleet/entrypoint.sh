#!/bin/sh
# A fleet host: its own ssh host keys (containers of one image must not share
# them), then sshd in the foreground as the container's main process.
set -e
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A
mkdir -p /run/sshd
chmod 0755 /run/sshd
exec /usr/sbin/sshd -D -e
