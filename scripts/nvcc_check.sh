#!/usr/bin/env bash
# Compile-checks the torch-free CUDA kernel headers (instantiated by scripts/nvcc_check*.cu) with plain nvcc for sm_80
# and sm_90, as CI does on machines without a GPU or a CUDA torch. Prints the register/spill report with -v.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
extra=()
[[ "${1:-}" == "-v" ]] && extra=(-Xptxas -v)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for src in scripts/nvcc_check*.cu; do
  for arch in 80 90; do
    "$NVCC" -std=c++17 -O3 --use_fast_math -Icsrc -gencode "arch=compute_${arch},code=sm_${arch}" \
      "${extra[@]}" -o "$out/$(basename "$src" .cu)_sm${arch}" "$src"
    echo "nvcc_check: $src sm_${arch} OK"
  done
done
