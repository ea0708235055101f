#!/bin/bash
# compare-dpdk.sh - interleaved A/B throughput comparison of two vhost-user-net backends driven by the SAME
# DPDK virtio-user frontend (dpdk-testpmd, txonly, 64-byte frames, 1 queue pair, split ring):
#   dpdk   : DPDK testpmd vhost PMD backend   (--vdev net_vhost0,iface=SOCK, rxonly)
#   csharp : samples/Net in --sink mode       (VhostCompat.Samples.Net.dll --socket-path SOCK --sink)
# Each round runs every variant once, back to back (order alternates between rounds), so both see the same
# minutes of a shared, noisy machine. Per run it reports the frontend's accepted TX rate (TX-packets delta
# over the window, from testpmd's own "show port stats"), the backend's own counter where it has one, the
# CPU time (utime/stime from /proc/<pid>/stat) each side used in the window, and the CPU time nobody of
# ours used (foreign load, hypervisor steal). At the end: per-round ratios csharp/dpdk and their median.
#
# Env knobs:
#   ROUNDS=3 DURATION=10 (s measured) WARMUP=3 (s after "start" before measuring) PKT_LEN=64 BURST=32
#   VARIANTS="dpdk csharp"   any of: dpdk | dpdk-proxy (the same DPDK backend behind `vhost-compat proxy`: the
#                            frontend connects to the proxy, which forwards the control plane; its CPU is reported
#                            as proxy_cpu) | csharp (samples/Net --sink) | csharp-busy (--sink --busy-poll)
#                            | csharp-copy[-busy] (samples/Net without --sink: every frame is copied out and
#                            switched, like DPDK's vhost dequeue copies it into an mbuf)
#                            | sdk-sink[-busy] (tests/VhostCompat.Benchmarks sink-server: same sink, and it prints
#                            the managed bytes allocated per packet on the worker thread, "ALLOC ..." in be.log)
#                            | base | base-copy[-busy] (the same as csharp*, from the build in BASE_SAMPLE_DIR: an A/B
#                            of two SDK versions in one run, e.g. a worktree of the previous commit built in Release)
#   BASE_SAMPLE_DIR=""       directory holding another build's VhostCompat.Samples.Net.dll (for the base* variants)
#   QUEUES=1                 queue pairs (virtio-user queues=N, the vhost PMD queues=N, samples/Net --queue-pairs N); each
#                            testpmd still forwards on one core, which polls all of its queues
#   BE_CPU=0 FE_CPU=1        (whole backend process on BE_CPU, whole frontend process on FE_CPU, via taskset)
#   FE_DEVARGS=""            extra virtio-user devargs (e.g. packed_vq=1 / in_order=0)
#   BUILD=1                  dotnet build samples/Net -c Release first (0 = use the existing build)
#   SYSCALLS=0               1: count each side's write/read/epoll_wait/ioctl syscalls for 5 s of the window
#                            (perf stat tracepoints; the frontend's write()s are its kicks)
#   QUIET_WAIT=60 QUIET_MAX=0.3  before each run wait up to QUIET_WAIT s until other processes use < QUIET_MAX CPUs
#   REPO=<git root>  OUT=/tmp/vhc-bench/compare-dpdk/<timestamp>  PERF=0 (1: perf record the C# backend
#   for 5 s inside the window of the first non-dpdk run; needs perf; writes perf.data/perf-report.txt;
#   sets DOTNET_PerfMapEnabled=1 and DOTNET_EnableWriteXorExecute=0 for the .NET backends)
# Output: RUN lines, ROUND lines, SUMMARY; logs under $OUT/r<round>-<variant>/.
set -uo pipefail

ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; WARMUP=${WARMUP:-3}; PKT_LEN=${PKT_LEN:-64}; BURST=${BURST:-32}
VARIANTS=${VARIANTS:-"dpdk csharp"}; BE_CPU=${BE_CPU:-0}; FE_CPU=${FE_CPU:-1}; FE_DEVARGS=${FE_DEVARGS:-}
QUEUES=${QUEUES:-1}; BUILD=${BUILD:-1}; PERF=${PERF:-0}; SYSCALLS=${SYSCALLS:-0}; QUIET_WAIT=${QUIET_WAIT:-60}; QUIET_MAX=${QUIET_MAX:-0.3}
SCRIPT_DIR=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=${REPO:-$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel)}
SAMPLE_DLL=$REPO/samples/Net/bin/Release/net10.0/VhostCompat.Samples.Net.dll
CLI_DLL=$REPO/src/VhostCompat.Cli/bin/Release/net10.0/vhost-compat.dll
OUT=${OUT:-/tmp/vhc-bench/compare-dpdk/$(date -u +%Y%m%dT%H%M%SZ)}
T_LIMIT=$(( WARMUP + DURATION + 90 ))   # hard limit for every process we start
HZ=$(getconf CLK_TCK)
mkdir -p "$OUT"

