#!/usr/bin/env bash
# build-initramfs-input.sh - tiny busybox initramfs for the virtio-input interop guest (samples/Input).
#
# Usage: build-initramfs-input.sh OUTPUT.cpio.gz [KERNEL_VERSION]
#   KERNEL_VERSION defaults to the newest /lib/modules/<kver> that has virtio_input.
# Needs: busybox-static (/bin/busybox, or $BUSYBOX), cpio, gzip, xz (for .ko.xz modules).
#
# The guest /init loads virtio_input and evdev, waits for the evdev node of the virtio-input device named
# vhostcompat.name, prints its virtio status and features, opens the node, turns Num Lock on by writing an
# EV_LED event into it (the kernel then sends the LED state to the device on the statusq), prints every event it
# reads until the Enter key is released (or one read waits vhostcompat.timeout seconds), and powers off.
# Console lines (stable, parsed by the C# harness):
#   VHOSTCOMPAT: init uptime=<s> kernel=<kver> mode=input
#   VHOSTCOMPAT: insmod <module> failed
#   VHOSTCOMPAT: no-inputdev virtio=<devices> input=<names>
#   VHOSTCOMPAT: status=0x<hex> device=<id> uptime=<s>      (virtio status byte; 0x0f = DRIVER_OK)
#   VHOSTCOMPAT: features=<64 chars of 0/1, bit 0 first>
#   VHOSTCOMPAT: evdev node=<path> name=<name>
#   VHOSTCOMPAT: led numlock written=ok|failed
#   VHOSTCOMPAT: event hex=<48 hex digits: struct input_event, x86-64>
#   VHOSTCOMPAT: event-timeout after=<n> events
#   VHOSTCOMPAT: done uptime=<s>
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
initramfs_name=build-initramfs-input
. "$here/initramfs-lib.sh"
initramfs_setup "${1:?usage: build-initramfs-input.sh OUTPUT.cpio.gz [KERNEL_VERSION]}" "${2:-}" virtio_input modules.dep modules.builtin
initramfs_root vhostcompat-initramfs-input bin dev proc sys tmp run lib/modules -- \
  sh mount insmod cat echo sleep poweroff ls grep cut tr head od printf timeout uname dd
initramfs_modules load-order builtin-or-fail \
  virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_input evdev

cat > "$root/init" <<'INIT'
#!/bin/sh
# VhostCompat virtio-input interop guest. See build-initramfs-input.sh for the switches and output lines.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "VHOSTCOMPAT: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
finish() { say "done uptime=$(uptime_s)"; poweroff -f; sleep 10; }

NAME="VhostCompat keyboard" TIMEOUT=60
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vhostcompat.timeout=*) TIMEOUT=${arg#*=} ;;
  esac
done
say "init uptime=$(uptime_s) kernel=$(uname -r) mode=input"

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done

# The virtio device with id 18 (input) and the evdev node of the input device it registered.
VDEV= NODE=
i=0
while [ $i -lt 400 ]; do
  for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device" 2>/dev/null)" = "0x0012" ] && VDEV=$d
  done
  for e in /sys/class/input/event*; do
    [ "$(cat "$e/device/name" 2>/dev/null)" = "$NAME" ] && [ -e "/dev/input/${e##*/}" ] && NODE=/dev/input/${e##*/}
  done
  [ -n "$VDEV" ] && [ -n "$NODE" ] && break
  sleep 0.05
  i=$((i+1))
done
if [ -z "$VDEV" ] || [ -z "$NODE" ]; then
  say "no-inputdev virtio=$(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ') input=$(cat /sys/class/input/input*/name 2>/dev/null | tr '\n' ',')"
  finish
fi
st=$(cat "$VDEV/status")
say "status=0x$(printf '%02x' $((st))) device=$(cat "$VDEV/device") uptime=$(uptime_s)"
say "features=$(cat "$VDEV/features")"
say "evdev node=$NODE name=$NAME"

# Open the node first (evdev queues events only for open clients), then set the LED through it:
# struct input_event on x86-64 = 16 bytes of time, le16 type (EV_LED 0x11), le16 code (LED_NUML 0), le32 value (1).
exec 3< "$NODE"
if printf '\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\021\000\000\000\001\000\000\000' > "$NODE"; then
  say "led numlock written=ok"
else
  say "led numlock written=failed"
fi

# One read returns every queued event (up to 100): a reader spawning dd per event under TCG falls behind the
# device, and evdev then drops events (SYN_DROPPED) once its 64-event client buffer is full.
n=0
while :; do
  chunk=$(timeout "$TIMEOUT" dd bs=2400 count=1 <&3 2>/dev/null | od -An -v -tx1 -w24 | tr -d ' ')
  if [ -z "$chunk" ]; then
    say "event-timeout after=$n events"
    break
  fi
  end=
  for ev in $chunk; do
    n=$((n+1))
    say "event hex=$ev"
    # EV_KEY (0x0001) KEY_ENTER (0x001c) value 0: the Enter key released, the end of the typed text.
    case "$ev" in *01001c0000000000) end=1 ;; esac
  done
  [ -n "$end" ] && break
done
finish
INIT
chmod 755 "$root/init"
initramfs_pack 6
echo "build-initramfs-input: wrote $out ($(stat -c %s "$out") bytes) kernel=$kver modules=$(tr '\n' ' ' < "$root/lib/modules/load-order")"
