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
# Every scripts/nvcc_check*.cu (scan kernels, decode kernels) for each architecture, in parallel.
jobs=()
for src in scripts/nvcc_check*.cu; do
  for arch in 80 90; do
    name=$(basename "$src" .cu)_sm${arch}
    "$NVCC" -std=c++17 -O3 --use_fast_math -Icsrc -gencode "arch=compute_${arch},code=sm_${arch}" "${extra[@]}" \
      -c -o "$out/$name.o" "$src" >"$out/$name.log" 2>&1 &
    jobs+=("$!:$name")
  done
done
status=0
for job in "${jobs[@]}"; do
  pid=${job%%:*} name=${job#*:}
  if wait "$pid"; then echo "nvcc_check: $name OK"; else echo "nvcc_check: $name FAILED"; status=1; fi
  cat "$out/$name.log"
done
exit $status
