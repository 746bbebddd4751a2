#!/usr/bin/env bash
# One call on the GPU machine for a scan-kernel change: sm_90 build of the working tree, the scan's CUDA tests
# (the CUDA and packed files whole, the CUDA cases of the foundation suite), the scan benchmark, then the same
# benchmark on an older commit built in a scratch worktree (A/B in one session). Logs go to $OUT.
# Usage: bash scripts/gpu_iter.sh <old commit or tar of the old tree (see gpu_ab_scan.sh)> [notests]
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/logs"
source "$(dirname "$0")/gpu_build_sm90.sh" "$OUT/logs/build.log"
if [[ ${2:-} != notests ]]; then
  for f in tests/test_selective_scan_cuda.py tests/test_selective_scan_packed.py tests/test_selective_scan.py; do
    filter=(); [[ $f == */test_selective_scan.py ]] && filter=(-k cuda)
    OMP_NUM_THREADS=1 python3 -m pytest -q -p no:cacheprovider -n 12 "${filter[@]}" "$f" >"$OUT/logs/$(basename "$f" .py).log" 2>&1
    echo "$f ${filter[*]}: exit $? :: $(tail -1 "$OUT/logs/$(basename "$f" .py).log")"
  done | tee "$OUT/tests_summary.txt"
fi
python3 benchmarks/bench_scan_cuda.py --no-sweep --out "$OUT" >"$OUT/bench_new.log" 2>&1; tail -14 "$OUT/bench_new.log"
bash scripts/gpu_ab_scan.sh "$1" >"$OUT/bench_old.log" 2>&1; tail -9 "$OUT/bench_old.log"
(cd "$OUT" && tar czf logs.tgz logs ab && rm -rf logs ab); ls "$OUT"
