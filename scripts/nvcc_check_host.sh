#!/usr/bin/env bash
# Compile-checks the CUDA host wrappers (csrc/**/*.cu: argument checks, allocation, launches) with nvcc
# against the installed torch's headers, so a change to them is caught on machines without a CUDA torch.
# A CPU torch ships the c10/cuda headers but not the one CMake generates for CUDA builds; an empty stand-in
# is enough to compile. Objects are thrown away: linking needs a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mkdir -p "$out/stub/c10/cuda/impl"
echo "#pragma once" >"$out/stub/c10/cuda/impl/cuda_cmake_macros.h"
read -r -a torch_includes <<<"$(python3 -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")"
jobs=()
for src in $(find csrc -name '*.cu' | sort); do
  name=$(echo "$src" | tr '/' '_')
  "$NVCC" -std=c++17 -O0 -Icsrc "${torch_includes[@]}" -I"$out/stub" -DMAMBA_EXT_WITH_CUDA --expt-relaxed-constexpr \
    -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__ -U__CUDA_NO_BFLOAT16_OPERATORS__ \
    -U__CUDA_NO_BFLOAT16_CONVERSIONS__ -gencode arch=compute_90,code=sm_90 -c "$src" -o "$out/$name.o" \
    >"$out/$name.log" 2>&1 &
  jobs+=("$!:$src:$name")
done
status=0
for job in "${jobs[@]}"; do
  IFS=: read -r pid src name <<<"$job"
  if wait "$pid"; then echo "nvcc_check_host: $src OK"; else echo "nvcc_check_host: $src FAILED"; status=1; fi
  grep -E "error" "$out/$name.log" | head -20 || true
done
exit $status
