#!/usr/bin/env bash
# NativeAOT publish check for the samples and the vhost-compat tool (docs/performance.md, "NativeAOT").
#
#   tests/VhostCompat.Benchmarks/scripts/publish-aot.sh              # publish all four, smoke-test, time start-up
#   PROJECTS="samples/Net" ROUNDS=5 OUT=/tmp/aot tests/VhostCompat.Benchmarks/scripts/publish-aot.sh
#
# Needs clang and zlib1g-dev (apt) besides the .NET SDK; the ILCompiler packages come from the NuGet source like any
# other package (the SDK picks their version). For each project: `dotnet publish -c Release -r linux-x64
# -p:PublishAot=true`; the run fails if a publish fails or prints any trim/AOT warning (IL2xxx/IL3xxx).
# Then, with the native and the JIT builds side by side:
#   * the tool: a fixed set of commands (text and --json) must print the same bytes and exit code;
#   * each sample: --print-capabilities must print the same document, and exec → listening socket is timed
#     (ROUNDS rounds, native and JIT interleaved), with the machine's foreign load next to it.
# CI does not run this script (about 2 minutes of publishing per project on the 2-core box).
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
OUT=${OUT:-/tmp/vhostcompat-aot}
ROUNDS=${ROUNDS:-5}
PROJECTS=${PROJECTS:-"samples/Net samples/Block samples/Rng src/VhostCompat.Cli"}
RESULTS=$OUT/results.txt
mkdir -p "$OUT"
: > "$RESULTS"
say() { echo "$*" | tee -a "$RESULTS"; }

for tool in clang; do
  command -v "$tool" >/dev/null || { echo "publish-aot: $tool missing (apt-get install clang zlib1g-dev)" >&2; exit 2; }
done
dpkg -s zlib1g-dev >/dev/null 2>&1 || { echo "publish-aot: zlib1g-dev missing (apt-get install zlib1g-dev)" >&2; exit 2; }

say "publish-aot $(date -u +%FT%TZ) head $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg) nproc $(nproc)"
declare -A NATIVE JITDLL
for p in $PROJECTS; do
  name=$(basename "$p")
  log=$OUT/$name.publish.log
  t0=$(date +%s.%N)
  if ! dotnet publish "$p" -c Release -r linux-x64 -p:PublishAot=true -o "$OUT/$name" >"$log" 2>&1; then
    say "FAIL publish $p (log $log)"; tail -20 "$log"; exit 1
  fi
  t1=$(date +%s.%N)
  warnings=$(grep -Ec 'warning IL[23][0-9]{3}' "$log" || true)
  exe=$(find "$OUT/$name" -maxdepth 1 -type f -executable ! -name '*.dbg' ! -name '*.so' | head -1)
  size=$(stat -c %s "$exe")
  say "published $p -> $exe ($((size / 1024)) KiB) in $(printf '%.0f' "$(echo "$t1 - $t0" | bc)") s, trim/AOT warnings: $warnings"
  [ "$warnings" = 0 ] || { grep -E 'warning IL[23][0-9]{3}' "$log" | sort -u | head -20; exit 1; }
  NATIVE[$name]=$exe
  # the JIT build of the same project (framework-dependent)
  dotnet build "$p" -c Release >"$OUT/$name.build.log" 2>&1 || { say "FAIL build $p"; exit 1; }
  JITDLL[$name]=$(find "$ROOT/$p/bin/Release/net10.0" -maxdepth 1 -name "$(basename "$exe").dll" | head -1)
done

fail=0
same() { # label, then the command tail; runs native and JIT, compares stdout and exit code
  local label=$1; shift
  local n j rn rj
  n=$("${NATIVE[VhostCompat.Cli]}" "$@" 2>&1) && rn=0 || rn=$?
  j=$(dotnet "${JITDLL[VhostCompat.Cli]}" "$@" 2>&1) && rj=0 || rj=$?
  if [ "$n" == "$j" ] && [ "$rn" == "$rj" ]; then say "ok   tool $label (exit $rn)"; else say "DIFF tool $label (native exit $rn, jit exit $rj)"; diff <(echo "$j") <(echo "$n") | head -10 | tee -a "$RESULTS"; fail=1; fi
}

