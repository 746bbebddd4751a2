"""Runs the CUDA selective scan forward and forward+backward a few times at one shape, for ncu.

Usage: python scripts/profile_scan.py [batch dim seqlen] [--fwd]  (default 8 1536 2048, bf16, N=16, z, D, bias;
--fwd: forward only)
"""
import sys

import torch

import mamba_ext

args = [a for a in sys.argv[1:] if a != "--fwd"]
forward_only = "--fwd" in sys.argv
batch, dim, seqlen = (int(a) for a in args[:3]) if len(args) > 2 else (8, 1536, 2048)
N, dt = 16, torch.bfloat16
u, z = (torch.randn(batch, dim, seqlen, device="cuda", dtype=dt) for _ in range(2))
delta = (0.5 * torch.randn(batch, dim, seqlen, device="cuda") - 1).to(dt)
A = -(0.5 + 2 * torch.rand(dim, N, device="cuda"))
B, C = (torch.randn(batch, 1, N, seqlen, device="cuda", dtype=dt) for _ in range(2))
D, bias = torch.randn(dim, device="cuda"), torch.randn(dim, device="cuda")
leaves = [t.requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
for _ in range(3):
    out = mamba_ext.selective_scan(*leaves[:7], bias, True)
    if not forward_only:
        out.backward(torch.ones_like(out))
torch.cuda.synchronize()
