#!/usr/bin/env bash
# build-initramfs.sh - tiny busybox initramfs for the VhostCompat interop guests.
#
# Usage: build-initramfs.sh OUTPUT.cpio.gz [KERNEL_VERSION]
#   KERNEL_VERSION defaults to the newest /lib/modules/<kver> that has virtio_net.
# Needs: busybox-static (/bin/busybox), cpio, gzip, xz (for .ko.xz modules).
#
# The guest /init prints everything on the serial console with the prefix "VHOSTCOMPAT: " and
# is steered by kernel command-line switches (all optional):
#   vhostcompat.mode=status   (default) load virtio modules, print device status/features, power off
#   vhostcompat.mode=ping     as status, then ping vhostcompat.peer vhostcompat.count times, power off
#   vhostcompat.mode=loop     as status, then print counters every second forever (migration, soak)
#   vhostcompat.pingloop=1    loop mode: ping vhostcompat.peer once a second in the background for ever
#                             (busybox ping prints one line per reply) instead of the per-tick arping
#   vhostcompat.mode=serve    as status, then stay up (the kernel answers ARP and ping) until vhostcompat.count
#                             ICMP echo requests have arrived or vhostcompat.timeout seconds passed, power off
#   vhostcompat.ip=10.0.0.2/24  vhostcompat.peer=10.0.0.1  vhostcompat.count=3  vhostcompat.ifname=eth0
#   vhostcompat.wait=0        ping mode: retry ARP for the peer up to this many seconds before pinging
#                             (0: one 2 s attempt; use it when the peer may still be booting)
#   vhostcompat.timeout=120   serve mode: give up waiting after this many seconds
# Console lines (stable, parsed by the C# harness):
#   VHOSTCOMPAT: init uptime=<s> kernel=<kver> mode=<mode>
#   VHOSTCOMPAT: insmod <module> failed
#   VHOSTCOMPAT: no-netdev                      (no virtio-net interface appeared)
#   VHOSTCOMPAT: status=0x<hex> device=<id> uptime=<s>   (virtio status byte; 0x0f = DRIVER_OK)
#   VHOSTCOMPAT: features=<64 chars of 0/1, bit 0 first>
#   VHOSTCOMPAT: link mac=<mac> mtu=<n> carrier=<0|1> operstate=<s>
#   VHOSTCOMPAT: arp peer=<ip> attempts=<n> ok=<0|1>      (ping mode with vhostcompat.wait > 0)
#   VHOSTCOMPAT: ping transmitted=<n> received=<n>
#   VHOSTCOMPAT: serving ip=<ip/len>
#   VHOSTCOMPAT: served echo_requests=<n> echo_replies=<n> timed_out=<0|1>
#   64 bytes from <ip>: seq=<n> ttl=<n> time=<ms> ms   (busybox ping's own line per reply, pingloop=1)
#   VHOSTCOMPAT: pingloop peer=<ip> pid=<pid>
#   VHOSTCOMPAT: tick n=<n> tx_packets=<n> rx_packets=<n> status=0x<hex>
#   VHOSTCOMPAT: done uptime=<s>
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
initramfs_name=build-initramfs
. "$here/initramfs-lib.sh"
initramfs_setup "${1:?usage: build-initramfs.sh OUTPUT.cpio.gz [KERNEL_VERSION]}" "${2:-}" virtio_net modules.dep
initramfs_root vhostcompat-initramfs bin dev proc sys tmp run lib/modules -- \
  sh mount umount insmod ip cat echo sleep ping arping poweroff ls grep cut tr sed \
  head tail mkdir uname date seq awk
# Virtio modules in dependency order. Ones that are built in (=y) on this kernel are skipped.
initramfs_modules load-order builtin-or-fail \
  virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net