if [ -n "${NATIVE[VhostCompat.Cli]:-}" ]; then
  caps=$OUT/net-caps.json
  if [ -n "${NATIVE[Net]:-}" ]; then "${NATIVE[Net]}" --print-capabilities > "$caps"; else dotnet "$ROOT/samples/Net/bin/Release/net10.0/VhostCompat.Samples.Net.dll" --print-capabilities > "$caps"; fi
  cat_dir=$(dirname "${NATIVE[VhostCompat.Cli]}")/catalogs
  same "features decode" features decode 0x170008000
  same "features decode --json" --json features decode 0x170008000
  same "features decode --protocol" features decode --protocol 0x1a009
  same "features encode" features encode mrg_rxbuf,version_1,event_idx
  same "profile parse --json" --json profile parse type=net,any_layout=on,max_ring=256,mrg_rxbuf=off
  same "profile format" profile format type=net,mrg_rxbuf=off,max_ring=256
  same "caps validate" caps validate "$caps"
  same "caps validate --json" --json caps validate "$caps"
  same "catalog show (dpdk-net)" catalog show "$cat_dir/dpdk-net.json"
  same "catalog show --json (qsd-blk)" --json catalog show "$cat_dir/qemu-storage-daemon-blk.json"
  same "bad argument" features decode nonsense
fi

# exec → listening socket, native and JIT interleaved; foreign load = machine busy CPUs minus ours is not separable
# for a 20 ms window, so the 1-minute load average and the busy share of /proc/stat over the round are recorded.
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
listen_ms() { # command...; prints ms from exec to the socket file existing, then stops the process
  local sock=$OUT/start.sock pid t0 t1
  rm -f "$sock"
  t0=$(date +%s%N)
  "$@" --socket-path "$sock" --log-level Warning >/dev/null 2>&1 &
  pid=$!
  while [ ! -S "$sock" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "exited"; return; }
    sleep 0.001
  done
  t1=$(date +%s%N)
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo $(( (t1 - t0) / 1000000 ))
}
for name in Net Block Rng; do
  [ -n "${NATIVE[$name]:-}" ] || continue
  nj=$(dotnet "${JITDLL[$name]}" --print-capabilities | sha1sum); nn=$("${NATIVE[$name]}" --print-capabilities | sha1sum)
  if [ "$nj" == "$nn" ]; then say "ok   $name --print-capabilities identical"; else say "DIFF $name --print-capabilities"; fail=1; fi
  extra=(); [ "$name" = Block ] && extra=(--image "$OUT/blk.img" --size 1048576)
  rm -f "$OUT/blk.img"
  nat=(); jit=()
  for r in $(seq 1 "$ROUNDS"); do
    read -r b0 t0 < <(busy)
    if (( r % 2 )); then nat+=("$(listen_ms "${NATIVE[$name]}" "${extra[@]}")"); jit+=("$(listen_ms dotnet "${JITDLL[$name]}" "${extra[@]}")")
    else jit+=("$(listen_ms dotnet "${JITDLL[$name]}" "${extra[@]}")"); nat+=("$(listen_ms "${NATIVE[$name]}" "${extra[@]}")"); fi
    read -r b1 t1 < <(busy)
    loads+=("$(echo "scale=2; 2 * ($b1 - $b0) / ($t1 - $t0 + 1)" | bc)")
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  say "start-up $name: exec -> listening, native ms: ${nat[*]} (median $(med "${nat[@]}")); jit ms: ${jit[*]} (median $(med "${jit[@]}")); busy CPUs per round (of 2, ours included): ${loads[*]}; load $(cut -d' ' -f1 /proc/loadavg)"
  loads=()
done
say "publish-aot done: $([ $fail = 0 ] && echo PASS || echo FAIL)"
exit $fail
