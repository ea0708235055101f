#!/bin/bash
# soak.sh - 10 000 connect -> misbehave -> close cycles against each sample process (samples/Net, samples/Block,
# samples/Rng), measured from outside through /proc/<pid> (fds, maps split guest/other, VmRSS), then one healthy
# session. Exits non-zero when any sample leaks, dies, hangs or fails the final health check.
#
#   tests/VhostCompat.Benchmarks/scripts/soak.sh                 # all three samples, 10 000 cycles each
#   CYCLES=2000 SAMPLES="net rng" tests/VhostCompat.Benchmarks/scripts/soak.sh
# Env: CYCLES=10000  WARMUP=2000  SAMPLE_EVERY=1000  SEED=15  SAMPLES="net block rng"  MAX_SECONDS=1800 (per sample)
#      OUT=(a new temp directory)  CONFIGURATION=Release  NO_BUILD=1 (skip the builds)
# Output: the soak's lines on stdout (RESULT line per sample), $OUT/<sample>.log (the sample's own log), $OUT/<sample>.txt.
# Only Unix sockets under $OUT; every process is started here, bounded by timeout and stopped by its PID.
set -uo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
CYCLES=${CYCLES:-10000}; WARMUP=${WARMUP:-2000}; SAMPLE_EVERY=${SAMPLE_EVERY:-1000}; SEED=${SEED:-15}
SAMPLES=${SAMPLES:-net block rng}; MAX_SECONDS=${MAX_SECONDS:-1800}; CONFIGURATION=${CONFIGURATION:-Release}
OUT=${OUT:-$(mktemp -d /tmp/vhostcompat-soak-XXXXXX)}
for v in "$CYCLES" "$WARMUP" "$SAMPLE_EVERY" "$SEED" "$MAX_SECONDS"; do
  [[ "$v" =~ ^[0-9]+$ ]] || { echo "CYCLES, WARMUP, SAMPLE_EVERY, SEED and MAX_SECONDS must be non-negative integers" >&2; exit 2; }
done
for s in $SAMPLES; do
  case $s in net|block|rng) ;; *) echo "unknown sample '$s' (SAMPLES takes net, block, rng)" >&2; exit 2 ;; esac
done
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" >&2; }

if [ -z "${NO_BUILD:-}" ]; then
  for p in samples/Net samples/Block samples/Rng tests/VhostCompat.Benchmarks; do
    log "build $p ($CONFIGURATION)"
    timeout 600 dotnet build "$ROOT/$p" -c "$CONFIGURATION" -nologo -v q > "$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; exit 1; }
  done
fi
BENCH=$ROOT/tests/VhostCompat.Benchmarks/bin/$CONFIGURATION/net10.0/VhostCompat.Benchmarks.dll

BE_PID=""
stop_sample() {
  [ -n "$BE_PID" ] || return 0
  kill -TERM "$BE_PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$BE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$BE_PID" 2>/dev/null && kill -KILL "$BE_PID" 2>/dev/null
  wait "$BE_PID" 2>/dev/null; BE_PID=""
}
trap stop_sample EXIT
trap 'exit 130' INT TERM

status=0
for s in $SAMPLES; do
  name=$(echo "${s:0:1}" | tr a-z A-Z)${s:1}
  dll=$ROOT/samples/$name/bin/$CONFIGURATION/net10.0/VhostCompat.Samples.$name.dll
  [ -f "$dll" ] || { echo "build samples/$name first (or drop NO_BUILD)" >&2; exit 2; }
  sock=$OUT/$s.sock; rm -f "$sock"
  extra=()
  [ "$s" = block ] && { rm -f "$OUT/disk.img"; extra=(--image "$OUT/disk.img" --size 1048576); }
  log "start samples/$name on $sock"
  # dotnet runs the app in its own process: $! is the sample itself, so /proc/$! is what is measured.
  dotnet "$dll" --socket-path "$sock" --log-level Warning "${extra[@]}" > "$OUT/$s.log" 2>&1 &
  BE_PID=$!
  for _ in $(seq 1 200); do [ -S "$sock" ] && break; sleep 0.1; done
  [ -S "$sock" ] || { echo "samples/$name did not create $sock" >&2; cat "$OUT/$s.log" >&2; exit 1; }
  log "soak samples/$name (pid $BE_PID): $CYCLES cycles, seed $SEED"
  timeout -k 5 $((MAX_SECONDS + 60)) dotnet "$BENCH" soak --socket-path "$sock" --pid "$BE_PID" --device "$s" \
    --cycles "$CYCLES" --warmup "$WARMUP" --sample-every "$SAMPLE_EVERY" --seed "$SEED" --max-seconds "$MAX_SECONDS" | tee "$OUT/$s.txt"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { log "samples/$name: soak exit code $rc"; status=1; }
  stop_sample
  log "samples/$name log: $(wc -l < "$OUT/$s.log") lines, $(grep -c -i 'fail\|unhandled\|exception' "$OUT/$s.log") mention fail/unhandled/exception"
done
log "output in $OUT"
exit $status
