#!/usr/bin/env bash
# build-initramfs-rng.sh - tiny busybox initramfs for the virtio-rng interop guest (samples/Rng).
#
# Usage: build-initramfs-rng.sh OUTPUT.cpio.gz [KERNEL_VERSION]
#   KERNEL_VERSION defaults to the newest /lib/modules/<kver> that has virtio-rng.
# Needs: busybox-static (/bin/busybox, or $BUSYBOX), cpio, gzip, xz (for .ko.xz modules).
#
# The guest /init loads the virtio and hw_random modules, waits for the virtio-rng device, prints its
# status and features, reads vhostcompat.count bytes from /dev/hwrng vhostcompat.reads times, and powers off.
# Kernel command-line switches (optional):
#   vhostcompat.count=64   bytes per read of /dev/hwrng (1..4096)
#   vhostcompat.reads=3    number of reads
#   vhostcompat.timeout=30 seconds one read may take before it is abandoned
# Console lines (stable, parsed by the C# harness):
#   VHOSTCOMPAT: init uptime=<s> kernel=<kver> mode=rng
#   VHOSTCOMPAT: insmod <module> failed
#   VHOSTCOMPAT: no-rngdev virtio=<devices>          (no virtio device with id 4 appeared)
#   VHOSTCOMPAT: status=0x<hex> device=<id> uptime=<s> (virtio status byte; 0x0f = DRIVER_OK)
#   VHOSTCOMPAT: features=<64 chars of 0/1, bit 0 first>
#   VHOSTCOMPAT: hwrng current=<name> available=<names>
#   VHOSTCOMPAT: rng read=<n> bytes=<count> hex=<hex digits> uptime=<s>
#   VHOSTCOMPAT: done uptime=<s>
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
initramfs_name=build-initramfs-rng
. "$here/initramfs-lib.sh"
initramfs_setup "${1:?usage: build-initramfs-rng.sh OUTPUT.cpio.gz [KERNEL_VERSION]}" "${2:-}" virtio-rng modules.dep modules.builtin
initramfs_root vhostcompat-initramfs-rng bin dev proc sys tmp run lib/modules -- \
  sh mount insmod cat echo sleep poweroff ls grep cut tr head od printf timeout uname
# Modules in dependency order; ones built in (=y) on this kernel are skipped (Debian 12: rng-core is built in).
initramfs_modules load-order builtin-or-fail \
  virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci rng-core virtio-rng

cat > "$root/init" <<'INIT'
#!/bin/sh
# VhostCompat virtio-rng interop guest. See build-initramfs-rng.sh for the switches and output lines.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "VHOSTCOMPAT: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
finish() { say "done uptime=$(uptime_s)"; poweroff -f; sleep 10; }

COUNT=64 READS=3 TIMEOUT=30
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vhostcompat.count=*)   COUNT=${arg#*=} ;;
    vhostcompat.reads=*)   READS=${arg#*=} ;;
    vhostcompat.timeout=*) TIMEOUT=${arg#*=} ;;
  esac
done
say "init uptime=$(uptime_s) kernel=$(uname -r) mode=rng"

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done

# The virtio device with id 4 (entropy source) and the hw_random node it registers.
DEV=
i=0
while [ $i -lt 200 ]; do
  for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = "0x0004" ] && [ -n "$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null | grep virtio)" ] && DEV=$d
  done
  [ -n "$DEV" ] && [ -e /dev/hwrng ] && break
  sleep 0.05
  i=$((i+1))
done
if [ -z "$DEV" ]; then
  say "no-rngdev virtio=$(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ') hwrng=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"
  finish
fi
st=$(cat "$DEV/status")
say "status=0x$(printf '%02x' $((st))) device=$(cat "$DEV/device") uptime=$(uptime_s)"
say "features=$(cat "$DEV/features")"
say "hwrng current=$(cat /sys/class/misc/hw_random/rng_current) available=$(cat /sys/class/misc/hw_random/rng_available | tr ' ' ',')"

n=0
while [ $n -lt "$READS" ]; do
  n=$((n+1))
  hex=$(timeout "$TIMEOUT" head -c "$COUNT" /dev/hwrng | od -An -v -tx1 | tr -d ' \n')
  say "rng read=$n bytes=$(( ${#hex} / 2 )) hex=$hex uptime=$(uptime_s)"
done
finish
INIT
chmod 755 "$root/init"
initramfs_pack 6
echo "build-initramfs-rng: wrote $out ($(stat -c %s "$out") bytes) kernel=$kver modules=$(tr '\n' ' ' < "$root/lib/modules/load-order")"
