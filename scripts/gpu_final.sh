#!/usr/bin/env bash
# One call on the GPU machine that verifies a release candidate: the full sm_80 + sm_90 (+PTX) build (timed),
# every CUDA test (one pytest process per file, in parallel with pytest-xdist), both CUDA benchmarks, and
# compute-sanitizer (memcheck, racecheck) on small scan cases.
# Logs and JSON go to $OUT. Usage on the device: bash scripts/gpu_final.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
{ gcc --version | head -1; python3 -c "import torch; print('torch', torch.__version__, 'cxx11abi', torch._C._GLIBCXX_USE_CXX11_ABI)"; } | tee -a "$OUT/device.txt"

start=$(date +%s)
MAX_JOBS=16 TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX" python3 -m pip install --no-build-isolation --no-deps -e . \
  >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build sm_80+sm_90+PTX, 16 jobs: $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
readelf -d mamba_ext/_C*.so | grep -q "libstdc++" && echo "_C.so links the shared libstdc++" | tee -a "$OUT/device.txt"
for c in scan_rank conv_rank ssu_rank; do python3 scripts/segv_probe.py $c 2>&1 | tail -1; done | tee -a "$OUT/device.txt"

# CUDA cases of the shared suites (-k cuda), and the CUDA-only files whole.
for f in tests/test_selective_scan.py tests/test_selective_scan_registration.py tests/test_causal_conv1d.py \
         tests/test_state_update.py tests/test_selective_scan_cuda.py tests/test_selective_scan_packed.py; do
  filter=(-k cuda)
  [[ $f == *_cuda.py || $f == *_packed.py ]] && filter=()
  OMP_NUM_THREADS=1 python3 -m pytest -q -p no:cacheprovider -n 12 "${filter[@]}" "$f" >"$OUT/$(basename "$f" .py).log" 2>&1
  echo "$f: exit $? :: $(tail -1 "$OUT/$(basename "$f" .py).log")"
done | tee "$OUT/tests_summary.txt"

python3 benchmarks/bench_scan_cuda.py --no-sweep --out "$OUT" >"$OUT/bench_scan.log" 2>&1; tail -15 "$OUT/bench_scan.log"
python3 benchmarks/bench_conv_update.py --json "$OUT/bench_conv_update.json" >"$OUT/bench_conv.log" 2>&1; tail -12 "$OUT/bench_conv.log"
# compute-sanitizer on small forward+backward cases of the scan (one and several splits, packed rows, N = 256).
for tool in memcheck racecheck; do
  timeout 120 compute-sanitizer --tool $tool --error-exitcode 1 python3 scripts/sanitizer_case.py >"$OUT/$tool.log" 2>&1
  echo "compute-sanitizer $tool: exit $? :: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY' "$OUT/$tool.log" | sort -u | tr '\n' ' ')"
done | tee -a "$OUT/tests_summary.txt"
