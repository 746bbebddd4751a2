"""Outputs and all gradients of the CUDA scan on packed rows (seq_idx; cu_seqlens with per-sequence states),
saved by one build and compared bitwise with another's: for kernel changes that must not change a bit
(scripts/gpu_ab_bitwise.sh runs both builds in one device call).

Usage: python scripts/ab_bitwise.py save FILE       (with the build under test on PYTHONPATH)
       python scripts/ab_bitwise.py compare FILE_A FILE_B
"""
import sys
import torch
import mamba_ext


def cases():
    """Fixed-seed packed rows: sequences of a split's length, uneven ones, and 40 random ones."""
    for dim, seqlen, dtype, lengths, packing in [
            (1536, 131072, torch.bfloat16, [4096] * 32, "seq_idx"),
            (1536, 131072, torch.bfloat16, [4096] * 32, "cu_seqlens"),
            (256, 8192, torch.float32, [1000, 77, 2100, 33, 1500, 1, 2000, 1481], "seq_idx"),
            (256, 8192, torch.float32, [1000, 77, 2100, 33, 1500, 1, 2000, 1481], "cu_seqlens"),
            (1536, 65536, torch.bfloat16, None, "seq_idx")]:
        g = torch.Generator().manual_seed(seqlen + dim)
        if lengths is None:  # 40 random lengths
            cuts = torch.sort(torch.randperm(seqlen - 1, generator=g)[:39] + 1).values
            lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([seqlen])])).tolist()
        r = lambda *s: torch.randn(*s, generator=g)
        t = dict(u=r(1, dim, seqlen), delta=0.5 * r(1, dim, seqlen) - 2, A=-(0.01 + torch.rand(dim, 16, generator=g)),
                 B=r(1, 1, 16, seqlen), C=r(1, 1, 16, seqlen), D=r(dim), z=r(1, dim, seqlen), delta_bias=0.5 * r(dim))
        t = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v).cuda() for k, v in t.items()}
        kw = {}
        n = len(lengths)
        if packing == "seq_idx":
            ids = torch.repeat_interleave(torch.arange(n, dtype=torch.int32), torch.tensor(lengths))
            kw["seq_idx"] = ids[None].cuda()
            h0 = r(1, dim, 16).cuda()
        else:
            kw["cu_seqlens"] = torch.tensor([0] + lengths).cumsum(0).to(torch.int32).cuda()
            h0 = r(n, dim, 16).cuda()
        dout, dlast = r(1, dim, seqlen).to(dtype).cuda(), r(h0.shape[0], dim, 16).cuda()
        yield f"{packing} {(1, dim, seqlen)} {dtype} {n} seqs", t, h0, kw, dout, dlast


def run():
    """{case: [out, last_state, 9 gradients]} on the CPU."""
    res = {}
    for name, t, h0, kw, dout, dlast in cases():
        leaves = {k: v.requires_grad_() for k, v in dict(t, h0=h0).items()}
        args = [leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        out, last = mamba_ext.selective_scan(*args, True, leaves["h0"], True, **kw)
        grads = torch.autograd.grad([out, last], list(leaves.values()), [dout, dlast])
        res[name] = [out.cpu(), last.cpu()] + [x.cpu() for x in grads]
    return res


if sys.argv[1] == "save":
    torch.save(run(), sys.argv[2])
else:
    a, b = torch.load(sys.argv[2]), torch.load(sys.argv[3])
    for name in a:
        same = [torch.equal(x, y) for x, y in zip(a[name], b[name])]
        diff = max((x.float() - y.float()).abs().max().item() for x, y in zip(a[name], b[name]))
        print(f"{name}: {sum(same)}/{len(same)} tensors bitwise equal (out, last, 9 grads); max abs diff {diff:.3g}")
