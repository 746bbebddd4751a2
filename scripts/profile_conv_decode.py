"""Runs causal_conv1d forward+backward at (8, 3072, 2048, width 4) and selective_state_update at batch 64
(dim 4096, N 16) a few times each, bf16, for ncu. Usage: python scripts/profile_conv_decode.py
"""
import torch

import mamba_ext

dt = torch.bfloat16
x = torch.randn(8, 3072, 2048, device="cuda", dtype=dt, requires_grad=True)
w = torch.randn(3072, 4, device="cuda", requires_grad=True)
bias = torch.randn(3072, device="cuda", requires_grad=True)
for _ in range(2):
    y = mamba_ext.causal_conv1d(x, w, bias, "silu")
    torch.autograd.grad(y, (x, w, bias), torch.randn_like(y))

batch, dim, N = 64, 4096, 16
state = torch.randn(batch, dim, N, device="cuda")
xs, dts, zs = (torch.randn(batch, dim, device="cuda", dtype=dt) for _ in range(3))
B, C = (torch.randn(batch, N, device="cuda", dtype=dt) for _ in range(2))
A = -(torch.rand(dim, N, device="cuda") + 0.5)
D, dt_bias = torch.randn(dim, device="cuda"), 0.1 * torch.randn(dim, device="cuda")
for _ in range(2):
    mamba_ext.selective_state_update(state, xs, dts, A, B, C, D, zs, dt_bias, True)
torch.cuda.synchronize()
