#!/usr/bin/env bash
# One call on the GPU machine: sm_90 build, the CUDA scan test files (and the CPU cases of the foundation
# suite, built with this machine's g++), then ncu of the forward scan kernel (KERNEL=bwd: the backward's):
# sections and the per-SASS-line stall samples, for (8,1536,2048) and (16,1536,512). Logs go to $OUT;
# scripts/sass_regions.py summarizes the *_sass.csv files. Usage: [KERNEL=bwd] bash scripts/gpu_profile_fwd.sh [notests]
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
KERNEL=${KERNEL:-fwd}
fwd_only=(); [[ $KERNEL == fwd ]] && fwd_only=(--fwd)
source "$(dirname "$0")/gpu_build_sm90.sh" "$OUT/build.log"
if [[ ${1:-} != notests ]]; then
  for f in tests/test_selective_scan_cuda.py tests/test_selective_scan_packed.py; do
    python3 -m pytest -q -p no:cacheprovider -n 12 "$f" >"$OUT/$(basename "$f" .py).log" 2>&1
    echo "$f: exit $? :: $(tail -1 "$OUT/$(basename "$f" .py).log")"
  done | tee "$OUT/tests_summary.txt"
  OMP_NUM_THREADS=1 timeout 200 python3 -m pytest -q -p no:cacheprovider -n 14 -k "not cuda" tests/test_selective_scan.py \
    >"$OUT/cpu_suite.log" 2>&1; echo "cpu cases (g++ $(gcc -dumpversion)): exit $? :: $(tail -1 "$OUT/cpu_suite.log")" | tee -a "$OUT/tests_summary.txt"
fi
for shape in "8 1536 2048" "16 1536 512"; do
  tag=$(echo $shape | tr ' ' x)
  rep="$OUT/${KERNEL}_$tag"
  ncu --clock-control none -k "regex:${KERNEL}_kernel" --launch-skip 1 --launch-count 1 --set full --import-source yes \
    -f -o "$rep" python3 scripts/profile_scan.py $shape "${fwd_only[@]}" >"$OUT/ncu_run_$tag.log" 2>&1
  ncu -i "$rep.ncu-rep" --print-details all > "$rep.txt" 2>&1
  ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "${rep}_sass.csv" 2>&1
  grep -E "Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|Warp Cycles Per Issued|No Eligible|Eligible Warps|Waves Per SM" "$rep.txt" | head -12
  rm -f "$rep.ncu-rep"
done
(cd "$OUT" && tar czf logs.tgz *.log && rm -f *.log); ls -la "$OUT"  # at most 8 files come back
