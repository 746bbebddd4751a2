"""selective_state_update against the pure-PyTorch reference and against the parallel scan; opcheck,
torch.compile, state pools with padding rows, bad inputs."""
import itertools

import pytest
import torch
from torch.library import opcheck

import mamba_ext
from conftest import rel_err
from mamba_ext.reference import selective_state_update_ref


def make_inputs(batch=3, dim=8, dstate=16, groups=1, dtype=torch.float32, device="cpu", D=True, z=True,
                dt_bias=True, dt_softplus=True, pool=0, pad_rows=()):
    """Kwargs for mamba_ext.selective_state_update; random values that keep the step stable (dt > 0, A < 0)."""
    g = dict(dtype=dtype, device=device)
    sdtype = torch.float64 if dtype == torch.float64 else torch.float32
    s = dict(dtype=sdtype, device=device)
    bc_shape = (batch, dstate) if groups == 1 else (batch, groups, dstate)
    kw = dict(state=torch.randn(pool or batch, dim, dstate, **s), x=torch.randn(batch, dim, **g),
              dt=(torch.randn(batch, dim, **g) * 0.5 - 1.0) if dt_softplus else torch.rand(batch, dim, **g) * 0.3 + 0.02,
              A=-(torch.rand(dim, dstate, **s) * 1.5 + 0.5), B=torch.randn(bc_shape, **g), C=torch.randn(bc_shape, **g),
              D=torch.randn(dim, **s) if D else None, z=torch.randn(batch, dim, **g) if z else None,
              dt_bias=torch.randn(dim, **s) * 0.1 if dt_bias else None, dt_softplus=dt_softplus,
              state_batch_indices=None)
    if pool:
        idx = torch.randperm(pool)[:batch].int()
        idx[list(pad_rows)] = -1
        kw["state_batch_indices"] = idx.to(device)
    return kw


def to64(kw):
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}


OPTIONS = list(itertools.product([False, True], repeat=4))  # D, z, dt_bias, dt_softplus


