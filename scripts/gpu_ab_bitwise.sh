#!/usr/bin/env bash
# Bitwise A/B of the scan on packed rows (scripts/ab_bitwise.py): builds the working tree (B) and an old tree
# (A: a commit or a tar of it, scripts/gpu_old_tree.sh; default .ab_old.tar) for sm_90, saves both builds'
# outputs and gradients, and compares them. Usage on the device: bash scripts/gpu_ab_bitwise.sh [commit or tar]
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
bash scripts/gpu_old_tree.sh "${1:-.ab_old.tar}" /tmp/A >/dev/null || exit 1
(MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace > $OUT/build_B.log 2>&1) & pb=$!
(cd /tmp/A && MAX_JOBS=8 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace > $OUT/build_A.log 2>&1) & pa=$!
wait $pb || { tail -30 $OUT/build_B.log; exit 1; }
wait $pa || { tail -30 $OUT/build_A.log; exit 1; }
(cd /tmp/A && PYTHONPATH=/tmp/A python3 $OLDPWD/scripts/ab_bitwise.py save /tmp/a.pt) || exit 1
PYTHONPATH=$PWD python3 scripts/ab_bitwise.py save /tmp/b.pt || exit 1
PYTHONPATH=$PWD python3 scripts/ab_bitwise.py compare /tmp/a.pt /tmp/b.pt | tee $OUT/bitwise.txt
