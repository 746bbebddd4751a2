#!/usr/bin/env bash
# A/B timing on the GPU machine: builds the given older commit in a scratch worktree (sm_90, in place) and runs
# the CUDA scan benchmark against it, so a change can be compared with its predecessor in the same session
# (timings move by several percent between machines). Usage: bash scripts/gpu_ab_scan.sh <commit or tar file>
# (scripts/gpu_old_tree.sh says when to use a tar).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/ab"
old=/tmp/ab_worktree
bash scripts/gpu_old_tree.sh "$1" "$old" || exit 1
(cd "$old" && MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 python3 setup.py build_ext --inplace >"$OUT/ab/build.log" 2>&1) \
  || { tail -20 "$OUT/ab/build.log"; exit 1; }
cd "$old" && PYTHONPATH="$old" python3 -c "import mamba_ext; print('A/B build of $1 at', mamba_ext.__file__)"
PYTHONPATH="$old" python3 benchmarks/bench_scan_cuda.py --no-sweep --out "$OUT/ab" 2>&1 | tail -9
