#!/usr/bin/env bash
# One call on the GPU machine: build the extension with CUDA, then run the given steps. Logs go to $OUT.
# Usage: scripts/gpu_check.sh [quick] [cudatests] [packed] [tests] [sanitizer] [ncu] [bench] [benchquick]
# (cudatests: tests/test_selective_scan_cuda.py; tests: that plus the cuda cases of tests/test_selective_scan.py)
set -uo pipefail
which python3; python3 -c "import torch; print(torch.__version__)"
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/device.txt"
start=$(date +%s)
MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} python3 -m pip install --no-build-isolation --no-deps -e . \
  >"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
for step in "$@"; do
  case $step in
    quick) NO_TIMING=${NO_TIMING:-0} python3 scripts/cuda_quick_check.py 2>&1 | tee "$OUT/quick.log" ;;
    cudatests) python3 -m pytest -q -rs tests/test_selective_scan_cuda.py 2>&1 | tee "$OUT/tests_cuda.log" | tail -4 ;;
    packed) python3 -m pytest -q -rs tests/test_selective_scan_packed.py 2>&1 | tee "$OUT/tests_packed.log" | tail -4 ;;
    tests) python3 -m pytest -q -rs tests/test_selective_scan_cuda.py 2>&1 | tee "$OUT/tests_cuda.log" | tail -6
           [[ -e tests/test_selective_scan.py ]] && python3 -m pytest -q -rs -k cuda tests/test_selective_scan.py 2>&1 \
             | tee "$OUT/tests_suite_cuda.log" | tail -12 ;;
    sanitizer)
      for tool in memcheck racecheck; do
        timeout 240 compute-sanitizer --tool $tool --error-exitcode 1 python3 scripts/sanitizer_case.py >"$OUT/$tool.log" 2>&1
        echo "compute-sanitizer $tool: exit $? ($(grep -c 'ERROR SUMMARY: 0' "$OUT/$tool.log") clean summaries)"
        tail -3 "$OUT/$tool.log"
      done ;;
    ncu) ncu --clock-control none -k 'regex:(fwd|bwd)_kernel' --launch-skip 4 --launch-count 2 --print-details all \
           --section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
           --section MemoryWorkloadAnalysis --section LaunchStats --section InstructionStats --section SourceCounters \
           python3 scripts/profile_scan.py >"$OUT/ncu.txt" 2>&1; grep -E "fwd_kernel|bwd_kernel|Duration|Throughput|Warp Cycles|Achieved Occ|Registers|Stall|Issue|Eligible|Pipe" "$OUT/ncu.txt" | head -80 ;;
    bench) python3 benchmarks/bench_scan_cuda.py --out "$OUT" 2>&1 | tee "$OUT/bench.log" ;;
    benchquick) python3 benchmarks/bench_scan_cuda.py --no-sweep --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -12 ;;
  esac
done
