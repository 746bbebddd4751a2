#!/usr/bin/env bash
# One call on the GPU machine for the conv/decode ops: build with CUDA, run their tests, compute-sanitizer
# (memcheck, racecheck) on small cases, and the benchmark. Logs and JSON go to $OUT.
# Usage: scripts/gpu_decode_check.sh [tests] [ncu] [probe] [sanitizer] [bench]
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/device.txt"
start=$(date +%s)
MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} python3 -m pip install --no-build-isolation --no-deps -e . \
  >"$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
python3 -c "import mamba_ext; print('has_cuda', mamba_ext.has_cuda())"
for step in "$@"; do
  case $step in
    tests)
      python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_causal_conv1d.py tests/test_state_update.py \
        -k cuda 2>&1 | tee "$OUT/tests.log" | grep -vE "^(tests/|  )" | tail -25 ;;
    ncu)  # the conv and decode kernels at the benchmark shapes; the full report is in $OUT/ncu_decode.txt
      ncu --clock-control none -k regex:"causal_conv1d|state_update" --launch-count 6 --section SpeedOfLight \
        --section Occupancy --section LaunchStats --section WarpStateStats --section ComputeWorkloadAnalysis \
        python3 scripts/profile_conv_decode.py >"$OUT/ncu_decode.txt" 2>&1
      grep -E "^  void|Duration|DRAM Throughput|Compute \(SM\) Throughput|Executed Ipc Active|Registers Per|Achieved Occupancy" \
        "$OUT/ncu_decode.txt" | cut -c1-110 ;;
    probe)
      for c in conv_rank conv_width conv_fwd_rank scan_rank ssu_rank; do python3 scripts/segv_probe.py $c 2>&1 | tail -3; done
      timeout 150 cuda-gdb -q -batch -ex "set pagination off" -ex run -ex bt --args python3 scripts/segv_probe.py conv_rank \
        >"$OUT/gdb.log" 2>&1; grep -E "^#|signal|OK:" "$OUT/gdb.log" | head -30 ;;
    sanitizer)
      for tool in ${SANITIZERS:-memcheck racecheck}; do
        timeout 150 compute-sanitizer --tool $tool --error-exitcode 1 python3 scripts/sanitize_decode.py >"$OUT/$tool.log" 2>&1
        echo "compute-sanitizer $tool: exit $?"; tail -2 "$OUT/$tool.log"
      done ;;
    bench) python3 benchmarks/bench_conv_update.py --json "$OUT/bench_conv_update.json" 2>&1 | tee "$OUT/bench.log" ;;
  esac
done
