"""CUDA-only checks of the selective scan: CUDA against the CPU kernels and the reference, bitwise
reproducible backward, 64-bit offsets (more than 2^31 elements), opcheck and torch.compile on CUDA tensors.

Skipped unless a GPU is visible and the library was built with its CUDA kernels.
"""
import pytest
import torch

import mamba_ext
from mamba_ext.reference import selective_scan_ref

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and mamba_ext.has_cuda()),
                                reason="needs a GPU and mamba_ext built with CUDA")

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


def make_inputs(batch, dim, seqlen, N, dtype, device, groups=1, var_B=True, var_C=True, z=True, D=True,
                bias=True, init=True):
    """Fresh random inputs (never zeros); A < 0 and delta around softplus(-1) keep the scan stable."""
    t = {"u": torch.randn(batch, dim, seqlen, device=device).to(dtype),
         "delta": (0.5 * torch.randn(batch, dim, seqlen, device=device) - 1).to(dtype),
         "A": -(0.5 + 2 * torch.rand(dim, N, device=device))}
    bc_shape = (batch, groups, N, seqlen) if groups > 1 else (batch, N, seqlen)
    t["B"] = torch.randn(*bc_shape, device=device).to(dtype) if var_B else torch.randn(dim, N, device=device)
    t["C"] = torch.randn(*bc_shape, device=device).to(dtype) if var_C else torch.randn(dim, N, device=device)
    t["D"] = torch.randn(dim, device=device) if D else None
    t["z"] = torch.randn(batch, dim, seqlen, device=device).to(dtype) if z else None
    t["delta_bias"] = 0.5 * torch.randn(dim, device=device) if bias else None
    t["initial_state"] = torch.randn(batch, dim, N, device=device) if init else None
    return t


def scan(t, softplus=True):
    return mamba_ext.selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
                                    softplus, t["initial_state"], return_last_state=True)


def fwd_bwd(t, dout, dlast):
    leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in t.items()}
    out, last = scan(leaves)
    torch.autograd.backward([out, last], [dout, dlast])
    return out.detach(), last.detach(), {k: v.grad for k, v in leaves.items() if v is not None}


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


