#!/usr/bin/env bash
# A/B of the scan on the GPU machine in alternating processes: the working tree (B) against an old tree packed
# with `tar cf .ab_old.tar ...` or `git archive -o .ab_old.tar <commit>` (A; name it in the device call's carry).
# Both built for sm_90 in place; then scripts/ab_quick.py runs A, B, A, B, A, B. Usage: bash scripts/gpu_ab_quick.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
old=/tmp/ab_old; rm -rf "$old"; mkdir -p "$old"; tar -xf .ab_old.tar -C "$old" && cp setup.py "$old/setup.py"
(MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace >"$OUT/build_new.log" 2>&1) &
(cd "$old" && MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace >"$OUT/build_old.log" 2>&1) &
wait
for i in 1 2 3; do
  PYTHONPATH="$old" python3 scripts/ab_quick.py "A$i" 2>&1 | tee -a "$OUT/ab_quick.txt"
  PYTHONPATH="$PWD" python3 scripts/ab_quick.py "B$i" 2>&1 | tee -a "$OUT/ab_quick.txt"
done
