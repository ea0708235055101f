#!/bin/bash
# compare-qsd-blk.sh - samples/Block (C#) vs qemu-storage-daemon 7.2 (libvhost-user), same QEMU 7.2
# vhost-user-blk-pci TCG guest, same block workload, interleaved on the same minutes (qsd run, C# run, ...).
#
# The guest, the workload and the QEMU command line come from the SHARED REFERENCE HARNESS
# (/work/shared/reference-harness/blk/qsd-blk.sh, read-only, not part of this repository; REF_HARNESS=...):
# this script only drives it, once with BACKEND=qsd and once with BACKEND=external against samples/Block,
# per round, and tabulates the RESULT lines it prints.
#
#   tests/VhostCompat.Benchmarks/scripts/compare-qsd-blk.sh            # ROUNDS=2
#   ROUNDS=3 CACHE_DIRECT=on tests/VhostCompat.Benchmarks/scripts/compare-qsd-blk.sh
# Env: ROUNDS=2  IMG_MB=128  NUM_QUEUES=1  CACHE_DIRECT=off (qsd; samples/Block always uses the host page cache,
#      so 'off' is the like-for-like setting, 'on' is the reference anchor)  OUT=/tmp/vhostcompat-compare-blk
#      CONFIGURATION=Release  BACKEND_CPU=1 (taskset for both backends; QEMU runs on cpu 0)  TIMEOUT=300
#      CS_ARGS='' (extra options for samples/Block, e.g. '--io-threads 0')
#      QUIET_WAIT=0 QUIET_MAX=0.3: before each run wait up to QUIET_WAIT s for other load to drop below QUIET_MAX CPUs
# Per workload (blk-phase-cpu.py, a read-only /proc poller next to each run): the backend's CPU seconds between the
# guest's BLK lines, CPU per request, and the foreign load (all busy CPU minus backend, QEMU and the poller).
# Non-interactive: stdin is /dev/null for every child; needs root (the harness), writes only under $OUT and the
# harness's /tmp/harness/qsd-blk.
# Output: $OUT/round<N>-{qsd,cs}.txt (RESULT lines), $OUT/round<N>-{qsd,cs}/ (the harness run directory),
#         $OUT/round<N>-cs-backend.log, and a table on stdout (also $OUT/table.md).
# Every process runs under timeout and is stopped by its PID; nothing else is touched.
set -uo pipefail
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
REF=${REF_HARNESS:-/work/shared/reference-harness/blk}
ROUNDS=${ROUNDS:-2}; IMG_MB=${IMG_MB:-128}; NUM_QUEUES=${NUM_QUEUES:-1}; CACHE_DIRECT=${CACHE_DIRECT:-off}
OUT=${OUT:-/tmp/vhostcompat-compare-blk}; CONFIGURATION=${CONFIGURATION:-Release}; BACKEND_CPU=${BACKEND_CPU:-1}
TIMEOUT=${TIMEOUT:-300}; QUIET_WAIT=${QUIET_WAIT:-0}; QUIET_MAX=${QUIET_MAX:-0.3}
DLL=$ROOT/samples/Block/bin/$CONFIGURATION/net10.0/VhostCompat.Samples.Block.dll
[ -x "$REF/qsd-blk.sh" ] || { echo "reference harness not found: $REF/qsd-blk.sh (set REF_HARNESS)" >&2; exit 2; }
[ -f "$DLL" ] || { echo "build samples/Block first: dotnet build $ROOT/samples/Block -c $CONFIGURATION" >&2; exit 2; }
mkdir -p "$OUT"; rm -f "$OUT"/round*.txt "$OUT"/round*.phases "$OUT"/round*.preload
SOCK=$OUT/cs-blk.sock; IMG=$OUT/cs-disk.img; RUN_DIR=/tmp/harness/qsd-blk/run1
CS_ARGS=${CS_ARGS:-}
BE_PID=""
stop_backend() {
  [ -n "$BE_PID" ] || return 0
  kill -TERM "$BE_PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$BE_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$BE_PID" 2>/dev/null && kill -KILL "$BE_PID" 2>/dev/null
  wait "$BE_PID" 2>/dev/null; BE_PID=""
}
trap stop_backend EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%T)] $*" >&2; }
# busy CPUs over 1 s from /proc/stat (user nice system irq softirq; steal excluded)
busy_cpus() { local a b; a=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat); sleep 1; b=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
  awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", (b-a)/hz}'; }
# before each run: wait up to QUIET_WAIT s for the machine's load (nothing of ours runs then) to drop below QUIET_MAX CPUs
quiet() {
  local t0=$SECONDS l; l=$(busy_cpus)
  while awk -v l="$l" -v m="$QUIET_MAX" 'BEGIN{exit !(l > m)}' && [ $((SECONDS - t0)) -lt "$QUIET_WAIT" ]; do l=$(busy_cpus); done
  log "load before the run: $l CPUs (waited $((SECONDS - t0)) s, QUIET_MAX=$QUIET_MAX)"; echo "$l" > "$1"
}

