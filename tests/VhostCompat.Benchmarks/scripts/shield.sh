#!/bin/bash
# shield.sh - the message-level hostile cases of HOSTILE-INPUTS (the benchmarks' `shield` mode) against DPDK 22.11
# testpmd's vhost PMD and qemu-storage-daemon 7.2, each directly and through `vhost-compat proxy`, then the table.
#
#   tests/VhostCompat.Benchmarks/scripts/shield.sh                       # all four configurations
#   CONFIGS="qsd-direct qsd-proxy" CASES=b9-short-memfd-ring,a3-size-ffffffff tests/VhostCompat.Benchmarks/scripts/shield.sh
# Env: CONFIGS="dpdk-direct dpdk-proxy qsd-direct qsd-proxy"  CASES=(all; comma list)  OUT=(a new temp directory)
#      CONFIGURATION=Release  NO_BUILD=1  TESTPMD=dpdk-testpmd  QSD=qemu-storage-daemon
# When a backend dies in a case, the case is recorded as a CRASH (with the backend's exit status), the backend is
# started again on the same socket (the proxy, if any, keeps running and reconnects) and the run resumes at the next case.
# Output: $OUT/<config>.txt (CASE lines), $OUT/<config>-*.log (the processes' own logs), the Markdown table on stdout.
# Only Unix sockets under $OUT; every process is started here and stopped by its PID.
set -uo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
CONFIGS=${CONFIGS:-dpdk-direct dpdk-proxy qsd-direct qsd-proxy}; CONFIGURATION=${CONFIGURATION:-Release}
TESTPMD=${TESTPMD:-dpdk-testpmd}; QSD=${QSD:-qemu-storage-daemon}
OUT=${OUT:-$(mktemp -d /tmp/vhostcompat-shield-XXXXXX)}
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" >&2; }
for c in $CONFIGS; do
  case $c in dpdk-direct|dpdk-proxy|qsd-direct|qsd-proxy) ;; *) echo "unknown configuration '$c'" >&2; exit 2 ;; esac
done

if [ -z "${NO_BUILD:-}" ]; then
  for p in src/VhostCompat.Cli tests/VhostCompat.Benchmarks; do
    log "build $p ($CONFIGURATION)"
    timeout 900 dotnet build "$ROOT/$p" -c "$CONFIGURATION" -nologo -v q > "$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; exit 1; }
  done
fi
BENCH=$ROOT/tests/VhostCompat.Benchmarks/bin/$CONFIGURATION/net10.0/VhostCompat.Benchmarks.dll
CLI=$ROOT/src/VhostCompat.Cli/bin/$CONFIGURATION/net10.0/vhost-compat.dll
ALL=$(dotnet "$BENCH" shield --list | paste -sd, -)
CASES=${CASES:-$ALL}

BE_PID=""; PX_PID=""
stop() { # stop PID: TERM, then KILL after 10 s
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && kill -KILL "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}
cleanup() { stop "$PX_PID"; PX_PID=""; stop "$BE_PID"; BE_PID=""; }
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_socket() { for _ in $(seq 1 300); do [ -S "$1" ] && return 0; sleep 0.1; done; return 1; }

# start_backend KIND SOCK LOG: started directly (no wrapper) so $! is the backend and `wait` gives its exit status.
start_backend() {
  rm -f "$2"
  if [ "$1" = dpdk ]; then
    "$TESTPMD" --no-huge -m 512 --no-pci --file-prefix "vcshield$$" -l 0,1 --vdev "net_vhost0,iface=$2,queues=1" \
      -- --nb-cores=1 --total-num-mbufs=8192 --forward-mode=io --stats-period=3600 >> "$3" 2>&1 &
  else
    [ -f "$OUT/disk.img" ] || truncate -s 64M "$OUT/disk.img"
    "$QSD" --blockdev "driver=file,node-name=f,filename=$OUT/disk.img" \
      --export "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$2,writable=on" >> "$3" 2>&1 &
  fi
  BE_PID=$!
  wait_socket "$2" || { echo "$1 did not create $2" >&2; tail -20 "$3" >&2; exit 1; }
}

start_proxy() { # start_proxy LISTEN BACKEND TYPE LOG
  rm -f "$1"
  dotnet "$CLI" proxy --listen "$1" --backend "$2" --type "$3" >> "$4" 2>&1 &
  PX_PID=$!
  wait_socket "$1" || { echo "the proxy did not create $1" >&2; tail -20 "$4" >&2; exit 1; }
}

remaining_after() { # the cases of $CASES after the last CASE line of file $1
  local last; last=$(grep '^CASE ' "$1" | tail -1 | awk '{print $2}')
  echo "$CASES" | tr , '\n' | awk -v last="$last" 'found { print } $0 == last { found = 1 }' | paste -sd, -
}

for cfg in $CONFIGS; do
  kind=${cfg%-*}; mode=${cfg#*-}; type=net; [ "$kind" = qsd ] && type=block
  be_sock=$OUT/$kind-$mode.sock; be_log=$OUT/$cfg-backend.log; txt=$OUT/$cfg.txt
  : > "$txt"
  start_backend "$kind" "$be_sock" "$be_log"
  sock=$be_sock; proxy_args=()
  if [ "$mode" = proxy ]; then
    sock=$OUT/$cfg-front.sock
    start_proxy "$sock" "$be_sock" "$type" "$OUT/$cfg-proxy.log"
    proxy_args=(--proxy-pid "$PX_PID")
  fi
  log "$cfg: backend pid $BE_PID${PX_PID:+, proxy pid $PX_PID}, socket $sock"
  todo=$CASES; restarts=0
  while [ -n "$todo" ] && [ $restarts -le 60 ]; do
    timeout -k 5 1800 dotnet "$BENCH" shield --socket "$sock" --pid "$BE_PID" "${proxy_args[@]}" --type "$type" --label "$cfg" --cases "$todo" | tee -a "$txt"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 3 ]; then
      wait "$BE_PID" 2>/dev/null; st=$?
      sig=""; [ "$st" -gt 128 ] && sig=" (signal $(kill -l $((st - 128)) 2>/dev/null))"
      echo "NOTE $(grep '^CASE ' "$txt" | tail -1 | awk '{print $2}'): backend exit status $st$sig" | tee -a "$txt"
      BE_PID=""; restarts=$((restarts + 1))
      start_backend "$kind" "$be_sock" "$be_log"
      [ "$mode" = proxy ] && proxy_args=(--proxy-pid "$PX_PID")
      log "$cfg: backend restarted, pid $BE_PID"
    elif [ "$rc" -eq 4 ]; then
      wait "$PX_PID" 2>/dev/null; st=$?
      echo "NOTE $(grep '^CASE ' "$txt" | tail -1 | awk '{print $2}'): proxy exit status $st" | tee -a "$txt"
      PX_PID=""; restarts=$((restarts + 1))
      start_proxy "$sock" "$be_sock" "$type" "$OUT/$cfg-proxy.log"
      proxy_args=(--proxy-pid "$PX_PID")
    elif [ "$rc" -ne 0 ]; then
      log "$cfg: shield exit code $rc"; echo "NOTE run stopped: shield exit code $rc" >> "$txt"; break
    fi
    [ "$rc" -eq 0 ] && break
    todo=$(remaining_after "$txt")
  done
  cleanup
done

log "output in $OUT"
args=(); for cfg in $CONFIGS; do args+=("$cfg=$OUT/$cfg.txt"); done
dotnet "$BENCH" shield --table "${args[@]}" | tee "$OUT/table.md"
grep -h '^NOTE' "$OUT"/*.txt 2>/dev/null