CONFIGS = [
    dict(batch=2, dim=6, seqlen=1, N=16),
    dict(batch=2, dim=6, seqlen=33, N=16),
    dict(batch=2, dim=40, seqlen=257, N=16, groups=2),
    dict(batch=1, dim=3, seqlen=2049, N=16),                       # many time splits
    dict(batch=4, dim=4096, seqlen=70, N=16),                      # no split, unaligned rows
    dict(batch=4, dim=4096, seqlen=72, N=16),                      # no split, 16-byte aligned rows
    dict(batch=2, dim=8, seqlen=100, N=7, var_B=False),
    dict(batch=2, dim=8, seqlen=100, N=64, var_C=False, z=False),
    dict(batch=1, dim=4, seqlen=65, N=256, D=False, bias=False, init=False),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_cuda_matches_cpu_fp32(cfg):
    t = make_inputs(dtype=torch.float32, device="cuda", **cfg)
    out = torch.randn(cfg["batch"], cfg["dim"], cfg["seqlen"], device="cuda")
    dlast = torch.randn(cfg["batch"], cfg["dim"], cfg["N"], device="cuda")
    o_g, l_g, g_g = fwd_bwd(t, out, dlast)
    t_cpu = {k: (v.cpu() if v is not None else None) for k, v in t.items()}
    o_c, l_c, g_c = fwd_bwd(t_cpu, out.cpu(), dlast.cpu())
    assert rel_err(o_g.cpu(), o_c) < 1e-5
    assert rel_err(l_g.cpu(), l_c) < 1e-5
    for k in g_c:
        assert rel_err(g_g[k].cpu(), g_c[k]) < 1e-4, k


# Long rows with few channels: time is split and the zero-start passes run each split as several consecutive
# parts (set_local_parts in scan_layout.cuh). On an H100 (132 SMs): (1, 1536, 672) fp32 runs the backward's
# zero-start pass in parts of 2 and 1 chunks; (1, 1536, 896) bf16 the forward's in parts of 2 and 1 and the
# backward's in 2 and 2; (1, 64, 16384) the forward's in one chunk per part and the backward's in 26 parts of
# 2, with packed sequences too. (1, 256, 8192) packs sequences whose starts fall inside parts of several
# chunks (forward: 4 chunks per split, 2 per part in bf16; backward: 9 or 13 parts of 2-3 chunks), so the
# zero-start passes skip parts and stop short at starts
# (packed_parts.cuh). Its decays are slow (a state remembers ~1000-10000 steps), so a part skipped or cut
# wrongly would change many outputs, not the few steps the default inputs (~2-7 steps of memory) remember.
MANY_STARTS = (1000, 77, 2100, 33, 1500, 1, 2000)
LONG_ROWS = [
    dict(dim=1536, seqlen=672, dtype=torch.float32),
    dict(dim=1536, seqlen=896, dtype=torch.bfloat16),
    dict(dim=64, seqlen=16384, dtype=torch.float16),
    dict(dim=64, seqlen=16384, dtype=torch.bfloat16, packing="seq_idx"),
    dict(dim=64, seqlen=16384, dtype=torch.bfloat16, packing="cu_seqlens"),
    dict(dim=256, seqlen=8192, dtype=torch.float32, packing="seq_idx", lengths=MANY_STARTS, slow=True),
    dict(dim=256, seqlen=8192, dtype=torch.bfloat16, packing="seq_idx", lengths=MANY_STARTS, slow=True),
    dict(dim=256, seqlen=8192, dtype=torch.float32, packing="cu_seqlens", lengths=MANY_STARTS, slow=True),
]


def long_row_id(cfg):
    return "-".join(f"{k}{v}" if k != "lengths" else "many_starts" for k, v in cfg.items() if k != "slow")


@pytest.mark.parametrize("cfg", LONG_ROWS, ids=long_row_id)
def test_long_rows_in_split_parts_match_cpu(cfg):
    dtype, packing = cfg["dtype"], cfg.get("packing")
    t = make_inputs(1, cfg["dim"], cfg["seqlen"], 16, dtype, "cuda")
    if cfg.get("slow"):  # dt ~0.05 and A in -[0.002, 0.022]
        t["A"] = -(0.002 + 0.02 * torch.rand(cfg["dim"], 16, device="cuda"))
        t["delta"] = (0.5 * torch.randn(1, cfg["dim"], cfg["seqlen"], device="cuda") - 3).to(dtype)
    kw = {}
    if packing:
        lengths = list(cfg.get("lengths", (5000, 1, 7000)))
        lengths.append(cfg["seqlen"] - sum(lengths))
        starts = torch.tensor([0] + lengths).cumsum(0)
        if packing == "seq_idx":
            kw["seq_idx"] = torch.repeat_interleave(torch.arange(len(lengths), dtype=torch.int32),
                                                    torch.tensor(lengths))[None].cuda()
        else:
            kw["cu_seqlens"] = starts.to(torch.int32).cuda()
            t["initial_state"] = torch.randn(len(lengths), cfg["dim"], 16, device="cuda")
    rows = len(t["initial_state"])
    dout = torch.randn(1, cfg["dim"], cfg["seqlen"], device="cuda").to(dtype)
    dlast = torch.randn(rows, cfg["dim"], 16, device="cuda")

    def run(inputs, dout, dlast, **extra):
        leaves = {k: (v.detach().clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
        out, last = mamba_ext.selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"],
                                             leaves["D"], leaves["z"], leaves["delta_bias"], True,
                                             leaves["initial_state"], True, **extra)
        torch.autograd.backward([out, last], [dout, dlast])
        return [out.detach(), last.detach()], {k: v.grad for k, v in leaves.items() if v is not None}

    ours, ours_grads = run(t, dout, dlast, **kw)
    # The CPU kernels on the same (rounded) inputs in fp32.
    cpu, cpu_grads = run({k: (v.float().cpu() if v is not None else None) for k, v in t.items()},
                         dout.float().cpu(), dlast.cpu(), **{k: v.cpu() for k, v in kw.items()})
    exact = dtype == torch.float32
    # Slow decays: the two exp2 implementations' rounding compounds over thousands of steps, so fp32 gets 10x.
    slack = 10 if cfg.get("slow") else 1
    for a, b in zip(ours, cpu):
        assert rel_err(a.float().cpu(), b) < (slack * 1e-5 if exact else 1e-2)  # 16-bit outputs are rounded
    for name, g in cpu_grads.items():
        assert rel_err(ours_grads[name].float().cpu(), g) < (slack * 1e-4 if exact else 2e-2), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_against_fp64_reference(dtype):
    t = make_inputs(2, 64, 300, 16, dtype, "cuda", groups=2)
    out, last = scan(t)
    t64 = {k: (v.double() if v is not None else None) for k, v in t.items()}
    ref_out, ref_last = selective_scan_ref(t64["u"], t64["delta"], t64["A"], t64["B"], t64["C"], t64["D"],
                                           t64["z"], t64["delta_bias"], True, t64["initial_state"], True)
    # The kernel's only low-precision step is rounding out to dtype: within a few ulps of the fp64 answer.
    assert rel_err(out, ref_out) < (4e-3 if dtype == torch.bfloat16 else 5e-4)
    assert rel_err(last, ref_last) < 1e-5


def test_deterministic_backward_is_bitwise_reproducible():
    t = make_inputs(2, 256, 500, 16, torch.bfloat16, "cuda")
    dout = torch.randn_like(t["u"])
    dlast = torch.randn(2, 256, 16, device="cuda")
    torch.use_deterministic_algorithms(True)
    try:
        runs = [fwd_bwd(t, dout, dlast)[2] for _ in range(3)]
    finally:
        torch.use_deterministic_algorithms(False)
    for k in runs[0]:
        assert all(torch.equal(runs[0][k], r[k]) for r in runs[1:]), k


def test_more_than_2_to_31_elements():
    """(1, 2048, 1_100_000) bf16: offsets past 2^31 elements. Rows are checked against the CPU kernel."""
    if torch.cuda.get_device_properties(0).total_memory < 40 * 2**30:
        pytest.skip("needs about 30 GB of GPU memory")
    batch, dim, seqlen, N = 1, 2048, 1_100_000, 16
    assert batch * dim * seqlen > 2**31
    t = make_inputs(batch, dim, seqlen, N, torch.bfloat16, "cuda", init=False)
    with torch.no_grad():
        out, last = scan(t)
    rows = [0, 1024, dim - 1]
    sub = {k: t[k][:, rows] for k in ("u", "delta", "z")}
    sub.update(A=t["A"][rows], B=t["B"], C=t["C"], D=t["D"][rows], delta_bias=t["delta_bias"][rows],
               initial_state=None)
    cpu = {k: (v.cpu().contiguous() if v is not None else None) for k, v in sub.items()}
    out_c, last_c = scan(cpu)
    tail = slice(seqlen - 4096, seqlen)
    assert rel_err(out[:, rows, tail].cpu(), out_c[..., tail]) < 1e-2
    assert rel_err(last[:, rows].cpu(), last_c) < 1e-4
    assert torch.isfinite(out[:, -1]).all()


def test_opcheck_cuda():
    t = make_inputs(2, 8, 70, 16, torch.float32, "cuda")
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], True, t["initial_state"])
    torch.library.opcheck(torch.ops.mamba_ext.selective_scan_fwd, args + (None, 32))
    _, _, states = torch.ops.mamba_ext.selective_scan_fwd(*args, None, 32)
    dout = torch.randn_like(t["u"])
    dlast = torch.randn_like(t["initial_state"])
    torch.library.opcheck(torch.ops.mamba_ext.selective_scan_bwd,
                          (dout, dlast) + args + (None, states, 32, True))
    leaves = tuple(a.clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.mamba_ext.selective_scan, leaves)


def test_torch_compile_fullgraph_cuda():
    t = make_inputs(2, 16, 100, 16, torch.float32, "cuda")

    def f(u, delta, A, B, C, D, z, bias, h0):
        out, last = mamba_ext.selective_scan(u, delta, A, B, C, D, z, bias, True, h0, return_last_state=True)
        return (out * out).sum() + last.sum()

    args = [t[k] for k in GRAD_NAMES[:8]] + [t["initial_state"]]
    eager_args = [a.clone().requires_grad_() for a in args]
    comp_args = [a.clone().requires_grad_() for a in args]
    f(*eager_args).backward()
    torch.compile(f, fullgraph=True)(*comp_args).backward()
    for a, b in zip(eager_args, comp_args):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_float64_is_rejected_on_cuda():
    t = make_inputs(1, 4, 10, 4, torch.float64, "cuda", var_B=False, var_C=False)
    t.update({k: t[k].double() for k in ("A", "B", "C", "D", "delta_bias", "initial_state")})
    with pytest.raises(RuntimeError, match="mamba_ext.selective_scan_fwd: .*float64"):
        scan(t)
