#!/usr/bin/env bash
# The whole GPU-side check of issue 20 in one go, on a machine with the CUDA driver, nvcc/NVRTC, Python and PyTorch but
# no .NET. Run from the repository root after `../shared/tools/device-pack.sh src/Rellax.Cli` made .device/ (see
# benchmarks/gpu/README.md for the one `device` call):
#   1. rellax selftest --backend all --size medium      (every op on cpu, ilgpu and cuda vs the double reference; text)
#   2. rellax selftest --backend cuda --bench --size large --output DIR   (the issue's GPU shapes, timed and saved)
#   3. python3 benchmarks/gpu/check_torch.py DIR         (our outputs vs torch, torch's times, the ratio table, targets)
#   4. the CUDA self-tests (kernels/tests) through CMake/ctest, or nvcc directly when CMake is missing
# Each step has its own time limit (all of them together: 8 minutes); a failing step does not stop the next one.
# Logs and JSON go to $OUT (the device tool's folder that comes back) or /tmp/rellax-gpu-run; one summary at the end.
# Exit status: 0 when every step passed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-/tmp/rellax-gpu-run}
mkdir -p "$out"
work=/tmp/rellax-selftest-work
rm -rf "$work"; mkdir -p "$work"
declare -a summary=()
status=0
note() { summary+=("$1"); echo "== $1"; }

# ---- environment: the packed .NET runtime (as .device/run.sh unpacks it), NVRTC on the library path
app="$root/.device/app/Rellax.Cli/rellax.dll"
if [ ! -f "$app" ] || [ ! -f "$root/.device/dotnet.tar.xz" ]; then
  echo "run.sh: $app or .device/dotnet.tar.xz is missing; run ../shared/tools/device-pack.sh src/Rellax.Cli first and carry .device" >&2
  exit 2
fi
export DOTNET_ROOT=/tmp/dotnet-rt DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
if [ ! -x "$DOTNET_ROOT/dotnet" ]; then mkdir -p "$DOTNET_ROOT"; tar -C "$DOTNET_ROOT" -xJf "$root/.device/dotnet.tar.xz"; fi
nv=$(dirname "$(find /usr/local /opt /usr/lib /usr/lib64 -name 'libnvrtc.so*' 2>/dev/null | head -n 1)" 2>/dev/null || true)
[ -n "$nv" ] && export LD_LIBRARY_PATH="$nv:${LD_LIBRARY_PATH:-}"
{ nvidia-smi; nvidia-smi -q -d CLOCK,PERFORMANCE,POWER; } > "$out/nvidia-smi.txt" 2>&1 || true
grep -m1 'model name' /proc/cpuinfo > "$out/cpu.txt" 2>/dev/null || true
gpu=$(nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>/dev/null | head -n 1)
echo "GPU: ${gpu:-unknown}; $(cat "$out/cpu.txt" 2>/dev/null)"

# ---- 1. every op on every backend, and the text (medium shapes: the blocked and multi-tile paths)
timeout -k 10 100 "$DOTNET_ROOT/dotnet" "$app" selftest --backend all --size medium > "$out/selftest.txt" 2>&1
rc=$?
cat "$out/selftest.txt"
last=$(tail -n 1 "$out/selftest.txt")
case $rc in
  0) note "1 selftest --backend all --size medium: PASS ($last)" ;;
  124|137) note "1 selftest: TIMEOUT after 100 s"; status=1 ;;
  *) note "1 selftest: FAIL, exit $rc ($last)"; status=1 ;;
esac

# ---- 2. the benchmark shapes on cuda, saved for the Python side
timeout -k 10 170 "$DOTNET_ROOT/dotnet" "$app" selftest --backend cuda --bench --size large --output "$work/out" --json > "$out/bench.json" 2> "$out/bench.stderr.txt"
rc=$?
cp "$work/out/selftest.json" "$out/bench-manifest.json" 2>/dev/null || true
case $rc in
  0) note "2 selftest --backend cuda --bench --size large --output: PASS" ;;
  124|137) note "2 bench: TIMEOUT after 170 s"; status=1 ;;
  *) note "2 bench: FAIL, exit $rc ($(tail -n 1 "$out/bench.stderr.txt"))"; status=1 ;;
