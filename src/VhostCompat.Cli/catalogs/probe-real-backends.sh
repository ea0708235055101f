#!/usr/bin/env bash
# probe-real-backends.sh - (re)generates the shipped catalogs by probing the real backends on this machine:
#   dpdk-net.json                   DPDK testpmd's vhost PMD 22.11 (/usr/bin/dpdk-testpmd) and 24.11 (.ci/provision-peers.sh)
#   qemu-storage-daemon-blk.json    qemu-storage-daemon 7.2's vhost-user-blk export
# Each backend is started as the entry's source says, probed with `vhost-compat catalog add` (which refuses to change a
# published entry: catalogs only grow) and stopped. Run as root (the 24.11 chroot), then grow the locks (locks/):
#   dotnet build src/VhostCompat.Cli -c Release && src/VhostCompat.Cli/catalogs/probe-real-backends.sh
#   VHOSTCOMPAT_UPDATE_CATALOG_LOCKS=1 dotnet test tests/VhostCompat.Tests -c Release --filter ShippedCatalog
# Env: CLI (default: dotnet src/VhostCompat.Cli/bin/Release/net10.0/vhost-compat.dll), TESTPMD_2211, TESTPMD_2411, QSD.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
read -r -a CLI <<< "${CLI:-dotnet $ROOT/src/VhostCompat.Cli/bin/Release/net10.0/vhost-compat.dll}"
PEERS_ENV=${VHOSTCOMPAT_PEERS_ENV:-/opt/vhostcompat-peers/peers.env}
TESTPMD_2211=${TESTPMD_2211:-/usr/bin/dpdk-testpmd}
TESTPMD_2411=${TESTPMD_2411:-$(sed -n 's/^VHOSTCOMPAT_DPDK2411_TESTPMD=//p' "$PEERS_ENV" 2>/dev/null | tail -1)}
QSD=${QSD:-/usr/bin/qemu-storage-daemon}
# The 24.11 chroot sees the interop directory only: sockets live there.
INTEROP=${VHOSTCOMPAT_INTEROP_DIR:-${TMPDIR:-/tmp}/vhostcompat-interop}
mkdir -p "$INTEROP"
W=$(mktemp -d "$INTEROP/catalog-probe.XXXXXX")
PID=""
cleanup() { [ -z "$PID" ] || { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; }; rm -rf "$W" "/var/run/dpdk/vccat$$"; }
trap cleanup EXIT

wait_socket() { for _ in $(seq 1 300); do [ -S "$1" ] && return 0; kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done; echo "no socket $1" >&2; cat "$W/backend.log" >&2; exit 1; }
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

dpdk_version() { { "$1" --no-huge -m 64 --no-pci --file-prefix "vccat$$" -l 0 -v -- --help 2>&1 || true; } | sed -n "s/.*RTE Version: 'DPDK \([0-9.]*\)'.*/\1/p" | head -1 || true; }

# probe_dpdk TESTPMD ID DEVARGS [--latest]
probe_dpdk() {
  local testpmd=$1 id=$2 devargs=$3; shift 3
  local version; version=$(dpdk_version "$testpmd")
  rm -f "$W/vnet.sock"
  "$testpmd" --no-huge -m 512 --no-pci --file-prefix "vccat$$" -l 0,1 \
    --vdev "net_vhost0,iface=$W/vnet.sock${devargs:+,$devargs}" \
    -- --nb-cores=1 --total-num-mbufs=8192 --forward-mode=icmpecho --stats-period=3600 > "$W/backend.log" 2>&1 &
  PID=$!
  wait_socket "$W/vnet.sock"
  "${CLI[@]}" catalog add --catalog "$HERE/dpdk-net.json" --id "$id" --socket "$W/vnet.sock" --type net \
    --source-backend "dpdk-testpmd $version" --source-devargs "$devargs" "$@"
  stop
}

probe_dpdk "$TESTPMD_2211" org.dpdk.v22.11 ""
probe_dpdk "$TESTPMD_2211" org.dpdk.v22.11.tso "tso=1"
probe_dpdk "$TESTPMD_2411" org.dpdk.v24.11 "" --latest
probe_dpdk "$TESTPMD_2411" org.dpdk.v24.11.tso "tso=1"

# qemu-storage-daemon: a 64 MiB raw file, vhost-user-blk export with the entry's options after addr.path=SOCK.
QSD_VERSION=$("$QSD" --version | sed -n 's/^qemu-storage-daemon version \([0-9.]*\).*/\1/p')
QSD_DEVARGS="writable=on"
truncate -s 64M "$W/disk.img"
"$QSD" --blockdev "driver=file,node-name=disk,filename=$W/disk.img" \
  --export "type=vhost-user-blk,id=export,node-name=disk,addr.type=unix,addr.path=$W/blk.sock,$QSD_DEVARGS" > "$W/backend.log" 2>&1 &
PID=$!
wait_socket "$W/blk.sock"
"${CLI[@]}" catalog add --catalog "$HERE/qemu-storage-daemon-blk.json" --id org.qemu.storage-daemon.v7.2 --socket "$W/blk.sock" --type block \
  --source-backend "qemu-storage-daemon $QSD_VERSION" --source-devargs "$QSD_DEVARGS" --latest
stop

for c in dpdk-net qemu-storage-daemon-blk; do "${CLI[@]}" catalog show "$HERE/$c.json"; done
