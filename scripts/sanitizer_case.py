"""Small forward + backward runs of the CUDA selective scan for compute-sanitizer (memcheck, racecheck).

Covers one split and several splits (the zero-start passes in one part per split and in several, and cut
short at packed sequence starts), padded tiles, grouped, constant B/C, N = 256, packed rows (seq_idx) and
packed sequences with per-sequence states (cu_seqlens: initial states, last states and their gradients).
"""
import torch

import mamba_ext

for batch, dim, seqlen, N, groups, var_BC, packed in [
        (1, 8, 70, 16, 1, True, False), (2, 64, 45, 16, 2, True, False), (1, 6, 40, 256, 1, True, False),
        (2, 8, 33, 7, 1, False, False), (200, 32, 40, 16, 1, True, False), (1, 8, 200, 16, 1, True, True),
        (1, 8, 200, 16, 1, True, "cu"), (1, 6, 90, 256, 1, True, "cu"),
        # zero-start passes in several parts per split (fp32 on an H100: the forward's 2 and the backward's 3 at
        # dim 4224, the backward's 13 at dim 64), and parts of several chunks (the backward's 9 at dim 256) cut
        # short or skipped at packed sequence starts (packed_parts.cuh)
        (1, 4224, 256, 16, 1, True, False), (1, 64, 4096, 16, 1, True, True), (1, 256, 8192, 16, 1, True, True)]:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).cuda()
    u, delta, z = r(batch, dim, seqlen), r(batch, dim, seqlen) - 1, r(batch, dim, seqlen)
    bc = (batch, groups, N, seqlen) if var_BC else (dim, N)
    B, C = r(*bc), r(*bc)
    A = -torch.rand(dim, N, generator=g).cuda() - 0.5
    leaves = [t.requires_grad_() for t in (u, delta, A, B, C)]
    # cu: sequences of 0, 37, 1, 31, 0 and the rest of the steps, each with its own initial state
    cu = torch.tensor([0, 0, 37, 38, 69, 69, seqlen], device="cuda") if packed == "cu" else None
    D, bias = r(dim).requires_grad_(), r(dim).requires_grad_()
    h0 = r(6 if packed == "cu" else batch, dim, N).requires_grad_()
    seq_idx = None
    if packed is True:
        seq_idx = (torch.arange(seqlen, device="cuda") // 37).int().expand(batch, -1).contiguous()
    out, last = mamba_ext.selective_scan(u, delta, A, B, C, D, z, bias, True, h0, return_last_state=True,
                                         seq_idx=seq_idx, cu_seqlens=cu)
    (out.square().sum() + last.sum()).backward()
    torch.cuda.synchronize()
    print(f"case {(batch, dim, seqlen, N, groups, var_BC, packed)} ok, |du| = {u.grad.norm().item():.3e}")
