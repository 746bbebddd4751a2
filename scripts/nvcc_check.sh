#!/usr/bin/env bash
# Compile-checks the torch-free CUDA kernel headers (csrc/selective_scan/*.cuh) with plain nvcc for sm_80
# and sm_90, as CI does on machines without a GPU or a CUDA torch. Prints the register/spill report with -v.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
extra=()
[[ "${1:-}" == "-v" ]] && extra=(-Xptxas -v)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for arch in 80 90; do
  "$NVCC" -std=c++17 -O3 --use_fast_math -Icsrc -gencode "arch=compute_${arch},code=sm_${arch}" \
    "${extra[@]}" -o "$out/nvcc_check_sm${arch}" scripts/nvcc_check.cu
  echo "nvcc_check: sm_${arch} OK"
done
