#!/usr/bin/env bash
# Compile-checks the torch-free CUDA kernel headers of the selective scan (csrc/selective_scan/*.cuh) with
# plain nvcc for sm_80 and sm_90, as CI does on machines without a GPU or a CUDA torch: scripts/nvcc_check.cu
# instantiates every kernel the extension launches. `-v` also prints ptxas's register/spill report.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [[ ! -x "$NVCC" ]]; then
  echo "nvcc_check: nvcc not found (set NVCC=/path/to/nvcc)" >&2
  exit 1
fi
extra=()
[[ "${1:-}" == "-v" ]] && extra=(-Xptxas -v)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
pids=()
for arch in 80 90; do
  "$NVCC" -std=c++17 -O3 --use_fast_math -Icsrc -gencode "arch=compute_${arch},code=sm_${arch}" "${extra[@]}" \
    -c -o "$out/nvcc_check_sm${arch}.o" scripts/nvcc_check.cu >"$out/sm${arch}.log" 2>&1 &
  pids+=($!)
done
status=0
for i in 0 1; do
  arch=$([[ $i == 0 ]] && echo 80 || echo 90)
  if wait "${pids[$i]}"; then echo "nvcc_check: sm_${arch} OK"; else echo "nvcc_check: sm_${arch} FAILED"; status=1; fi
  cat "$out/sm${arch}.log"
done
exit $status
