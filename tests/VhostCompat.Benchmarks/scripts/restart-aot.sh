#!/usr/bin/env bash
# Backend restart → first used-ring update with QEMU 7.2 reconnecting, NativeAOT and JIT (docs/performance.md,
# "NativeAOT").
#
#   tests/VhostCompat.Benchmarks/scripts/restart-aot.sh            # ROUNDS=2: JIT, AOT, AOT, JIT (interleaved)
#   ROUNDS=3 OUT=/tmp/restart tests/VhostCompat.Benchmarks/scripts/restart-aot.sh
#
# Runs the interop test BlockCrashRecoveryInteropTests (QEMU 7.2 TCG guest, vhost-user-blk-pci, chardev
# reconnect=1, two writers with requests in flight, samples/Block killed with SIGKILL and started again; split and
# packed rings; the filter also takes the QEMU 10.0 variant in Qemu10InteropTests) once per mode and round. AOT: VHOSTCOMPAT_SAMPLE_NATIVE_DIR points the harness at the NativeAOT
# executable published here, so both the killed and the restarted backend are native. The test prints the restarted
# backend's milestones from its own log timestamps, relative to its process start (kernel start time):
#   listening            - the backend's start-up (runtime + SDK, acked-state record loaded, socket bound)
#   frontend connected   - QEMU's reconnect timer fired (it ticks every 1 s from the disconnect, not from our start)
#   first request        - first used-ring update (a request QEMU re-exposed, completed by the backend)
# Reported: backend part = listening + (first request - frontend connected); QEMU part = connected - listening.
# Needs the interop prerequisites (README: qemu-system-x86, linux-image-amd64, busybox-static, cpio, a C compiler)
# and clang + zlib1g-dev for the publish. CI does not run it.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-/tmp/vhostcompat-restart-aot}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
RESULTS=$OUT/results.txt
: > "$RESULTS"
say() { echo "$*" | tee -a "$RESULTS"; }

say "restart-aot $(date -u +%FT%TZ) head $(git rev-parse --short HEAD) load $(cut -d' ' -f1-3 /proc/loadavg) qemu $(qemu-system-x86_64 --version | head -1)"
NATIVE=${NATIVE:-}   # a directory that already holds the native VhostCompat.Samples.Block (e.g. publish-aot.sh's OUT/Block)
if [ -z "$NATIVE" ]; then
  NATIVE=$OUT/native
  dotnet publish samples/Block -c Release -r linux-x64 -p:PublishAot=true -o "$NATIVE" >"$OUT/publish.log" 2>&1 || { tail -20 "$OUT/publish.log"; exit 1; }
fi
dotnet build tests/VhostCompat.InteropTests -c Release >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }

run() { # mode round
  local mode=$1 r=$2 log=$OUT/r$2-$1.log
  local env=(VHOSTCOMPAT_REQUIRE_INTEROP=1)
  [ "$mode" = aot ] && env+=(VHOSTCOMPAT_SAMPLE_NATIVE_DIR="$NATIVE")
  local l0; l0=$(cut -d' ' -f1 /proc/loadavg)
  env "${env[@]}" timeout 900 dotnet test tests/VhostCompat.InteropTests -c Release --no-build \
    --filter "FullyQualifiedName~Block_backend_killed_with_SIGKILL" --logger "console;verbosity=detailed" >"$log" 2>&1 || say "round $r $mode: test FAILED (see $log)"
  # detailed console logger: "Passed <test> [..]" precedes that test's output, which holds its RESTART-TO-SERVING line
  awk '/^ *(Passed|Failed) VhostCompat/{name=$2" "$3} /RESTART-TO-SERVING \(block\)/{print name "|" $0}' "$log" |
  sed 's/VhostCompat.InteropTests.//; s/^Qemu10InteropTests[^|]*/QEMU 10.0/; s/^BlockCrashRecoveryInteropTests[^(|]*(packedRing: True)/QEMU 7.2 packed/; s/^BlockCrashRecoveryInteropTests[^(|]*(packedRing: False)/QEMU 7.2 split/' |
  while IFS='|' read -r test line; do
    l=$(grep -oP 'listening \K[0-9]+' <<<"$line" || echo NA)
    c=$(grep -oP 'frontend connected \K[0-9]+' <<<"$line" || echo NA)
    f=$(grep -oP 'first request completed \K[0-9]+' <<<"$line" || echo NA)
    if [[ $l != NA && $c != NA && $f != NA ]]; then
      say "round $r $mode, $test: listening $l ms, frontend connected $c ms, first used-ring update $f ms | backend part $((l + f - c)) ms (start-up $l + connect->first $((f - c))), QEMU reconnect wait $((c - l)) ms | load $l0 -> $(cut -d' ' -f1 /proc/loadavg)"
    else
      say "round $r $mode, $test: $line"
    fi
  done
}
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then run jit "$r"; run aot "$r"; else run aot "$r"; run jit "$r"; fi
done
say "restart-aot done $(date -u +%FT%TZ)"
