"""Per-kernel GPU times of the CUDA selective scan (torch.profiler), to see where a shape's time goes: the
zero-start split pass, the chain, the full pass, the partial-gradient sums.

Usage: python scripts/kernel_times.py [batch dim seqlen ...]  (triples; default the two long benchmark rows)
bf16, N = 16, B/C (batch, 1, N, seqlen), z, D, delta_bias, softplus: the benchmark's inputs and calls
(gradients by autograd.grad, so nothing is accumulated into .grad).
"""
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "benchmarks")
from bench_scan_cuda import fwd, fwd_bwd, make_inputs  # noqa: E402

REPS = 5


def kernel_table(fn, t):
    for _ in range(3):
        fn(t)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPS):
            fn(t)
        torch.cuda.synchronize()
    rows = [(e.device_time_total / REPS / 1000, e.count // REPS, e.key) for e in prof.key_averages()
            if e.device_time_total > 0]
    for ms, count, name in sorted(rows, reverse=True)[:8]:
        print(f"  {ms:8.3f} ms  x{count}  {name[:110]}")
    print(f"  {sum(r[0] for r in rows):8.3f} ms  total")


def main():
    nums = [int(a) for a in sys.argv[1:]] or [1, 4096, 16384, 1, 1536, 131072]
    for i in range(0, len(nums), 3):
        shape = tuple(nums[i:i + 3])
        t = make_inputs(*shape, torch.bfloat16, grad=True)
        print(f"{shape} forward:")
        kernel_table(fwd, t)
        print(f"{shape} forward+backward:")
        kernel_table(fwd_bwd, t)


if __name__ == "__main__":
    main()
