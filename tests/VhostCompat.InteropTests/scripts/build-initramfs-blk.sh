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
set -euo pipefail

out=${1:?usage: build-initramfs-blk.sh OUTPUT.cpio.gz [KERNEL_VERSION]}
kver=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$kver" ]; then
  for d in $(ls -1 /lib/modules 2>/dev/null | sort -V -r); do
    if grep -qE '(^|/)virtio_blk\.ko' "/lib/modules/$d/modules.dep" 2>/dev/null; then kver=$d; break; fi
  done
fi
[ -n "$kver" ] || { echo "build-initramfs-blk: no /lib/modules/<kver> with virtio_blk (install linux-image-amd64)" >&2; exit 2; }
moddir=/lib/modules/$kver
[ -r "$moddir/modules.dep" ] || { echo "build-initramfs-blk: $moddir/modules.dep missing" >&2; exit 2; }
busybox=${BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "build-initramfs-blk: $busybox missing (install busybox-static)" >&2; exit 2; }
if LC_ALL=C ldd "$busybox" >/dev/null 2>&1; then
  echo "build-initramfs-blk: $busybox is dynamically linked (install busybox-static)" >&2; exit 2
fi
command -v cpio >/dev/null || { echo "build-initramfs-blk: cpio missing" >&2; exit 2; }
command -v gcc >/dev/null || { echo "build-initramfs-blk: gcc missing (needed for blkpattern.c)" >&2; exit 2; }

root=$(mktemp -d "${TMPDIR:-/tmp}/vhostcompat-initramfs-blk.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$root/bin/busybox"
for applet in sh mount insmod cat echo sleep ls grep cut tr sed wc head mkdir uname poweroff sync dmesg; do
  ln -s busybox "$root/bin/$applet"
done
gcc -O2 -static -Wall -o "$root/bin/blkpattern" "$here/blkpattern.c"

# virtio core + PCI transport + virtio_blk, in dependency order; modules built into the kernel are skipped.
: > "$root/lib/modules/order"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  rel=$(grep -E "(^|/)$m\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -1 | cut -d: -f1 || true)
  [ -n "$rel" ] || continue
  case "$rel" in
    *.ko) cp "$moddir/$rel" "$root/lib/modules/$m.ko" ;;
    *.ko.xz) xz -dc "$moddir/$rel" > "$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -dcq "$moddir/$rel" > "$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$moddir/$rel" > "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >> "$root/lib/modules/order"
done

cat > "$root/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev 2>/dev/null
up() { cut -d' ' -f1 /proc/uptime; }
MODE=write; TAG=none; OFFS=0; START=8388608; BYTES=4194304; QD=16; CTRL=1048576; MAXSEC=300
for w in $(cat /proc/cmdline); do case "$w" in
  vhostcompat.mode=*) MODE=${w#*=};; vhostcompat.tag=*) TAG=${w#*=};; vhostcompat.offsets=*) OFFS=${w#*=};;
  vhostcompat.start=*) START=${w#*=};; vhostcompat.bytes=*) BYTES=${w#*=};; vhostcompat.qd=*) QD=${w#*=};;
  vhostcompat.ctrl=*) CTRL=${w#*=};; vhostcompat.maxsec=*) MAXSEC=${w#*=};;
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
poweroff -f
INIT
chmod +x "$root/init"
tmp="$out.tmp.$$"
( cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 ) > "$tmp"
mv "$tmp" "$out"
echo "build-initramfs-blk: $out ($(stat -c %s "$out") bytes, kernel $kver, modules: $(tr '\n' ' ' < "$root/lib/modules/order"))"
