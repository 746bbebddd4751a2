"""Quick bf16 timing of the benchmark shapes for A/B runs in alternating processes (scripts/gpu_ab_quick.sh):
forward and forward+backward medians, one line per shape (and the fp32 forward of the first two), prefixed by a tag. Usage: python scripts/ab_quick.py TAG"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
import bench_scan_cuda as b  # noqa: E402

tag = sys.argv[1] if len(sys.argv) > 1 else "?"
for shape in b.SHAPES:
    sets = b.input_sets(*shape, torch.bfloat16, False)
    f = b.bench(b.fwd, sets, warmup=5, reps=41)
    del sets
    sets = b.input_sets(*shape, torch.bfloat16, True)
    fb = b.bench(b.fwd_bwd, sets, warmup=3, reps=15)
    del sets
    torch.cuda.empty_cache()
    print(f"{tag} {shape} fwd {f:.3f} fwd+bwd {fb:.3f}", flush=True)
for shape in b.SHAPES[:2]:
    f = b.bench(b.fwd, b.input_sets(*shape, torch.float32, False), warmup=5, reps=41)
    print(f"{tag} {shape} fp32 fwd {f:.3f}", flush=True)