esac
python3 - "$out/bench.json" <<'PY' || true
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print(f"(no bench JSON: {e})"); sys.exit(0)
for p in r.get("peaks", []):
    print(f"peak {p['backend']}: fp32 {p['fp32_tflops']} TFLOP/s, tensor {p['tensor_tflops']} TFLOP/s, {p['gb_per_s']} GB/s ({p['source']})")
for b in r.get("bench", []):
    frac = b["peak_fraction"]
    print(f"{b['op']:<16} {b['shape']:<44} {b['ms']:>10.3f} ms {b['achieved']:>9.2f} {b['metric']:<8} {'-' if frac is None else f'{100*frac:.1f}%':>7}  {b['note']}")
for c in r.get("checks", []):
    if c["status"] == "fail": print(f"FAILED CHECK: {c['op']} on {c['backend']}: {c['note']}")
PY

# ---- 3. the PyTorch side
if [ -f "$work/out/selftest.json" ]; then
  timeout -k 10 120 python3 benchmarks/gpu/check_torch.py "$work/out" --json "$out/check_torch.json" > "$out/check_torch.txt" 2>&1
  rc=$?
  cat "$out/check_torch.txt"
  last=$(tail -n 1 "$out/check_torch.txt")
  case $rc in
    0) note "3 check_torch.py: PASS ($last)" ;;
    124|137) note "3 check_torch.py: TIMEOUT after 120 s"; status=1 ;;
    *) note "3 check_torch.py: FAIL, exit $rc ($last)"; status=1 ;;
  esac
else
  note "3 check_torch.py: NOT RUN (step 2 wrote no output folder)"; status=1
fi
rm -rf "$work/out"

# ---- 4. the CUDA self-tests
ctest_log="$out/ctest.txt"
if command -v cmake > /dev/null && command -v nvcc > /dev/null; then
  timeout -k 10 90 bash -c "cmake -S . -B '$work/build' -DCMAKE_CUDA_ARCHITECTURES=native > '$ctest_log' 2>&1 &&
    cmake --build '$work/build' -j \$(nproc) >> '$ctest_log' 2>&1 &&
    ctest --test-dir '$work/build' --output-on-failure >> '$ctest_log' 2>&1"
  rc=$?
  how="cmake/ctest"
elif command -v nvcc > /dev/null; then
  # No CMake: the same executables, built one by one as CMakeLists.txt would.
  timeout -k 10 90 bash -c "rc=0; for t in kernels/tests/*_test.cu; do n=\$(basename \$t .cu);
      echo \"== \$n\"; nvcc -std=c++17 -arch=native -Ikernels -o '$work'/\$n \$t && '$work'/\$n || rc=1; done; exit \$rc" > "$ctest_log" 2>&1
  rc=$?
  how="nvcc (no cmake)"
else
  rc=127
  echo "neither cmake nor nvcc found" > "$ctest_log"
  how="none"
fi
tail -n 25 "$ctest_log"
case $rc in
  0) note "4 CUDA self-tests via $how: PASS ($(grep -E 'tests passed|passed' "$ctest_log" | tail -n 1))" ;;
  124|137) note "4 CUDA self-tests via $how: TIMEOUT after 90 s"; status=1 ;;
  127) note "4 CUDA self-tests: NOT RUN (no nvcc)"; status=1 ;;
  *) note "4 CUDA self-tests via $how: FAIL, exit $rc"; status=1 ;;
esac

echo
echo "===== summary (GPU: ${gpu:-unknown}; logs in $out) ====="
for line in "${summary[@]}"; do echo "$line"; done
printf '%s\n' "${summary[@]}" > "$out/summary.txt"
exit $status
