#!/usr/bin/env bash
# A/B of the scan on the GPU machine in alternating processes: the working tree (B) against an old tree (A),
# a commit or a tar of it (scripts/gpu_old_tree.sh; default .ab_old.tar). Both are built for sm_90 in place;
# then scripts/ab_quick.py runs A, B, A, B, A, B. Usage: bash scripts/gpu_ab_quick.sh [commit or tar]
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
old=/tmp/ab_old
bash scripts/gpu_old_tree.sh "${1:-.ab_old.tar}" "$old" || exit 1
(MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace >"$OUT/build_new.log" 2>&1) & new_build=$!
(cd "$old" && MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace >"$OUT/build_old.log" 2>&1) &
old_build=$!
wait $new_build || { tail -20 "$OUT/build_new.log"; exit 1; }
wait $old_build || { tail -20 "$OUT/build_old.log"; exit 1; }
echo "A: ${1:-.ab_old.tar}, B: the working tree; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); $(date -u +%F)" \
  | tee "$OUT/ab_quick.txt"
for i in 1 2 3; do
  PYTHONPATH="$old" python3 scripts/ab_quick.py "A$i" 2>&1 | tee -a "$OUT/ab_quick.txt"
  PYTHONPATH="$PWD" python3 scripts/ab_quick.py "B$i" 2>&1 | tee -a "$OUT/ab_quick.txt"
done
