#!/usr/bin/env bash
# Packs what the GPU machine should build: the committed tree (HEAD) plus this work's own files from the
# working tree, so other people's uncommitted edits never break a device run. Writes .gpu_stage/tree.tar
# (ignored through .git/info/exclude; pass it to the device tool's carry).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu_stage
mkdir -p "$(git rev-parse --git-dir)/info"; x="$(git rev-parse --git-dir)/info/exclude"; grep -qsx "/.gpu_stage/" "$x" || echo "/.gpu_stage/" >> "$x"
git archive --format=tar -o .gpu_stage/tree.tar HEAD
mine=(csrc/selective_scan/scan_common.cuh csrc/selective_scan/bwd_split.cuh csrc/selective_scan/fwd_kernel.cuh
      csrc/selective_scan/bwd_kernel.cuh csrc/selective_scan/bwd_launch.cuh csrc/selective_scan/cuda_launch.h
      csrc/selective_scan/cuda_fwd.cu csrc/selective_scan/cuda_bwd.cu csrc/selective_scan/cuda_fwd_seq_states.cu
      csrc/selective_scan/cuda_bwd_seq_states.cu csrc/selective_scan/autograd.cpp scripts tests/test_selective_scan_cuda.py
      benchmarks/bench_scan_cuda.py benchmarks/gpu_ceilings.py)
present=()
for f in "${mine[@]}"; do [[ -e $f ]] && present+=("$f"); done
tar --delete -f .gpu_stage/tree.tar "${present[@]}" 2>/dev/null || true
tar -rf .gpu_stage/tree.tar "${present[@]}"
echo "staged HEAD $(git rev-parse --short HEAD) + ${#present[@]} own paths: $(du -h .gpu_stage/tree.tar | cut -f1)"
