#!/usr/bin/env bash
# run-all.sh - the performance regression guard: every benchmark and comparison script with short settings, one
# command, their last results (command, date, commit, machine noise) in one file.
#
#   tests/VhostCompat.Benchmarks/scripts/run-all.sh                 # everything (~15-25 min on the 2-core box; root)
#   SKIP="dpdk blk aot" tests/VhostCompat.Benchmarks/scripts/run-all.sh   # only the in-process benchmarks
#
# Parts (SKIP takes their names):
#   handshake  BenchmarkDotNet HandshakeBenchmarks (connect → all rings started, 2/32 queues, REPLY_ACK or pipelined;
#              in-process job, 40 iterations) and the plain `handshake` loop (CPU time, context switches)
#   ring       BenchmarkDotNet SplitRingBenchmarks + WalkerExperimentBenchmarks (ShortRun, in-process),
#              `walker-ab 9` pinned to cpu 0, `alloc-check 2000000` (fails the run if a steady-state byte is allocated)
#   dpdk       compare-dpdk.sh ROUNDS=2 DURATION=5 VARIANTS="dpdk csharp csharp-copy" (backend CPU ns per packet vs
#              DPDK's vhost PMD in the same minutes)
#   blk        compare-qsd-blk.sh ROUNDS=1 (samples/Block vs qemu-storage-daemon, IOPS and CPU per request)
#   aot        publish-aot.sh ROUNDS=3 (NativeAOT publish of the samples and the tool, warnings, smoke, start-up)
# The results file ($RESULTS, default tests/VhostCompat.Benchmarks/results/latest.md) gets, per part: the command,
# start/end time, the load average and the foreign CPU (busy CPUs of the whole machine over the part, /proc/stat;
# ours included - a part that runs alone on the box shows its own use), and the part's summary lines. Exit code:
# non-zero if a part failed (a failed part does not stop the others). Nothing here is a timed assertion: a slower
# figure never fails the run; compare the file with the previous commit's (`git diff`).
set -uo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
SKIP=${SKIP:-}
OUT=${OUT:-/tmp/vhostcompat-run-all}
RESULTS=${RESULTS:-$ROOT/tests/VhostCompat.Benchmarks/results/latest.md}
BENCH=$ROOT/tests/VhostCompat.Benchmarks/bin/Release/net10.0/VhostCompat.Benchmarks.dll
mkdir -p "$OUT" "$(dirname "$RESULTS")"
rm -rf "$OUT"/*
STATUS=0

stat_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
{
  echo "# run-all.sh results"
  echo
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(dotnet --version 2>/dev/null | sed 's/^/.NET SDK /')"
  echo "Run: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests samples || echo ' (+ uncommitted changes)'), SKIP='${SKIP}'"
  echo "perf stat -e instructions: $(perf stat -x, -e instructions -- true 2>&1 | grep -q 'not supported' && echo 'not supported on this VM (no PMU), so no instruction counts' || echo 'available')"
  echo
} > "$RESULTS"

part() { # name, summary-extractor function, command...
  local name=$1 extract=$2; shift 2
  if [[ " $SKIP " == *" $name "* ]]; then echo "## $name: skipped" >> "$RESULTS"; echo >> "$RESULTS"; return; fi
  local log=$OUT/$name.log b0 t0 b1 t1 rc s0 l0
  read -r b0 t0 < <(stat_busy); s0=$(date -u +%T); l0=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "[run-all $(date -u +%T)] $name: $*"
  ( BENCH_LOG=$log; export BENCH_LOG; "$@" ) > "$log" 2>&1; rc=$?
  read -r b1 t1 < <(stat_busy)
  {
    echo "## $name"
    echo
    echo "Command: \`$*\`  "
    echo "From $s0 to $(date -u +%T) UTC, exit $rc; load average at start $l0, at end $(cut -d' ' -f1-3 /proc/loadavg); busy CPUs over the part (machine-wide, ours included): $(echo "scale=2; $(nproc) * ($b1 - $b0) / ($t1 - $t0 + 1)" | bc) of $(nproc). Log: $log"
    echo
    echo '```'
    "$extract" "$log"
    echo '```'
    echo
  } >> "$RESULTS"
  [ $rc -eq 0 ] || STATUS=1
}

x_handshake() { grep -E '^\|' "$ROOT/BenchmarkDotNet.Artifacts/results/VhostCompat.Benchmarks.HandshakeBenchmarks-report-github.md" 2>/dev/null | tr -d '*'; grep -h '^handshake ' "$1"; }
x_ring() {
  for r in SplitRingBenchmarks WalkerExperimentBenchmarks; do
    grep -E '^\|' "$ROOT/BenchmarkDotNet.Artifacts/results/VhostCompat.Benchmarks.$r-report-github.md" 2>/dev/null | tr -d '*' | grep -Ev '^\| +\|'
  done
  grep -E '^(walker-ab|alloc-check|a benchmark threw)|MissingMethod|Unhandled exception' "$1" | tail -24
}
x_tail() { grep -E 'RUN |ROUND|SUMMARY|ratio|NOISY|median|^\|' "$1" | tail -40; }
x_aot() { cat /tmp/vhostcompat-run-all-aot/results.txt 2>/dev/null; }

run_handshake() {
  dotnet build tests/VhostCompat.Benchmarks -c Release -nologo -v q || return 1
  rm -rf "$ROOT/BenchmarkDotNet.Artifacts/results"
  dotnet "$BENCH" --filter '*HandshakeBenchmarks*' || return 1
  for q in 2 32; do for m in ack pipelined; do dotnet "$BENCH" handshake 100 $q $m || return 1; done; done
}
run_ring() {
  local rc=0
  dotnet "$BENCH" --filter '*SplitRingBenchmarks*' '*WalkerExperimentBenchmarks*' --job short --inProcess || rc=1
  grep -q 'Exception' "$BENCH_LOG" && { echo "a benchmark threw an exception (above)"; rc=1; }
  taskset -c 0 dotnet "$BENCH" walker-ab 9 || rc=1
  dotnet "$BENCH" alloc-check 2000000 || rc=1
  return $rc
}

part handshake x_handshake run_handshake
part ring x_ring run_ring
part dpdk x_tail env ROUNDS=2 DURATION=5 WARMUP=2 QUIET_WAIT=20 QUIET_MAX=0.5 VARIANTS="dpdk csharp csharp-copy" OUT="$OUT/compare-dpdk" tests/VhostCompat.Benchmarks/scripts/compare-dpdk.sh
part blk x_tail env ROUNDS=1 OUT="$OUT/compare-qsd-blk" tests/VhostCompat.Benchmarks/scripts/compare-qsd-blk.sh
part aot x_aot env ROUNDS=3 OUT=/tmp/vhostcompat-run-all-aot tests/VhostCompat.Benchmarks/scripts/publish-aot.sh

echo "Overall: $([ $STATUS = 0 ] && echo 'every part exited 0' || echo 'a part FAILED (see its exit code above)')" >> "$RESULTS"
echo "[run-all $(date -u +%T)] results in $RESULTS"
exit $STATUS
