#!/usr/bin/env bash
# build-initramfs-cfgchg.sh - busybox initramfs for the config-change interop guest (virtio_blk resized at runtime).
#
# Usage: build-initramfs-cfgchg.sh OUTPUT.cpio.gz [KERNEL_VERSION]
#   KERNEL_VERSION defaults to the newest /lib/modules/<kver> that has virtio_blk.
# Needs: busybox-static (/bin/busybox or $BUSYBOX), cpio, gzip, xz/zstd (compressed modules).
#
# The guest /init loads virtio_blk, prints the size of /dev/vda, announces that it waits for a resize, polls
# /sys/block/vda/size (every 0.05 s, at most vhostcompat.polls times, default 2400 = about 2 minutes) until it
# differs, prints the new size, reads the first bytes of the new last sector, and powers off.
# Console lines (stable, parsed by ConfigChangeInteropTests):
#   VHOSTCOMPAT: init uptime=<s> kernel=<kver> mode=cfgchg
#   VHOSTCOMPAT: insmod <module> failed
#   VHOSTCOMPAT: no-vda
#   VHOSTCOMPAT: size-before sectors=<n> status=0x<hex> uptime=<s>
#   VHOSTCOMPAT: waiting-for-resize sectors=<n> uptime=<s>
#   VHOSTCOMPAT: size-after sectors=<n> polls=<n> uptime=<s>        (sectors unchanged: no resize seen in time)
#   VHOSTCOMPAT: last-sector head=<first 17 bytes of the last sector, as text>
#   VHOSTCOMPAT: dmesg <kernel line mentioning vda>
#   VHOSTCOMPAT: status_end=0x<hex>
#   VHOSTCOMPAT: done uptime=<s>
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
initramfs_name=build-initramfs-cfgchg
. "$here/initramfs-lib.sh"
initramfs_setup "${1:?usage: build-initramfs-cfgchg.sh OUTPUT.cpio.gz [KERNEL_VERSION]}" "${2:-}" virtio_blk modules.dep
initramfs_root vhostcompat-initramfs-cfgchg bin dev proc sys tmp lib/modules -- \
  sh mount insmod cat echo sleep ls grep cut tr sed head dd uname poweroff dmesg timeout
initramfs_modules order skip virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk

cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
up() { cut -d' ' -f1 /proc/uptime; }
POLLS=2400
for w in $(cat /proc/cmdline); do case "$w" in vhostcompat.polls=*) POLLS=${w#*=};; esac; done
echo "VHOSTCOMPAT: init uptime=$(up) kernel=$(uname -r) mode=cfgchg"
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "VHOSTCOMPAT: insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
if [ ! -b /dev/vda ]; then
  echo "VHOSTCOMPAT: no-vda"; echo "VHOSTCOMPAT: done uptime=$(up)"; poweroff -f
fi
D=/sys/block/vda/device
S0=$(cat /sys/block/vda/size)
echo "VHOSTCOMPAT: size-before sectors=$S0 status=$(cat $D/status) uptime=$(up)"
echo "VHOSTCOMPAT: waiting-for-resize sectors=$S0 uptime=$(up)"
i=0; S=$S0
while [ "$S" = "$S0" ] && [ $i -lt "$POLLS" ]; do sleep 0.05; i=$((i+1)); S=$(cat /sys/block/vda/size); done
echo "VHOSTCOMPAT: size-after sectors=$S polls=$i uptime=$(up)"
if [ "$S" != "$S0" ]; then
  echo "VHOSTCOMPAT: last-sector head=$(timeout 30 dd if=/dev/vda bs=512 skip=$((S-1)) count=1 2>/dev/null | head -c 17 | tr -c 'A-Za-z0-9-' '.')"
fi
dmesg | grep -E 'vda|virtio_blk' | sed 's/^/VHOSTCOMPAT: dmesg /'
echo "VHOSTCOMPAT: status_end=$(cat $D/status)"
echo "VHOSTCOMPAT: done uptime=$(up)"
poweroff -f
INIT
chmod +x "$root/init"
initramfs_pack 1
echo "build-initramfs-cfgchg: $out ($(stat -c %s "$out") bytes, kernel $kver, modules: $(tr '\n' ' ' < "$root/lib/modules/order"))"