log() { echo "[$(date -u +%T.%3N)] $*" >&2; }
die() { log "FATAL: $*"; exit 1; }
for t in dpdk-testpmd taskset timeout bc awk; do command -v "$t" >/dev/null || die "$t not found"; done

# ---------- process bookkeeping: only PIDs we started, only our DPDK prefixes ----------
declare -a STARTED=()          # timeout wrapper PIDs
declare -a CHILDREN=()         # the programs under them (same PID through taskset/stdbuf exec)
declare -a PREFIXES=()         # DPDK --file-prefix values we used
declare -a SOCKS=()
declare -A FIFO_FD=()          # testpmd name -> write fd of its stdin fifo
HAD_DPDK_RUNDIR=0; [ -d /var/run/dpdk ] && HAD_DPDK_RUNDIR=1

cleanup() {
  local p i alive
  local fd
  for n in "${!FIFO_FD[@]}"; do fd=${FIFO_FD[$n]}; exec {fd}>&- 2>/dev/null; done; FIFO_FD=()
  for p in "${STARTED[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for i in $(seq 1 50); do
    alive=0; for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  # KILLing a timeout wrapper would orphan its child: KILL the real programs too (only PIDs we recorded)
  for p in "${STARTED[@]}" "${CHILDREN[@]}"; do kill -0 "$p" 2>/dev/null && { log "KILL $p"; kill -KILL "$p" 2>/dev/null; }; done
  wait 2>/dev/null
  for p in "${PREFIXES[@]}"; do rm -rf "/var/run/dpdk/$p"; done
  [ "$HAD_DPDK_RUNDIR" = 0 ] && rmdir /var/run/dpdk 2>/dev/null
  for s in "${SOCKS[@]}"; do rm -f "$s"; done
  [ -n "${SOCK_DIR:-}" ] && rmdir "$SOCK_DIR" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap '' PIPE

# PID of the real program under "timeout ... taskset ... prog" (taskset execs, so it is timeout's child)
child_of() { local w=$1 c i; for i in $(seq 1 50); do c=$(ps -o pid= --ppid "$w" 2>/dev/null | head -1 | tr -d ' '); [ -n "$c" ] && { echo "$c"; return 0; }; sleep 0.1; done; echo "$w"; }
# (child_of runs in a $(...) subshell, so callers append the result to CHILDREN themselves)
# utime stime (ticks) of one process (all its threads)
ticks() { awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null || echo "0 0"; }
# aggregate "busy idle steal" jiffies of the whole machine
sys_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6, $9}' /proc/stat; }
wait_for() { # FILE REGEX TIMEOUT_S PID  -> 0 when a line matches
  local end=$(( $(date +%s) + $3 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    grep -qE "$2" "$1" 2>/dev/null && return 0
    kill -0 "$4" 2>/dev/null || { grep -qE "$2" "$1" 2>/dev/null; return; }
    sleep 0.1
  done
  return 1
}

# testpmd NAME DIR CPU PREFIX args... : interactive testpmd reading commands from a fifo; sets TP_W (wrapper) TP_P (pid)
testpmd() {
  local name=$1 dir=$2 cpu=$3 pfx=$4; shift 4
  local fifo=$dir/$name.fifo fd
  rm -f "$fifo"; mkfifo "$fifo"
  PREFIXES+=("$pfx")
  timeout -k 5 "$T_LIMIT" taskset -c "$cpu" stdbuf -oL -eL dpdk-testpmd --lcores "0@$cpu,1@$cpu" --file-prefix "$pfx" \
    --no-pci --no-huge -m 512 "$@" < "$fifo" > "$dir/$name.log" 2>&1 &
  TP_W=$!; STARTED+=("$TP_W")
  exec {fd}> "$fifo"; FIFO_FD[$name]=$fd
  TP_P=$(child_of "$TP_W"); CHILDREN+=("$TP_P")
  # stdbuf is exec'd by taskset and execs testpmd: the child PID is testpmd itself
}
tp() { echo "$2" >&"${FIFO_FD[$1]}"; }
tp_close() { local fd=${FIFO_FD[$1]:-}; [ -n "$fd" ] && exec {fd}>&-; unset "FIFO_FD[$1]"; }
# first value of "FIELD: N" in a testpmd log after line $3 (i.e. in the stats block printed after that line)
stat_after() { tail -n +"$(( $3 + 1 ))" "$2" | grep -oE "$1: +[0-9]+" | head -1 | grep -oE '[0-9]+$'; }
lines() { wc -l < "$1"; }
# show port stats on testpmd NAME and wait until the block is printed; echoes the log line count before it
show_stats() {
  local name=$1 logf=$2 before
  before=$(lines "$logf"); tp "$name" "show port stats all"
  local end=$(( $(date +%s) + 5 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    tail -n +"$(( before + 1 ))" "$logf" | grep -q 'Tx-pps' && break; sleep 0.05
  done
  echo "$before"
}
median() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END{if(NR==0)print "n/a"; else if(NR%2)print a[(NR+1)/2]; else printf "%.3f\n",(a[NR/2]+a[NR/2+1])/2}'; }

BENCH_PROJ=$REPO/tests/VhostCompat.Benchmarks
if [ "$BUILD" = 1 ] && [[ " $VARIANTS " == *" dpdk-proxy "* ]]; then
  timeout 600 dotnet build "$REPO/src/VhostCompat.Cli" -c Release -nologo -v q > "$OUT/build-cli.log" 2>&1 || { tail -20 "$OUT/build-cli.log"; die "CLI build failed"; }
fi
if [ "$BUILD" = 1 ]; then
  log "building samples/Net (Release)"
  timeout 600 dotnet build "$REPO/samples/Net" -c Release -nologo -v q > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; die "build failed"; }
  if [[ " $VARIANTS " == *" sdk-sink"* ]]; then
    timeout 600 dotnet build "$BENCH_PROJ" -c Release -nologo -v q >> "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; die "benchmark build failed"; }
  fi
fi
if [[ " $VARIANTS " == *" sdk-sink"* ]]; then
  mkdir -p "$OUT/bench-bin" && cp -a "$BENCH_PROJ/bin/Release/net10.0/." "$OUT/bench-bin/" || die "benchmarks not built"
  BENCH_DLL=$OUT/bench-bin/VhostCompat.Benchmarks.dll
fi
[ -f "$SAMPLE_DLL" ] || die "$SAMPLE_DLL missing (BUILD=1)"
# Run a private copy: other people's builds of samples/Net during the measurement must not swap the DLLs under us.
mkdir -p "$OUT/sample-bin" && cp -a "$(dirname "$SAMPLE_DLL")/." "$OUT/sample-bin/" || die "cannot copy the sample build"
SAMPLE_DLL=$OUT/sample-bin/$(basename "$SAMPLE_DLL")
BASE_DLL=""
if [[ " $VARIANTS " == *" base"* ]]; then
  [ -f "${BASE_SAMPLE_DIR:-}/VhostCompat.Samples.Net.dll" ] || die "the base* variants need BASE_SAMPLE_DIR with VhostCompat.Samples.Net.dll"
  mkdir -p "$OUT/base-bin" && cp -a "$BASE_SAMPLE_DIR/." "$OUT/base-bin/" || die "cannot copy the base build"
  BASE_DLL=$OUT/base-bin/VhostCompat.Samples.Net.dll
fi
# Short socket paths: the SDK binds "<path>.<pid>.<guid>.tmp" first, and AF_UNIX paths are limited to 107 bytes.
SOCK_DIR=$(mktemp -d /tmp/vhc-cmp.XXXXXX)

# CPUs busy on the whole machine over 1 s (call it while none of our processes run)
machine_busy() { local a b; a=($(sys_ticks)); sleep 1; b=($(sys_ticks)); echo "scale=2; (${b[0]} - ${a[0]}) / $HZ" | bc -l; }
# Wait up to QUIET_WAIT s for other people's load to drop below QUIET_MAX CPUs (a 2-vCPU box is shared).
wait_quiet() {
  local end=$(( $(date +%s) + QUIET_WAIT )) b
  while :; do
    b=$(machine_busy)
    [ "$(echo "$b < $QUIET_MAX" | bc -l)" = 1 ] && { QUIET_SEEN=$b; return 0; }
    [ "$(date +%s)" -ge "$end" ] && { QUIET_SEEN=$b; log "machine still busy (${b} CPUs used by others) after ${QUIET_WAIT}s - measuring anyway"; return 1; }
    sleep 2
  done
}

declare -A MPPS=() BE_CPUS=() FE_CPUS=() NOISY=() BE_NS=()
run_one() { # ROUND VARIANT
  local round=$1 variant=$2 dir=$OUT/r$1-$2 sock be_w be_p fe_pfx be_pfx px_w="" px_p=""
  mkdir -p "$dir"; sock=$SOCK_DIR/$round-$variant.sock; SOCKS+=("$sock"); rm -f "$sock"
  fe_pfx=vhcfe$$r$round$variant; fe_pfx=${fe_pfx//-/}; be_pfx=vhcbe$$r$round; be_pfx=${be_pfx//-/}
  # ---- backend ----
  case $variant in
    dpdk|dpdk-proxy)
      local bsock=$sock; [ "$variant" = dpdk-proxy ] && bsock=$sock.be && SOCKS+=("$bsock") && rm -f "$bsock"
      testpmd be "$dir" "$BE_CPU" "$be_pfx" --vdev "net_vhost0,iface=$bsock,queues=$QUEUES" \
        -- -i --nb-cores=1 --rxq="$QUEUES" --txq="$QUEUES" --total-num-mbufs=32768 --burst="$BURST" --forward-mode=rxonly
      be_w=$TP_W; be_p=$TP_P
      if [ "$variant" = dpdk-proxy ]; then
        local end=$(( $(date +%s) + 30 ))
        until [ -S "$bsock" ]; do [ "$(date +%s)" -ge "$end" ] && die "$variant: backend socket never appeared"; sleep 0.1; done
        timeout -k 5 "$T_LIMIT" taskset -c "$BE_CPU" dotnet "$CLI_DLL" proxy --listen "$sock" --backend "$bsock" > "$dir/proxy.log" 2>&1 &
        px_w=$!; STARTED+=("$px_w"); px_p=$(child_of "$px_w"); CHILDREN+=("$px_p")
      fi ;;
    csharp*|base*|sdk-sink*)
      local cmd=() dll
      case $variant in
        csharp*|base*) dll=$SAMPLE_DLL; [[ $variant == base* ]] && dll=$BASE_DLL
                 cmd=(dotnet "$dll" --socket-path "$sock" --log-level Warning --queue-pairs "$QUEUES")
                 [[ $variant == *-copy* ]] || cmd+=(--sink) ;;
        sdk-sink*) cmd=(dotnet "$BENCH_DLL" sink-server --socket-path "$sock" --warmup "$WARMUP" --seconds $(( DURATION + 60 ))) ;;
      esac
      [[ $variant == *-busy ]] && cmd+=(--busy-poll)
      # PERF=1: the runtime writes /tmp/perf-<pid>.map so perf can name JIT-compiled frames (W^X double
      # mapping off, otherwise samples land in "memfd:doublemapper" and cannot be attributed)
      [ "$PERF" = 1 ] && export DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0
      timeout -k 5 "$T_LIMIT" taskset -c "$BE_CPU" "${cmd[@]}" > "$dir/be.log" 2>&1 &
      be_w=$!; STARTED+=("$be_w"); be_p=$(child_of "$be_w"); CHILDREN+=("$be_p") ;;
    *) die "unknown variant $variant" ;;
  esac
  local end=$(( $(date +%s) + 30 ))
  until [ -S "$sock" ]; do [ "$(date +%s)" -ge "$end" ] && { tail -20 "$dir/be.log"; die "$variant: socket never appeared"; }; sleep 0.1; done
  # ---- frontend ----
  testpmd fe "$dir" "$FE_CPU" "$fe_pfx" --vdev "net_virtio_user0,path=$sock,queues=$QUEUES${FE_DEVARGS:+,$FE_DEVARGS}" \
    -- -i --nb-cores=1 --rxq="$QUEUES" --txq="$QUEUES" --total-num-mbufs=32768 --burst="$BURST" --forward-mode=txonly
  local fe_w=$TP_W fe_p=$TP_P
  wait_for "$dir/fe.log" 'testpmd> ' 60 "$fe_p" || { tail -30 "$dir/fe.log"; die "$variant: frontend never reached its prompt"; }
  grep -qE 'Failed to (start|set)|Too many memory regions' "$dir/fe.log" && { grep -E 'Failed|Too many' "$dir/fe.log"; die "$variant: frontend error"; }
  tp fe "set txpkts $PKT_LEN"
  [[ $variant == dpdk* ]] && tp be start
  tp fe start
  sleep "$WARMUP"
  # ---- measured window ----
  local s0 b0 f0 be_l0 fe_l0 t0 s1 b1 f1 be_l1 fe_l1 t1
  [[ $variant == dpdk* ]] && be_l0=$(show_stats be "$dir/be.log")
  fe_l0=$(show_stats fe "$dir/fe.log")
  t0=$(date +%s.%N); s0=$(sys_ticks); b0=$(ticks "$be_p"); f0=$(ticks "$fe_p"); x0=$(ticks "${px_p:-0}")
  if [ "$PERF" = 1 ] && [[ $variant != dpdk* ]] && [ ! -f "$OUT/perf.data" ] && command -v perf >/dev/null; then
    ( sleep 2; timeout -k 2 20 perf record -F 999 -g -p "$be_p" -o "$OUT/perf.data" -- sleep 5 > "$OUT/perf-record.log" 2>&1 ) &
  fi
  if [ "$SYSCALLS" = 1 ] && command -v perf >/dev/null; then
    # count syscalls of each side for 5 s inside the window (kicks are eventfd write()s by the frontend)
    for side in be fe; do
      local sp=$be_p; [ $side = fe ] && sp=$fe_p
      ( sleep 1; timeout -k 2 15 perf stat -x, -e syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_ioctl \
          -p "$sp" -o "$dir/$side-syscalls.csv" -- sleep 5 > /dev/null 2>&1 ) &
    done
  fi
  sleep "$DURATION"
  fe_l1=$(show_stats fe "$dir/fe.log")
  t1=$(date +%s.%N); s1=$(sys_ticks); b1=$(ticks "$be_p"); f1=$(ticks "$fe_p"); x1=$(ticks "${px_p:-0}")
  [[ $variant == dpdk* ]] && be_l1=$(show_stats be "$dir/be.log")
  [[ $variant != dpdk* ]] && for tk in /proc/"$be_p"/task/*; do
    echo "$(cat "$tk/comm" 2>/dev/null)|$(awk '{print $14+$15}' "$tk/stat" 2>/dev/null)"; done | sort -t'|' -k2 -n -r | head -5 > "$dir/be-threads.txt"
  # ---- figures ----
  local win tx0 tx1 mpps be_rx0 be_rx1 be_mpps="-" be_u be_s fe_u fe_s be_cpu fe_cpu busy idle steal foreign fe_drop
  win=$(echo "$t1 - $t0" | bc -l)
  tx0=$(stat_after TX-packets "$dir/fe.log" "$fe_l0"); tx1=$(stat_after TX-packets "$dir/fe.log" "$fe_l1")
  mpps=$(echo "scale=3; ($tx1 - $tx0) / $win / 1000000" | bc -l)
  if [[ $variant == dpdk* ]]; then
    be_rx0=$(stat_after RX-packets "$dir/be.log" "$be_l0"); be_rx1=$(stat_after RX-packets "$dir/be.log" "$be_l1")
    [ -n "$be_rx0" ] && [ -n "$be_rx1" ] && be_mpps=$(echo "scale=3; ($be_rx1 - $be_rx0) / $win / 1000000" | bc -l)
  fi
  read -r bu0 bs0 <<< "$b0"; read -r bu1 bs1 <<< "$b1"; read -r fu0 fs0 <<< "$f0"; read -r fu1 fs1 <<< "$f1"
  be_u=$(echo "scale=2; ($bu1 - $bu0) / $HZ / $win" | bc -l); be_s=$(echo "scale=2; ($bs1 - $bs0) / $HZ / $win" | bc -l)
  fe_u=$(echo "scale=2; ($fu1 - $fu0) / $HZ / $win" | bc -l); fe_s=$(echo "scale=2; ($fs1 - $fs0) / $HZ / $win" | bc -l)
  be_cpu=$(echo "$be_u + $be_s" | bc -l); fe_cpu=$(echo "$fe_u + $fe_s" | bc -l)
  local px="" xu0 xs0 xu1 xs1 px_cpu=0
  if [ -n "$px_p" ]; then
    read -r xu0 xs0 <<< "$x0"; read -r xu1 xs1 <<< "$x1"
    px_cpu=$(echo "scale=3; ($xu1 + $xs1 - $xu0 - $xs0) / $HZ / $win" | bc -l); px=" proxy_cpu=$px_cpu proxy_ticks_in_window=$(( xu1 + xs1 - xu0 - xs0 ))"
  fi
  read -r busy0 idle0 st0 <<< "$s0"; read -r busy1 idle1 st1 <<< "$s1"
  # machine-wide busy CPUs minus what our two processes used = somebody else's load
  foreign=$(echo "scale=2; ($busy1 - $busy0) / $HZ / $win - $be_cpu - $fe_cpu - $px_cpu" | bc -l)
  steal=$(echo "scale=2; ($st1 - $st0) / $HZ / $win" | bc -l)
  # ---- stop: frontend first (clean virtio-user shutdown), then the backend ----
  tp fe stop; tp fe quit; tp_close fe
  for i in $(seq 1 100); do kill -0 "$fe_w" 2>/dev/null || break; sleep 0.1; done
  if [[ $variant == dpdk* ]]; then tp be stop; tp be quit; tp_close be; else kill -TERM "$be_p" 2>/dev/null; fi
  for i in $(seq 1 100); do kill -0 "$be_w" 2>/dev/null || break; sleep 0.1; done
  [ -n "$px_p" ] && { kill -TERM "$px_p" 2>/dev/null; wait "$px_w" 2>/dev/null; }
  kill -TERM "$fe_w" "$be_w" 2>/dev/null; wait "$fe_w" "$be_w" 2>/dev/null
  rm -rf "/var/run/dpdk/$fe_pfx" "/var/run/dpdk/$be_pfx"; rm -f "$sock"
  fe_drop=$(grep -oE 'TX-dropped: +[0-9]+' "$dir/fe.log" | tail -1 | grep -oE '[0-9]+$')
  local be_total="-" alloc=""
  [[ $variant == csharp* || $variant == base* ]] && be_total=$(grep -oE 'tx_packets=[0-9]+' "$dir/be.log" | tail -1 | cut -d= -f2)
  if [[ $variant == sdk-sink* ]]; then
    be_total=$(grep -oE 'packets=[0-9]+' "$dir/be.log" | tail -1 | cut -d= -f2)
    alloc=" worker_bytes_per_packet=$(grep -oE 'worker_bytes_per_packet=[0-9.]+' "$dir/be.log" | tail -1 | cut -d= -f2) gen0_gcs=$(grep -oE 'gen0_gcs=[0-9]+' "$dir/be.log" | tail -1 | cut -d= -f2)"
  fi
  [ -z "$tx0" ] || [ -z "$tx1" ] && mpps=ERR
  # CPU nanoseconds each side spent per packet accepted in the window (robust-ish to CPU starvation; a
  # busy-polling side also counts the time it spun on an empty/full ring)
  local be_ns="-" fe_ns="-"
  if [ "$mpps" != ERR ] && [ "$(echo "$mpps > 0" | bc -l)" = 1 ]; then
    be_ns=$(printf %.0f "$(echo "$be_cpu * 1000 / $mpps" | bc -l)"); fe_ns=$(printf %.0f "$(echo "$fe_cpu * 1000 / $mpps" | bc -l)")
  fi
  local noisy=""; [ "$(echo "$foreign > $QUIET_MAX" | bc -l)" = 1 ] && noisy=" NOISY"
  NOISY[$round,$variant]=$noisy
  local sc=""
  for side in be fe; do
    [ -s "$dir/$side-syscalls.csv" ] && sc+=" ${side}_syscalls_per_s=$(awk -F, '/syscalls:sys_enter_/{split($3,a,"sys_enter_"); printf "%s%s:%d", (n++?",":""), a[2], $1/5}' "$dir/$side-syscalls.csv")"
  done
  echo "RUN$noisy round=$round variant=$variant fe_tx_mpps=$mpps be_rx_mpps=$be_mpps window_s=$(printf %.2f "$win") be_cpu=$be_cpu(u$be_u/s$be_s) fe_cpu=$fe_cpu(u$fe_u/s$fe_s) be_cpu_ns_per_pkt=$be_ns fe_cpu_ns_per_pkt=$fe_ns foreign_cpu=$foreign steal_cpu=$steal fe_tx_dropped_total=${fe_drop:-?} be_total_packets=${be_total:-?}$px$alloc$sc" | tee -a "$OUT/results.txt"
  [[ $variant != dpdk* ]] && [ -s "$dir/be-threads.txt" ] && sed 's/^/    thread ticks total: /' "$dir/be-threads.txt" >&2
  MPPS[$round,$variant]=$mpps; BE_CPUS[$round,$variant]=$be_cpu; FE_CPUS[$round,$variant]=$fe_cpu; BE_NS[$round,$variant]=$be_ns
  sleep 1
}

log "output in $OUT; rounds=$ROUNDS variants='$VARIANTS' queues=$QUEUES window=${DURATION}s warmup=${WARMUP}s len=$PKT_LEN be_cpu=$BE_CPU fe_cpu=$FE_CPU"
echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) dpdk=$(dpkg-query -W -f='${Version}' dpdk 2>/dev/null) dotnet=$(dotnet --version)" | tee "$OUT/results.txt"
read -r -a VLIST <<< "$VARIANTS"
for round in $(seq 1 "$ROUNDS"); do
  order=("${VLIST[@]}")
  if [ $(( round % 2 )) = 0 ]; then order=(); for (( i=${#VLIST[@]}-1; i>=0; i-- )); do order+=("${VLIST[$i]}"); done; fi
  for v in "${order[@]}"; do
    wait_quiet; log "round $round/$ROUNDS: $v (foreign load before start: $QUIET_SEEN CPUs)"; run_one "$round" "$v"
  done
  line="ROUND $round"
  for v in "${VLIST[@]}"; do line+=" $v=${MPPS[$round,$v]}${NOISY[$round,$v]:+(noisy)}"; done
  for v in "${VLIST[@]}"; do
    [ "$v" = dpdk ] && continue
    r=$(echo "scale=3; ${MPPS[$round,$v]} / ${MPPS[$round,dpdk]}" | bc -l 2>/dev/null); line+=" ratio_${v}=${r:-?}"
    r=$(echo "scale=3; ${BE_NS[$round,$v]} / ${BE_NS[$round,dpdk]}" | bc -l 2>/dev/null); line+=" ns_ratio_${v}=${r:-?}"
  done
  echo "$line" | tee -a "$OUT/results.txt"
done
sum="SUMMARY rounds=$ROUNDS pkt_len=$PKT_LEN queues=$QUEUES"
for v in "${VLIST[@]}"; do
  vals=(); b=(); f=(); for round in $(seq 1 "$ROUNDS"); do vals+=("${MPPS[$round,$v]}"); b+=("${BE_CPUS[$round,$v]}"); f+=("${FE_CPUS[$round,$v]}"); done
  sum+=" | $v: median_mpps=$(median "${vals[@]}") (${vals[*]}) median_be_cpu=$(median "${b[@]}") median_fe_cpu=$(median "${f[@]}")"
done
for v in "${VLIST[@]}"; do
  [ "$v" = dpdk ] && continue
  ratios=(); for round in $(seq 1 "$ROUNDS"); do ratios+=("$(echo "scale=3; ${MPPS[$round,$v]} / ${MPPS[$round,dpdk]}" | bc -l 2>/dev/null)"); done
  clean=(); for round in $(seq 1 "$ROUNDS"); do [ -z "${NOISY[$round,$v]}${NOISY[$round,dpdk]}" ] && clean+=("$(echo "scale=3; ${MPPS[$round,$v]} / ${MPPS[$round,dpdk]}" | bc -l 2>/dev/null)"); done
  sum+=" | median_ratio_${v}/dpdk=$(median "${ratios[@]}") (${ratios[*]}) clean_rounds_median=$(median "${clean[@]}") (${clean[*]:-none})"
  # backend CPU per packet against DPDK's in the same round (the figure that does not depend on who was the bottleneck)
  ns=(); for round in $(seq 1 "$ROUNDS"); do ns+=("$(echo "scale=3; ${BE_NS[$round,$v]} / ${BE_NS[$round,dpdk]}" | bc -l 2>/dev/null)"); done
  sum+=" median_be_ns_ratio_${v}/dpdk=$(median "${ns[@]}") (${ns[*]})"
done
echo "$sum" | tee -a "$OUT/results.txt"
if [ -f "$OUT/perf.data" ]; then
  { perf report -i "$OUT/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -40
    echo; echo "# by thread"; perf report -i "$OUT/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -10
  } > "$OUT/perf-report.txt"
  log "perf profile of the C# backend: $OUT/perf-report.txt"
fi
