#!/bin/sh
# Runs libvirtd in the foreground as one "host" of a test: in its own mount namespace, with ROOT/etc, ROOT/run,
# ROOT/lib, ROOT/cache and ROOT/log bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt and /var/log/libvirt, so it never touches (or is touched by) a system libvirtd or another node.
# The caller writes ROOT/etc (libvirtd.conf with its own host_uuid, qemu.conf, hooks/) before starting it, and
# talks to it with: virsh -c 'qemu:///system?socket=ROOT/run/libvirt-sock'. exec keeps the PID: the caller stops
# libvirtd by this process's PID.
set -eu
ROOT=$1
for d in etc run lib cache log; do mkdir -p "$ROOT/$d"; done
exec unshare --mount --propagation private -- /bin/sh -c '
  set -eu
  R=$1
  mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt
  mount --bind "$R/etc" /etc/libvirt
  mount --bind "$R/run" /run/libvirt
  mount --bind "$R/lib" /var/lib/libvirt
  mount --bind "$R/cache" /var/cache/libvirt
  mount --bind "$R/log" /var/log/libvirt
  exec /usr/sbin/libvirtd -f /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid
' libvirtd-node "$ROOT"