run_qsd() {
  quiet "$OUT/round$r-qsd.preload"
  log "round $r/$ROUNDS: qsd (cache.direct=$CACHE_DIRECT)"
  python3 "$HERE/blk-phase-cpu.py" "$RUN_DIR/console.txt" "$OUT/round$r-qsd.phases" qsd &
  local samp=$!
  RUNS=1 BACKEND=qsd IMG_MB=$IMG_MB NUM_QUEUES=$NUM_QUEUES CACHE_DIRECT=$CACHE_DIRECT QSD_CPU=$BACKEND_CPU TIMEOUT=$TIMEOUT \
    "$REF/qsd-blk.sh" > "$OUT/round$r-qsd.txt" 2> "$OUT/round$r-qsd.stderr" < /dev/null
  kill "$samp" 2>/dev/null; wait "$samp" 2>/dev/null
  rm -rf "$OUT/round$r-qsd"; cp -r "$RUN_DIR" "$OUT/round$r-qsd" 2>/dev/null
}
run_cs() {
  log "round $r/$ROUNDS: samples/Block (C#) ${CS_ARGS}"
  rm -f "$IMG" "$SOCK"
  quiet "$OUT/round$r-cs.preload"
  dd if=/dev/zero of="$IMG" bs=1M count="$IMG_MB" conv=fsync status=none   # fully allocated, like the qsd image
  # timeout forwards SIGTERM; taskset execs dotnet, so the wrapper's child is the backend itself
  # shellcheck disable=SC2086 # CS_ARGS is a list of options
  timeout -k 5 "$TIMEOUT" taskset -c "$BACKEND_CPU" dotnet "$DLL" --socket-path "$SOCK" --image "$IMG" \
    --queues "$NUM_QUEUES" --serial vhostcompat-bench $CS_ARGS > "$OUT/round$r-cs-backend.log" 2>&1 < /dev/null &
  BE_PID=$!
  for _ in $(seq 1 200); do [ -S "$SOCK" ] && break; sleep 0.1; done
  be_child=$(ps -o pid= --ppid "$BE_PID" | tr -d ' ' | head -1)
  python3 "$HERE/blk-phase-cpu.py" "$RUN_DIR/console.txt" "$OUT/round$r-cs.phases" external "${be_child:-$BE_PID}" &
  local samp=$!
  RUNS=1 BACKEND=external SOCK=$SOCK IMG=$IMG BACKEND_PID=${be_child:-$BE_PID} NUM_QUEUES=$NUM_QUEUES TIMEOUT=$TIMEOUT \
    "$REF/qsd-blk.sh" > "$OUT/round$r-cs.txt" 2> "$OUT/round$r-cs.stderr" < /dev/null
  kill "$samp" 2>/dev/null; wait "$samp" 2>/dev/null
  stop_backend
  rm -rf "$OUT/round$r-cs"; cp -r "$RUN_DIR" "$OUT/round$r-cs" 2>/dev/null
  echo "RESULT run=1 backend_requests $(grep -oE 'requests=[0-9]+' "$OUT/round$r-cs-backend.log" | tail -1 | cut -d= -f2) count" >> "$OUT/round$r-cs.txt"
  echo "RESULT run=1 backend_fail_lines $(grep -cE '(fail|crit):' "$OUT/round$r-cs-backend.log") count" >> "$OUT/round$r-cs.txt"
}

# interleaved, and the order alternates between rounds (qsd first in odd rounds) so that a drifting load hits both
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run_qsd; run_cs; else run_cs; run_qsd; fi
done

python3 - "$OUT" "$ROUNDS" <<'PY' | tee "$OUT/table.md"
import statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(p):
    d = {}
    try:
        for l in open(p):
            if l.startswith('RESULT run='):
                f = l.split(None, 4)
                if len(f) >= 4: d[f[2]] = (f[3], f[4].split()[0] if len(f) > 4 and f[4].split() else '')
    except OSError: pass
    return d
data = {(r, b): load('%s/round%d-%s.txt' % (out, r, b)) for r in range(1, rounds + 1) for b in ('qsd', 'cs')}
figs = ['seq_write_1024k_256M', 'seq_read_1024k_256M', 'dd_seq_write_32M', 'dd_seq_read_32M',
        'rand4k_write_qd1', 'rand4k_read_qd1', 'rand4k_write_qd1_lat_avg', 'rand4k_read_qd1_lat_avg',
        'rand4k_write_qd16', 'rand4k_read_qd16', 'write4k_fdatasync', 'write4k_fdatasync_wb',
        'workload_time', 'qemu_wall', 'backend_cpu', 'qsd_cpu']
def num(v):
    try: return float(v)
    except (TypeError, ValueError): return None
print('| figure | unit | ' + ' | '.join('r%d qsd | r%d C#' % (r, r) for r in range(1, rounds + 1)) + ' | median C#/qsd |')
print('|---|---|' + '---|---|' * rounds + '---|')
for f in figs:
    cells, ratios, unit = [], [], ''
    for r in range(1, rounds + 1):
        q = data[(r, 'qsd')].get(f if f != 'backend_cpu' else 'qsd_cpu'); c = data[(r, 'cs')].get(f)
        if f == 'qsd_cpu': q, c = data[(r, 'qsd')].get('qsd_cpu'), data[(r, 'cs')].get('backend_cpu')
        unit = unit or (q or c or ('', ''))[1]
        cells += [q[0] if q else '-', c[0] if c else '-']
        if q and c and num(q[0]) and num(c[0]) is not None: ratios.append(num(c[0]) / num(q[0]))
    if f == 'backend_cpu': continue
    name = 'backend_cpu (qsd_cpu / C# backend_cpu)' if f == 'qsd_cpu' else f
    print('| %s | %s | %s | %s |' % (name, unit, ' | '.join(cells), '%.2f' % statistics.median(ratios) if ratios else '-'))
for k in ('verify', 'host_verify', 'write_zeroes', 'discard', 'status', 'noisy', 'backend_requests', 'backend_fail_lines'):
    print('| %s | | %s | |' % (k, ' | '.join((data[(r, b)].get(k) or ('-',))[0] for r in range(1, rounds + 1) for b in ('qsd', 'cs'))))
PY
python3 "$HERE/blk-phase-table.py" "$OUT" "$ROUNDS" | tee -a "$OUT/table.md"