@pytest.mark.parametrize("D,z,dt_bias,dt_softplus", OPTIONS)
@pytest.mark.parametrize("groups", [1, 2])
# The CUDA kernel moves 16 states of a row per pass: 16 and 64 take its vector path (one and four passes);
# 5 and 36 its generic path (a partial group, a partial pass).
@pytest.mark.parametrize("dstate", [16, 5, 64, 36])
def test_matches_reference(D, z, dt_bias, dt_softplus, groups, dstate, device):
    kw = make_inputs(dstate=dstate, groups=groups, device=device, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
    ref = to64(kw)
    ref["state"] = ref["state"].clone()
    ref_out = selective_state_update_ref(**ref)
    out = mamba_ext.selective_state_update(**kw)
    assert out.shape == kw["x"].shape and out.dtype == kw["x"].dtype
    assert rel_err(out, ref_out) < 1e-5
    assert rel_err(kw["state"], ref["state"]) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(dtype, device):
    kw = make_inputs(dim=64, dtype=dtype, device=device)
    ref = to64(kw)
    ref["state"] = ref["state"].clone()
    ref_out = selective_state_update_ref(**ref)
    out = mamba_ext.selective_state_update(**kw)
    assert out.dtype == dtype and kw["state"].dtype == torch.float32
    assert rel_err(out, ref_out) < 1e-2
    assert rel_err(kw["state"], ref["state"]) < 1e-5  # the state stays fp32; its inputs were exact


@pytest.mark.parametrize("dstate", [16, 32])
def test_many_channels_in_groups(dstate, device):
    """Channels spread over several CUDA blocks with a partial last block, and groups that cross blocks."""
    kw = make_inputs(batch=3, dim=300, dstate=dstate, groups=3, device=device)
    ref = to64(kw)
    ref["state"] = ref["state"].clone()
    ref_out = selective_state_update_ref(**ref)
    out = mamba_ext.selective_state_update(**kw)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(kw["state"], ref["state"]) < 1e-6


def test_state_pool_with_padding_rows(device):
    kw = make_inputs(batch=5, pool=11, pad_rows=(0, 3), device=device)
    before = kw["state"].clone()
    ref = to64(kw)
    ref["state"] = ref["state"].clone()
    ref_out = selective_state_update_ref(**ref)
    out = mamba_ext.selective_state_update(**kw)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(kw["state"], ref["state"]) < 1e-6
    assert (out[[0, 3]] == 0).all()
    used = kw["state_batch_indices"][kw["state_batch_indices"] >= 0].long().cpu()
    untouched = torch.ones(11, dtype=torch.bool)
    untouched[used] = False
    assert torch.equal(kw["state"][untouched.to(device)], before[untouched.to(device)])


def test_non_contiguous_inputs(device):
    """Strided x/dt/z/B/C and a state that is a slice of a larger buffer (unit stride along N only)."""
    kw = make_inputs(batch=4, dim=8, dstate=16, device=device)
    big = torch.randn(4, 12, 20, device=device)
    big[:, 2:10, 3:19] = kw["state"]
    ref = to64(kw)
    ref["state"] = ref["state"].clone()
    ref_out = selective_state_update_ref(**ref)
    strided = {k: (v.t().contiguous().t() if k in ("x", "dt", "z", "B", "C") else v) for k, v in kw.items()}
    strided["state"] = big[:, 2:10, 3:19]
    out = mamba_ext.selective_state_update(**strided)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(big[:, 2:10, 3:19], ref["state"]) < 1e-6


@pytest.mark.parametrize("groups,prefix,steps", [(1, 9, 4), (2, 1, 3), (1, 0, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_equals_parallel_scan(groups, prefix, steps, dtype, device):
    """selective_scan over a prefix, then one selective_state_update per token == selective_scan on all."""
    batch, dim, N, L = 2, 8, 16, prefix + steps
    g = dict(dtype=dtype, device=device)
    u, z = torch.randn(batch, dim, L, **g), torch.randn(batch, dim, L, **g)
    delta = torch.randn(batch, dim, L, **g) * 0.5 - 1.0
    A = -(torch.rand(dim, N, device=device) * 1.5 + 0.5)
    B, C = torch.randn(batch, groups, N, L, **g), torch.randn(batch, groups, N, L, **g)
    D, dt_bias = torch.randn(dim, device=device), torch.randn(dim, device=device) * 0.1
    h0 = torch.randn(batch, dim, N, device=device)
    full, full_state = mamba_ext.selective_scan(u, delta, A, B, C, D, z, dt_bias, True, h0, return_last_state=True)
    if prefix:
        head, state = mamba_ext.selective_scan(u[..., :prefix], delta[..., :prefix], A, B[..., :prefix],
                                               C[..., :prefix], D, z[..., :prefix], dt_bias, True, h0,
                                               return_last_state=True)
        assert rel_err(head, full[..., :prefix]) < 1e-6
    else:
        state = h0.clone()
    outs = [mamba_ext.selective_state_update(state, u[..., t], delta[..., t], A, B[..., t], C[..., t], D,
                                             z[..., t], dt_bias, True) for t in range(prefix, L)]
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # low precision: the outputs are rounded once each
    assert rel_err(torch.stack(outs, dim=-1), full[..., prefix:]) < tol
    assert rel_err(state, full_state) < 1e-5


def test_opcheck(device):
    for kw in (make_inputs(device=device), make_inputs(groups=2, pool=6, pad_rows=(1,), device=device, z=False)):
        opcheck(torch.ops.mamba_ext.selective_state_update.default,
                tuple(kw[k] for k in ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "dt_softplus",
                                      "state_batch_indices")))


def test_compile_fullgraph_matches_eager(device):
    kw = make_inputs(pool=5, pad_rows=(2,), device=device)
    state_eager = kw["state"].clone()
    eager = [mamba_ext.selective_state_update(**{**kw, "state": state_eager}) for _ in range(3)]
    torch._dynamo.reset()
    fn = torch.compile(lambda **k: mamba_ext.selective_state_update(**k) + 1, fullgraph=True)
    compiled = [fn(**kw) - 1 for _ in range(3)]
    for c, e in zip(compiled, eager):
        assert torch.allclose(c, e, atol=1e-6)
    assert torch.allclose(kw["state"], state_eager, atol=1e-6)


def test_rejects_grad():
    kw = make_inputs()
    kw["x"].requires_grad_()
    with pytest.raises(RuntimeError, match="selective_state_update"):
        mamba_ext.selective_state_update(**kw).sum().backward()


def bad_cases(device):
    kw = make_inputs(batch=2, dim=4, dstate=8, device=device)
    yield {**kw, "x": kw["x"][0]}, "x must have 2 dimensions"
    yield {**kw, "x": kw["x"].int()}, "x must be float32"
    yield {**kw, "state": kw["state"].half()}, "state must have dtype"
    yield {**kw, "state": kw["state"][..., :4]}, "state must have shape"
    yield {**kw, "state": kw["state"][:1]}, "state has 1 rows but x has batch 2"
    yield {**kw, "state": kw["state"].transpose(1, 2).contiguous().transpose(1, 2)}, "state must be contiguous along N"
    yield {**kw, "dt": kw["dt"][:, :3]}, "dt must have shape"
    yield {**kw, "A": kw["A"].half()}, "A must have dtype"
    yield {**kw, "B": kw["B"][:, :5]}, "B must have shape"
    yield {**kw, "C": torch.randn(2, 3, 8, device=device)}, "C has 3 groups"
    yield {**kw, "D": torch.randn(5, device=device)}, "D must have shape"
    yield {**kw, "z": kw["z"].double()}, "z must have dtype"
    yield {**kw, "state_batch_indices": torch.zeros(2, dtype=torch.int64, device=device)}, "state_batch_indices must have dtype"
    if device == "cpu":
        yield {**kw, "state_batch_indices": torch.tensor([0, 2], dtype=torch.int32)}, "out of range"
    else:
        yield {**kw, "A": kw["A"].cpu()}, "A is on cpu"


@pytest.mark.parametrize("i", range(14))
def test_bad_inputs_name_op_and_argument(i, device):
    kw, message = list(bad_cases(device))[i]
    state_before = kw["state"].clone()
    with pytest.raises(RuntimeError, match="mamba_ext.selective_state_update: .*" + message):
        mamba_ext.selective_state_update(**kw)
    assert torch.equal(kw["state"], state_before)


def test_empty(device):
    kw = make_inputs(batch=0, device=device)
    assert mamba_ext.selective_state_update(**kw).shape == (0, 8)
    kw = make_inputs(dim=0, device=device)
    assert mamba_ext.selective_state_update(**kw).shape == (3, 0)