cat > "$root/init" <<'INIT'
#!/bin/sh
# VhostCompat interop guest. See build-initramfs.sh for the command-line switches and output lines.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
say() { echo "VHOSTCOMPAT: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# One counter of the "Icmp:" lines of /proc/net/snmp (header line, then value line).
icmp() { awk -v k="$1" '$1 == "Icmp:" { if (!h) { for (i = 2; i <= NF; i++) c[$i] = i; h = 1 } else { print $c[k]; exit } }' /proc/net/snmp; }
finish() { say "done uptime=$(uptime_s)"; poweroff -f; sleep 10; }

MODE=status IP=10.0.0.2/24 PEER=10.0.0.1 COUNT=3 IFNAME=eth0 WAIT=0 TIMEOUT=120 PINGLOOP=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vhostcompat.mode=*)   MODE=${arg#*=} ;;
    vhostcompat.ip=*)     IP=${arg#*=} ;;
    vhostcompat.peer=*)   PEER=${arg#*=} ;;
    vhostcompat.count=*)  COUNT=${arg#*=} ;;
    vhostcompat.ifname=*) IFNAME=${arg#*=} ;;
    vhostcompat.wait=*)   WAIT=${arg#*=} ;;
    vhostcompat.timeout=*) TIMEOUT=${arg#*=} ;;
    vhostcompat.pingloop=*) PINGLOOP=${arg#*=} ;;
  esac
done
say "init uptime=$(uptime_s) kernel=$(uname -r) mode=$MODE"

for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done

NET=/sys/class/net/$IFNAME
i=0
while [ ! -e "$NET/device/status" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ ! -e "$NET/device/status" ]; then
  say "no-netdev virtio=$(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ')"
  finish
fi
ip link set lo up
ip link set "$IFNAME" up
ip addr add "$IP" dev "$IFNAME"
DEV=$NET/device
# status is printed by the kernel as 0x%08x; print it as the plain status byte value.
st=$(cat "$DEV/status")
say "status=0x$(printf '%02x' $((st))) device=$(cat "$DEV/device") uptime=$(uptime_s)"
say "features=$(cat "$DEV/features")"
say "link mac=$(cat "$NET/address") mtu=$(cat "$NET/mtu") carrier=$(cat "$NET/carrier" 2>/dev/null) operstate=$(cat "$NET/operstate")"

case "$MODE" in
  ping)
    if [ "$WAIT" -gt 0 ]; then
      # The peer may still be booting: ARP requests until it answers or WAIT seconds have passed.
      n=0 ok=0 start=$(cut -d. -f1 /proc/uptime)
      while :; do
        n=$((n+1))
        if arping -f -c 1 -w 1 -I "$IFNAME" "$PEER" >/dev/null 2>&1; then ok=1; break; fi
        [ $(( $(cut -d. -f1 /proc/uptime) - start )) -lt "$WAIT" ] || break
        sleep 0.5
      done
      say "arp peer=$PEER attempts=$n ok=$ok"
    else
      arping -c 1 -w 2 -I "$IFNAME" "$PEER" >/dev/null 2>&1
    fi
    out=$(ping -c "$COUNT" -W 1 "$PEER" 2>&1)
    echo "$out"
    tx=$(echo "$out" | sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p')
    rx=$(echo "$out" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
    say "ping transmitted=${tx:-0} received=${rx:-0}"
    ;;
  serve)
    say "serving ip=$IP"
    t=0 out=1
    while [ $t -lt $((TIMEOUT*5)) ]; do
      if [ "$(icmp InEchos)" -ge "$COUNT" ]; then out=0; break; fi
      sleep 0.2
      t=$((t+1))
    done
    # The reply to the last request is already queued; give it time to leave before powering off.
    sleep 1
    say "served echo_requests=$(icmp InEchos) echo_replies=$(icmp OutEchoReps) timed_out=$out"
    ;;
  loop)
    if [ "$PINGLOOP" = 1 ]; then
      ping -i 1 "$PEER" &
      say "pingloop peer=$PEER pid=$!"
    fi
    n=0
    while true; do
      n=$((n+1))
      if [ "$PINGLOOP" = 1 ]; then
        sleep 1
      else
        arping -c 1 -w 1 -I "$IFNAME" "$PEER" >/dev/null 2>&1
      fi
      st=$(cat "$DEV/status")
      say "tick n=$n tx_packets=$(cat "$NET/statistics/tx_packets") rx_packets=$(cat "$NET/statistics/rx_packets") status=0x$(printf '%02x' $((st)))"
    done
    ;;
esac
say "tx_packets=$(cat "$NET/statistics/tx_packets") rx_packets=$(cat "$NET/statistics/rx_packets")"
finish
INIT
chmod 755 "$root/init"
initramfs_pack 6
echo "build-initramfs: wrote $out ($(stat -c %s "$out") bytes) kernel=$kver modules=$(tr '\n' ' ' < "$root/lib/modules/load-order")"
