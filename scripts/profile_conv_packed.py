"""Where the time of a packed causal_conv1d row goes on CUDA: the same (1, dim, L) row unpacked, with seq_idx,
with cu_seqlens (no states) and with cu_seqlens and per-sequence states; forward and forward+backward through
autograd (10 calls queued back to back, CUDA events), then a torch.profiler table of the per-sequence-states
step (GPU kernels and host time). Usage on the GPU machine: python scripts/profile_conv_packed.py
"""
import os
import sys

import torch

import mamba_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
from bench_conv_update import time_ms  # noqa: E402  (CUDA-event median of queued calls)

dim, L, n, W = 3072, 16384, 8, 4
g = dict(device="cuda", dtype=torch.bfloat16)
x = torch.randn(1, dim, L, **g, requires_grad=True)
w = (torch.randn(dim, W, **g) / 2).requires_grad_()
bias = torch.randn(dim, **g, requires_grad=True)
dout = torch.randn(1, dim, L, **g)
cu = torch.arange(n + 1, device="cuda", dtype=torch.int32) * (L // n)
seq_idx = (torch.arange(L, device="cuda") // (L // n)).int()[None].contiguous()
init = torch.randn(n, dim, W - 1, **g, requires_grad=True)
dfinal = torch.randn(n, dim, W - 1, **g)


def step(kind, backward):
    kw = {"seq_idx": seq_idx} if kind == "seq_idx" else {"cu_seqlens": cu} if kind.startswith("cu") else {}
    if kind == "cu_states":
        out, final = mamba_ext.causal_conv1d(x, w, bias, "silu", init, True, **kw)
        if backward:
            torch.autograd.grad((out, final), (x, w, bias, init), (dout, dfinal))
    else:
        out = mamba_ext.causal_conv1d(x, w, bias, "silu", **kw)
        if backward:
            torch.autograd.grad(out, (x, w, bias), dout)


for kind in ("unpacked", "seq_idx", "cu", "cu_states"):
    fwd = time_ms(lambda: step(kind, False), warmup=3, reps=30, inner=10)
    fwd_bwd = time_ms(lambda: step(kind, True), warmup=3, reps=30, inner=10)
    print(f"{kind:10s} fwd {fwd:.4f} ms   fwd+bwd {fwd_bwd:.4f} ms")
activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
with torch.profiler.profile(activities=activities) as prof:
    for _ in range(5):
        step("cu_states", True)
    torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=60))
