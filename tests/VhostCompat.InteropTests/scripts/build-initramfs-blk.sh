#!/usr/bin/env bash
# build-initramfs-blk.sh - busybox initramfs for the vhost-user-blk interop guest (virtio_blk + blkpattern).
#
# Usage: build-initramfs-blk.sh OUTPUT.cpio.gz [KERNEL_VERSION]
#   KERNEL_VERSION defaults to the newest /lib/modules/<kver> that has virtio_blk.
# Needs: busybox-static (/bin/busybox or $BUSYBOX), cpio, gzip, xz/zstd (compressed modules), gcc (static
# libc) for blkpattern.c, which sits next to this script.
#
# The guest /init prints everything on the serial console with the prefix "VHOSTCOMPAT: " and is steered by
# kernel command-line switches:
#   vhostcompat.mode=write   write the pattern at the offsets, fdatasync, read it back   (default)
#   vhostcompat.mode=check   only read back and compare (the boot after the reboot)
#   vhostcompat.tag=TAG      pattern tag (default "none"), so a check cannot pass on a stale image
#   vhostcompat.offsets=O1,O2,...  byte offsets (multiples of 512) of the 4 KiB pattern blocks
#   vhostcompat.mode=stress  crash-recovery workload (blkpattern stress): rewrite the region pass after pass until
#                            the host writes "VHOSTCOMPAT-STOP" into the control block, then verify the region;
#                            vhostcompat.start=, .bytes= (region), .qd= (writes in flight per writer), .ctrl= (control
#                            block offset), .maxsec= (give up without the host's stop)
#   vhostcompat.hold=SECONDS after "done", keep the guest (and the device's negotiated state) up for at most SECONDS
#                            before powering off, so the host can ask QEMU over QMP what the device negotiated
#                            (x-query-virtio-status: a poweroff resets the device) and then quit QEMU itself
# Console lines (stable, parsed by the C# harness, BlockGuest.cs):
#   VHOSTCOMPAT: init uptime=<s> kernel=<kver> mode=<mode>
#   VHOSTCOMPAT: insmod <module> failed
#   VHOSTCOMPAT: no-vda
#   VHOSTCOMPAT: blkdev status=0x<hex> features=<bits, bit 0 first> size=<512-byte sectors> serial='<s>'
#                cache_type='<s>' hw_queues=<n> ro=<0|1> uptime=<s>
#   VHOSTCOMPAT: blk ...                       (blkpattern: wrote/readback/mismatch/info lines)
#   VHOSTCOMPAT: blk verdict=ok|FAIL phase=write|check bad=<n>
#   VHOSTCOMPAT: dmesg <kernel line>          (stress: kernel lines about I/O errors, virtio, vda, timeouts)
#   VHOSTCOMPAT: dmesg_io_errors=<n>
#   VHOSTCOMPAT: status_end=0x<hex>
#   VHOSTCOMPAT: done uptime=<s>
#   VHOSTCOMPAT: hold seconds=<n>              (only with vhostcompat.hold: the guest waits before its poweroff)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
initramfs_name=build-initramfs-blk
. "$here/initramfs-lib.sh"
initramfs_setup "${1:?usage: build-initramfs-blk.sh OUTPUT.cpio.gz [KERNEL_VERSION]}" "${2:-}" virtio_blk modules.dep
command -v gcc >/dev/null || { echo "build-initramfs-blk: gcc missing (needed for blkpattern.c)" >&2; exit 2; }
initramfs_root vhostcompat-initramfs-blk bin dev proc sys tmp lib/modules -- \
  sh mount insmod cat echo sleep ls grep cut tr sed wc head mkdir uname poweroff sync dmesg
gcc -O2 -static -Wall -o "$root/bin/blkpattern" "$here/blkpattern.c"

# virtio core + PCI transport + virtio_blk, in dependency order; modules modules.dep does not list are skipped.
initramfs_modules order skip virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk

cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
up() { cut -d' ' -f1 /proc/uptime; }
MODE=write; TAG=none; OFFS=0; START=8388608; BYTES=4194304; QD=16; CTRL=1048576; MAXSEC=300; HOLD=0
for w in $(cat /proc/cmdline); do case "$w" in
  vhostcompat.mode=*) MODE=${w#*=};; vhostcompat.tag=*) TAG=${w#*=};; vhostcompat.offsets=*) OFFS=${w#*=};;
  vhostcompat.start=*) START=${w#*=};; vhostcompat.bytes=*) BYTES=${w#*=};; vhostcompat.qd=*) QD=${w#*=};;
  vhostcompat.ctrl=*) CTRL=${w#*=};; vhostcompat.maxsec=*) MAXSEC=${w#*=};; vhostcompat.hold=*) HOLD=${w#*=};;
esac; done
echo "VHOSTCOMPAT: init uptime=$(up) kernel=$(uname -r) mode=$MODE"
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "VHOSTCOMPAT: insmod $m failed"; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 150 ]; do sleep 0.1; i=$((i+1)); done
if [ ! -b /dev/vda ]; then
  echo "VHOSTCOMPAT: no-vda"; ls /sys/bus/virtio/devices /sys/block
  echo "VHOSTCOMPAT: done uptime=$(up)"; poweroff -f
fi
D=/sys/block/vda/device
echo "VHOSTCOMPAT: blkdev status=$(cat $D/status) features=$(cat $D/features) size=$(cat /sys/block/vda/size) serial='$(cat /sys/block/vda/serial 2>/dev/null)' cache_type='$(cat /sys/block/vda/cache_type 2>/dev/null)' hw_queues=$(ls /sys/block/vda/mq | wc -l) ro=$(cat /sys/block/vda/ro) uptime=$(up)"
blkpattern /dev/vda info
case "$MODE" in
  write) blkpattern /dev/vda write "$TAG" "$OFFS" ;;
  check) blkpattern /dev/vda check "$TAG" "$OFFS" ;;
  stress)
    blkpattern /dev/vda stress "$TAG" "$START" "$BYTES" "$QD" "$CTRL" "$MAXSEC"
    echo "VHOSTCOMPAT: blk stress_exit=$?"
    dmesg | grep -iE 'error|fail|virtio|vda|timeout|timed out|reset' | sed 's/^/VHOSTCOMPAT: dmesg /'
    echo "VHOSTCOMPAT: dmesg_io_errors=$(dmesg | grep -ciE 'I/O error|blk_update_request|critical (medium|target|nexus)|Buffer I/O')" ;;
  *) echo "VHOSTCOMPAT: unknown mode $MODE" ;;
esac
sync
echo "VHOSTCOMPAT: status_end=$(cat $D/status)"
echo "VHOSTCOMPAT: done uptime=$(up)"
if [ "$HOLD" -gt 0 ] 2>/dev/null; then echo "VHOSTCOMPAT: hold seconds=$HOLD"; sleep "$HOLD"; fi
poweroff -f
INIT
chmod +x "$root/init"
initramfs_pack 1
echo "build-initramfs-blk: $out ($(stat -c %s "$out") bytes, kernel $kver, modules: $(tr '\n' ' ' < "$root/lib/modules/order"))"
