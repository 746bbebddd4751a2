"""causal_conv1d and causal_conv1d_update against the pure-PyTorch references: values, all gradients,
gradcheck, opcheck, torch.compile, packed sequences (seq_idx, cu_seqlens), bad inputs."""
from dataclasses import dataclass, replace

import pytest
import torch
from torch.library import opcheck

import mamba_ext
from conftest import cu_of, cuda_ready, forward_and_grads, rel_err
from mamba_ext.reference import causal_conv1d_ref, causal_conv1d_update_ref

SEQLENS = (1, 7, 130, 2060)  # straddle the CUDA kernels' 2048-step chunks


@dataclass(frozen=True)
class ConvCase:
    batch: int = 2
    dim: int = 6
    seqlen: int = 7
    width: int = 4
    bias: bool = True
    silu: bool = True
    initial_states: bool = False
    final_states: bool = False
    seq_idx: bool = False

    def id(self):
        flags = [k for k in ("bias", "silu", "initial_states", "final_states", "seq_idx") if getattr(self, k)]
        return f"w{self.width}-L{self.seqlen}-" + ("+".join(flags) or "plain")


OPTION_CASES = [ConvCase(bias=False, silu=False), ConvCase(), ConvCase(initial_states=True, final_states=True),
                ConvCase(seq_idx=True, final_states=True),
                ConvCase(initial_states=True, final_states=True, seq_idx=True, silu=False)]


def random_seq_idx(batch, seqlen, device):
    """Sorted int32 ids per row: random cut points, so sequences of length 1 and cuts near the start occur."""
    cuts = torch.rand(batch, seqlen, device=device) < min(0.5, 4.0 / max(seqlen, 1))
    cuts[:, 0] = False
    return torch.cumsum(cuts.int(), dim=1).int()


def make_inputs(case, dtype, device, requires_grad=False):
    g = dict(dtype=dtype, device=device)
    kw = dict(x=torch.randn(case.batch, case.dim, case.seqlen, **g),
              weight=torch.randn(case.dim, case.width, **g) / case.width ** 0.5,
              bias=torch.randn(case.dim, **g) if case.bias else None,
              activation="silu" if case.silu else None,
              initial_states=torch.randn(case.batch, case.dim, case.width - 1, **g) if case.initial_states else None,
              return_final_states=case.final_states,
              seq_idx=random_seq_idx(case.batch, case.seqlen, device) if case.seq_idx else None)
    for k in ("x", "weight", "bias", "initial_states"):
        if kw[k] is not None:
            kw[k].requires_grad_(requires_grad)
    return kw


def tensor_inputs(kw):
    return [(k, kw[k]) for k in ("x", "weight", "bias", "initial_states") if kw[k] is not None]


def cast(kw, dtype):
    return {k: (v.detach().to(dtype).requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor)
                and v.is_floating_point() else v) for k, v in kw.items()}


@pytest.mark.parametrize("seqlen", SEQLENS)
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("case", OPTION_CASES, ids=ConvCase.id)
def test_matches_reference_fp32(case, width, seqlen, device):
    kw = make_inputs(replace(case, width=width, seqlen=seqlen), torch.float32, device, requires_grad=True)
    outs, grads = forward_and_grads(mamba_ext.causal_conv1d, kw, grad_seed=1)
    ref_outs, ref_grads = forward_and_grads(causal_conv1d_ref, cast(kw, torch.float64), grad_seed=1)
    assert len(outs) == (2 if case.final_states else 1)
    for o, r in zip(outs, ref_outs):
        assert o.dtype == torch.float32 and o.device.type == device
        assert rel_err(o, r) < 1e-5
    for name, g in grads.items():
        assert g.dtype == kw[name].dtype and g.shape == kw[name].shape, name
        assert rel_err(g, ref_grads[name]) < 1e-5, f"d{name}: {rel_err(g, ref_grads[name]):.2e}"


def test_width_over_cuda_limit_on_cpu():
    kw = make_inputs(ConvCase(width=7, seqlen=20, initial_states=True, final_states=True, seq_idx=True),
                     torch.float32, "cpu", requires_grad=True)
    outs, grads = forward_and_grads(mamba_ext.causal_conv1d, kw, grad_seed=3)
    ref_outs, ref_grads = forward_and_grads(causal_conv1d_ref, cast(kw, torch.float64), grad_seed=3)
    for o, r in zip(outs, ref_outs):
        assert rel_err(o, r) < 1e-5
    for name, g in grads.items():
        assert rel_err(g, ref_grads[name]) < 1e-5, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seqlen", [7, 2060])
def test_low_precision_within_twice_pytorch_error(dtype, seqlen, device):
    """Error vs an fp32 reference is at most 2x that of the same math done by PyTorch in dtype, or within one
    rounding of dtype (PyTorch may itself round only once, and a few dozen values make the ratio noisy)."""
    case = ConvCase(seqlen=seqlen, dim=16, initial_states=True, final_states=True)
    kw = make_inputs(case, dtype, device, requires_grad=True)
    outs, grads = forward_and_grads(mamba_ext.causal_conv1d, kw, grad_seed=2)
    # float64, not float32: on CUDA PyTorch's fp32 convolution may run in TF32, about fp16's precision.
    exact_outs, exact_grads = forward_and_grads(causal_conv1d_ref, cast(kw, torch.float64), 2)
    low_outs, low_grads = forward_and_grads(causal_conv1d_ref, cast(kw, dtype), 2)
    rounding = torch.finfo(dtype).eps

    def bound(low, exact):
        # PyTorch's own half-precision weight gradient can overflow (seen on CUDA at fp16): then its error is
        # no yardstick, and the kernel (fp32 accumulation) must stay within a few roundings instead.
        if not torch.isfinite(low).all():
            return 8 * rounding
        return max(2 * rel_err(low, exact), rounding)

    for o, e, lo in zip(outs, exact_outs, low_outs):
        assert o.dtype == dtype
        assert rel_err(o, e) <= bound(lo, e)
    for name, g in grads.items():
        assert g.dtype == dtype
        assert rel_err(g, exact_grads[name]) <= bound(low_grads[name], exact_grads[name]), name


@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.float64])
def test_weight_in_another_dtype_than_bf16_x(weight_dtype, device):
    kw = make_inputs(ConvCase(seqlen=33), torch.bfloat16, device, requires_grad=True)
    kw["weight"] = kw["weight"].detach().to(weight_dtype).requires_grad_()
    kw["bias"] = kw["bias"].detach().to(weight_dtype).requires_grad_()
    outs, grads = forward_and_grads(mamba_ext.causal_conv1d, kw, grad_seed=4)
    ref_outs, ref_grads = forward_and_grads(causal_conv1d_ref, cast(kw, torch.float64), 4)
    assert outs[0].dtype == torch.bfloat16
    assert grads["weight"].dtype == weight_dtype and grads["bias"].dtype == weight_dtype
    assert rel_err(outs[0], ref_outs[0]) < 1e-2
    for name, g in grads.items():
        assert rel_err(g, ref_grads[name]) < 2e-2, name


@pytest.mark.parametrize("width", [2, 4, 5])
@pytest.mark.parametrize("seq_idx", [False, True])
def test_gradcheck_float64(width, seq_idx):
    case = ConvCase(batch=2, dim=3, seqlen=9, width=width, initial_states=True, final_states=True, seq_idx=seq_idx)
    kw = make_inputs(case, torch.float64, "cpu", requires_grad=True)
    names = [k for k, _ in tensor_inputs(kw)]
    fn = lambda *t: mamba_ext.causal_conv1d(**{**kw, **dict(zip(names, t))})  # noqa: E731
    assert torch.autograd.gradcheck(fn, [kw[k] for k in names])


def test_gradcheck_seqlen_shorter_than_state():
    """seqlen < width - 1: final_states reach back into the initial states."""
    kw = make_inputs(ConvCase(batch=1, dim=2, seqlen=1, width=4, initial_states=True, final_states=True),
                     torch.float64, "cpu", requires_grad=True)
    names = [k for k, _ in tensor_inputs(kw)]
    fn = lambda *t: mamba_ext.causal_conv1d(**{**kw, **dict(zip(names, t))})  # noqa: E731
    assert torch.autograd.gradcheck(fn, [kw[k] for k in names])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_seq_idx_packed_equals_each_sequence_alone(dtype, device):
    """A packed row equals running each of its sequences alone (values, final states and all gradients);
    the row's initial states feed only its first sequence."""
    lengths = [5, 1, 1030, 3, 200]  # one sequence shorter than width - 1, one crossing a CUDA chunk
    dim, width, total = 8, 4, sum(lengths)
    g = dict(dtype=dtype, device=device)
    x = torch.randn(1, dim, total, **g, requires_grad=True)
    weight = (torch.randn(dim, width, **g) / 2).requires_grad_()
    bias = torch.randn(dim, **g, requires_grad=True)
    init = torch.randn(1, dim, width - 1, **g, requires_grad=True)
    seq_idx = torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])[None].to(device)
    dout = torch.randn(1, dim, total, **g)
    dfinal = torch.randn(1, dim, width - 1, **g)
    out, final = mamba_ext.causal_conv1d(x, weight, bias, "silu", init, True, seq_idx)
    packed_grads = torch.autograd.grad((out * dout).sum() + (final * dfinal).sum(), (x, weight, bias, init))

    outs, grads, start = [], None, 0
    for i, n in enumerate(lengths):
        xi = x.detach()[..., start:start + n].requires_grad_()
        inputs = (xi, weight, bias) + ((init,) if i == 0 else ())
        oi, fi = mamba_ext.causal_conv1d(xi, weight, bias, "silu", init if i == 0 else None, True)
        loss = (oi * dout[..., start:start + n]).sum() + ((fi * dfinal).sum() if i == len(lengths) - 1 else 0)
        gi = torch.autograd.grad(loss, inputs)
        outs.append(oi)
        grads = [gi[0]] if grads is None else grads + [gi[0]]
        if i == 0:
            dweight, dbias, dinit = gi[1].float(), gi[2].float(), gi[3]
        else:
            dweight, dbias = dweight + gi[1].float(), dbias + gi[2].float()
        start += n
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    assert rel_err(out, torch.cat(outs, dim=-1)) < tol
    assert rel_err(final, fi) < tol
    assert rel_err(packed_grads[0], torch.cat(grads, dim=-1)) < tol
    assert rel_err(packed_grads[1], dweight) < tol * 10  # summed in another order
    assert rel_err(packed_grads[2], dbias) < tol * 10
    assert rel_err(packed_grads[3], dinit) < tol


def test_backward_is_deterministic(device):
    kw = make_inputs(ConvCase(batch=4, dim=16, seqlen=2100, initial_states=True, final_states=True),
                     torch.float32, device, requires_grad=True)
    first = forward_and_grads(mamba_ext.causal_conv1d, kw, grad_seed=5)[1]
    second = forward_and_grads(mamba_ext.causal_conv1d, kw, grad_seed=5)[1]
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_strided_inputs(device):
    """Non-contiguous x (channel-last storage) and a sliced weight give the same results."""
    kw = make_inputs(ConvCase(seqlen=40, initial_states=True, final_states=True), torch.float32, device)
    ref = mamba_ext.causal_conv1d(**kw)
    x_cl = kw["x"].transpose(1, 2).contiguous().transpose(1, 2)
    w_wide = torch.randn(kw["weight"].shape[0], 9, device=device)
    w_wide[:, 2:2 + kw["weight"].shape[1]] = kw["weight"]
    out = mamba_ext.causal_conv1d(**{**kw, "x": x_cl, "weight": w_wide[:, 2:2 + kw["weight"].shape[1]]})
    for o, r in zip(out, ref):
        assert torch.allclose(o, r, atol=1e-6, rtol=1e-6)


def opcheck_samples(device):
    for case in [ConvCase(), ConvCase(bias=False, silu=False, initial_states=True, final_states=True, seq_idx=True)]:
        kw = make_inputs(case, torch.float32, device, requires_grad=True)
        yield (kw["x"], kw["weight"], kw["bias"], kw["activation"], kw["initial_states"], kw["seq_idx"])


def test_opcheck_public(device):
    for args in opcheck_samples(device):
        opcheck(torch.ops.mamba_ext.causal_conv1d.default, args)


def test_opcheck_internal(device):
    for x, w, b, act, init, seq in opcheck_samples(device):
        x, w = x.detach(), w.detach()
        b = b.detach() if b is not None else None
        init = init.detach() if init is not None else None
        opcheck(torch.ops.mamba_ext.causal_conv1d_fwd.default, (x, w, b, init, seq, act is not None))
        dout, dfinal = torch.randn_like(x), torch.randn(x.shape[0], x.shape[1], w.shape[1] - 1, device=device)
        opcheck(torch.ops.mamba_ext.causal_conv1d_bwd.default, (dout, dfinal, x, w, b, init, seq, act is not None))
        opcheck(torch.ops.mamba_ext.causal_conv1d_bwd.default, (dout, None, x, w, b, init, seq, act is not None))


def test_compile_fullgraph_matches_eager(device):
    kw = make_inputs(ConvCase(seqlen=33, initial_states=True, final_states=True, seq_idx=True), torch.float32,
                     device, requires_grad=True)

    def step(x, weight, bias, initial_states, seq_idx):
        out, final = mamba_ext.causal_conv1d(x, weight, bias, "silu", initial_states, True, seq_idx)
        return (out.square().sum() + final.sum()), out

    names = ["x", "weight", "bias", "initial_states", "seq_idx"]
    eager_loss, eager_out = step(*[kw[k] for k in names])
    eager_grads = torch.autograd.grad(eager_loss, [kw[k] for k in names[:4]])
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    loss, out = compiled(*[kw[k] for k in names])
    grads = torch.autograd.grad(loss, [kw[k] for k in names[:4]])
    assert torch.allclose(out, eager_out, atol=1e-6, rtol=1e-6)
    for g, e in zip(grads, eager_grads):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5)


def test_double_backward_errors():
    kw = make_inputs(ConvCase(), torch.float64, "cpu", requires_grad=True)
    out = mamba_ext.causal_conv1d(**kw)
    (dx,) = torch.autograd.grad(out.sum(), kw["x"], create_graph=True)
    with pytest.raises(RuntimeError, match="causal_conv1d_bwd"):
        torch.autograd.grad(dx.sum(), kw["x"])


@pytest.mark.parametrize("shape", [(0, 4, 9), (2, 0, 9), (2, 4, 0)])
def test_empty_sizes(shape, device):
    b, d, L = shape
    x = torch.randn(shape, device=device, requires_grad=True)
    w = torch.randn(d, 3, device=device, requires_grad=True)
    bias = torch.randn(d, device=device, requires_grad=True)
    init = torch.randn(b, d, 2, device=device, requires_grad=True)
    out, final = mamba_ext.causal_conv1d(x, w, bias, "silu", init, True)
    ref_out, ref_final = causal_conv1d_ref(x, w, bias, "silu", init, True)
    assert out.shape == shape and torch.allclose(final, ref_final)
    dfinal = torch.randn_like(final)
    grads = torch.autograd.grad((out.sum() + (final * dfinal).sum()), (x, w, bias, init))
    ref_grads = torch.autograd.grad((ref_out.sum() + (ref_final * dfinal).sum()), (x, w, bias, init),
                                    allow_unused=True, materialize_grads=True)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape and torch.allclose(g, r)


def bad_input_cases(device):
    x = torch.randn(2, 4, 8, device=device)
    w = torch.randn(4, 3, device=device)
    yield dict(x=x[0], weight=w), "x must have 3 dimensions"
    yield dict(x=x.int(), weight=w), "x must be float32"
    yield dict(x=x, weight=w[:3]), "weight must have shape"
    yield dict(x=x, weight=w[:, 0]), "weight must have 2 dimensions"
    yield dict(x=x, weight=torch.randn(4, 1, device=device)), "width must be between 2 and"
    yield dict(x=x, weight=torch.randn(4, 65, device=device)), "width must be between 2 and"
    yield dict(x=x, weight=w, bias=torch.randn(3, device=device)), "bias must have shape"
    yield dict(x=x, weight=w, bias=torch.randn(4, device=device).double()), "bias must have dtype"
    yield dict(x=x, weight=w, activation="relu"), "activation must be None"
    yield dict(x=x, weight=w, initial_states=torch.randn(2, 4, 3, device=device)), "initial_states must have shape"
    yield dict(x=x, weight=w, initial_states=torch.randn(2, 4, 2, device=device).half()), "initial_states must have dtype"
    yield dict(x=x, weight=w, seq_idx=torch.zeros(2, 8, device=device)), "seq_idx must have dtype"
    yield dict(x=x, weight=w, seq_idx=torch.zeros(2, 7, dtype=torch.int32, device=device)), "seq_idx must have shape"
    if device == "cuda":
        yield dict(x=x, weight=w.cpu()), "weight is on cpu"
        yield dict(x=x, weight=torch.randn(4, 5, device=device)), "width must be between 2 and 4"
        yield dict(x=x.double(), weight=w), "float64"


@pytest.mark.parametrize("i", range(16))
def test_bad_inputs_name_op_and_argument(i, device):
    cases = list(bad_input_cases(device))
    if i >= len(cases):
        pytest.skip("no such case on this device")
    kw, message = cases[i]
    with pytest.raises(RuntimeError, match="mamba_ext.causal_conv1d: .*" + message.replace("(", r"\(")):
        mamba_ext.causal_conv1d(**kw)


# ------------------------------------------------------------------------------------------- cu_seqlens
# Sequences given by their boundaries, each with its own initial and final states, on CPU and CUDA (where
# they are composed from the seq_idx kernels: csrc/causal_conv1d/cuda_sequence_states.h).

def packed_conv_inputs(lengths, width, dtype, device, states=True):
    """causal_conv1d kwargs of one packed row (batch 1), with per-sequence initial states when states."""
    kw = make_inputs(ConvCase(batch=1, seqlen=sum(lengths), width=width, final_states=states), dtype, device,
                     requires_grad=True)
    if states:
        kw["initial_states"] = torch.randn(len(lengths), kw["x"].shape[1], width - 1, dtype=dtype, device=device,
                                           requires_grad=True)
    return kw


def conv_each_alone(fn, lengths):
    """Runs fn (causal_conv1d or its reference) on every sequence alone, sequence i from initial_states[i];
    returns the concatenated outputs and (with return_final_states) the stacked final states."""
    def run(x, initial_states=None, return_final_states=False, seq_idx=None, **kw):
        outs, finals, start = [], [], 0
        for i, n in enumerate(lengths):
            init = initial_states[i:i + 1] if initial_states is not None else None
            out, final = fn(x[..., start:start + n], initial_states=init, return_final_states=True, **kw)
            outs.append(out)
            finals.append(final)
            start += n
        out = torch.cat(outs, dim=-1)
        return (out, torch.cat(finals)) if return_final_states else out
    return run


CU_LENGTHS = [(5, 0, 1, 2, 130, 3), (1,), (0, 1030, 0)]  # empty, length 1, shorter than width - 1, > a CUDA chunk


@pytest.mark.parametrize("lengths", CU_LENGTHS, ids=str)
@pytest.mark.parametrize("width", [2, 3, 4, 7])
def test_cu_seqlens_equals_each_sequence_alone(lengths, width, device):
    """Values, per-sequence final states and every gradient (x, weight, bias, each initial state and the
    gradient flowing into each final state) equal running each sequence alone with its own initial states."""
    if device == "cuda" and width > 4:
        pytest.skip("the CUDA kernels take widths 2..4")
    kw = packed_conv_inputs(lengths, width, torch.float32, device)
    cu = cu_of(lengths, device)
    packed, packed_grads = forward_and_grads(lambda **k: mamba_ext.causal_conv1d(**k, cu_seqlens=cu), kw, 4)
    alone, alone_grads = forward_and_grads(conv_each_alone(mamba_ext.causal_conv1d, lengths), kw, 4)
    ref, ref_grads = forward_and_grads(conv_each_alone(causal_conv1d_ref, lengths), cast(kw, torch.float64), 4)
    assert len(packed) == 2 and packed[1].shape == (len(lengths), kw["x"].shape[1], width - 1)
    for p, a, r in zip(packed, alone, ref):
        assert rel_err(p, a) < 1e-6
        assert rel_err(p, r) < 1e-5
    for name, g in packed_grads.items():
        assert rel_err(g, alone_grads[name]) < 1e-5, name
        assert rel_err(g, ref_grads[name]) < 1e-5, name


def test_cu_seqlens_int64_and_without_initial_states():
    lengths = (3, 0, 1, 40)
    kw = packed_conv_inputs(lengths, 4, torch.float32, "cpu")
    kw["initial_states"] = None
    out32, final32 = mamba_ext.causal_conv1d(**kw, cu_seqlens=cu_of(lengths, "cpu"))
    out64, final64 = mamba_ext.causal_conv1d(**kw, cu_seqlens=cu_of(lengths, "cpu", torch.int64))
    alone_out, alone_final = conv_each_alone(mamba_ext.causal_conv1d, lengths)(**kw)
    assert torch.equal(out32, out64) and torch.equal(final32, final64)
    assert torch.equal(out32, alone_out) and torch.equal(final32, alone_final)
    assert torch.equal(final32[1], torch.zeros_like(final32[1]))  # the empty sequence: zeros
    assert torch.equal(final32[2, :, :2], torch.zeros_like(final32[2, :, :2]))  # length 1: zero padding first


def packed_forward_and_grads(kw, lengths, device):
    return forward_and_grads(lambda **k: mamba_ext.causal_conv1d(**k, cu_seqlens=cu_of(lengths, device)), kw, 4)


CUDA_CU_LENGTHS = (5, 0, 1, 2, 2100, 3)  # empty, shorter than width - 1, across the kernels' 2048-step chunks


@pytest.mark.skipif(not cuda_ready(), reason="needs a GPU and the CUDA build")
@pytest.mark.parametrize("states", ["initial+final", "final", "none"])
@pytest.mark.parametrize("weight_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("width", [2, 3, 4])
def test_cu_seqlens_cuda_bf16_matches_cpu_float64(states, weight_dtype, width):
    """A packed bf16 row on CUDA against the CPU op in float64 on the same values: out, the per-sequence final
    states and every gradient, including each initial state's and one flowing into each final state. Also
    without initial states (the packed row runs as it is), and without final states."""
    kw = packed_conv_inputs(CUDA_CU_LENGTHS, width, torch.bfloat16, "cuda", states=states != "none")
    if states == "final":
        kw["initial_states"] = None
    for k in ("weight", "bias"):  # x's dtype or another one
        kw[k] = kw[k].detach().to(weight_dtype).requires_grad_()
    cpu = cast({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}, torch.float64)
    outs, grads = packed_forward_and_grads(kw, CUDA_CU_LENGTHS, "cuda")
    ref_outs, ref_grads = packed_forward_and_grads(cpu, CUDA_CU_LENGTHS, "cpu")
    assert len(outs) == len(ref_outs) == (1 if states == "none" else 2)
    for o, r in zip(outs, ref_outs):
        assert rel_err(o, r) < 1e-2
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        assert g.dtype == kw[name].dtype and rel_err(g, ref_grads[name]) < 1e-2, name


@pytest.mark.skipif(not cuda_ready(), reason="needs a GPU and the CUDA build")
@pytest.mark.parametrize("initial_states", [True, False])
@pytest.mark.parametrize("dfinal_states", [True, False])
def test_cu_seqlens_cuda_internal_backward_matches_cpu(initial_states, dfinal_states):
    """The internal backward on CUDA returns every per-sequence gradient like the CPU one, dinitial_states
    also without initial states (the gradient of their zeros, which the public op never asks for)."""
    kw = packed_conv_inputs(CUDA_CU_LENGTHS, 4, torch.float32, "cuda")
    x, w, b, init = (kw[k].detach() for k in ("x", "weight", "bias", "initial_states"))
    args = (torch.randn_like(x), torch.randn_like(init) if dfinal_states else None, x, w, b,
            init if initial_states else None, None, True)
    cuda = torch.ops.mamba_ext.causal_conv1d_bwd(*args, cu_of(CUDA_CU_LENGTHS, "cuda"))
    cpu_args = [a.cpu().double() if isinstance(a, torch.Tensor) else a for a in args]
    cpu = torch.ops.mamba_ext.causal_conv1d_bwd(*cpu_args, cu_of(CUDA_CU_LENGTHS, "cpu"))
    for name, c, r in zip(("dx", "dweight", "dbias", "dinitial_states"), cuda, cpu):
        assert rel_err(c, r) < 1e-5, name


@pytest.mark.skipif(not cuda_ready(), reason="needs a GPU and the CUDA build")
def test_cu_seqlens_cuda_backward_is_deterministic():
    """Bitwise equal gradients run to run, with PyTorch's deterministic mode on (which would raise for a
    nondeterministic op such as index_add)."""
    kw = packed_conv_inputs(CUDA_CU_LENGTHS, 4, torch.float32, "cuda")
    was_on = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = packed_forward_and_grads(kw, CUDA_CU_LENGTHS, "cuda")[1]
        second = packed_forward_and_grads(kw, CUDA_CU_LENGTHS, "cuda")[1]
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=warn_only)
    assert first.keys() == {"x", "weight", "bias", "initial_states"}
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("width", [2, 4])
def test_cu_seqlens_gradcheck(width):
    lengths = (3, 0, 1, 5)
    kw = packed_conv_inputs(lengths, width, torch.float64, "cpu")
    kw["x"] = kw["x"][:, :3].detach().requires_grad_()
    kw["weight"] = kw["weight"][:3].detach().requires_grad_()
    kw["bias"] = kw["bias"][:3].detach().requires_grad_()
    kw["initial_states"] = kw["initial_states"][:, :3].detach().requires_grad_()
    cu = cu_of(lengths, "cpu")
    names = [k for k, _ in tensor_inputs(kw)]
    fn = lambda *t: mamba_ext.causal_conv1d(**{**kw, **dict(zip(names, t))}, cu_seqlens=cu)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [kw[k] for k in names])


def test_cu_seqlens_opcheck():
    lengths = (5, 0, 1, 30)
    kw = packed_conv_inputs(lengths, 4, torch.float32, "cpu")
    cu = cu_of(lengths, "cpu")
    opcheck(torch.ops.mamba_ext.causal_conv1d.default,
            (kw["x"], kw["weight"], kw["bias"], kw["activation"], kw["initial_states"], None, cu))
    x, w, b, init = (kw[k].detach() for k in ("x", "weight", "bias", "initial_states"))
    seq_idx = torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])[None]
    opcheck(torch.ops.mamba_ext.causal_conv1d_fwd.default, (x, w, b, init, seq_idx, True, cu))
    dout, dfinal = torch.randn_like(x), torch.randn_like(init)
    for df in (dfinal, None):
        opcheck(torch.ops.mamba_ext.causal_conv1d_bwd.default, (dout, df, x, w, b, init, seq_idx, True, cu))


def test_cu_seqlens_compile_fullgraph_matches_eager():
    lengths = (5, 0, 1, 30)
    kw = packed_conv_inputs(lengths, 4, torch.float32, "cpu")
    cu = cu_of(lengths, "cpu")
    names = ["x", "weight", "bias", "initial_states"]

    def step(x, weight, bias, initial_states, cu_seqlens):
        out, final = mamba_ext.causal_conv1d(x, weight, bias, "silu", initial_states, True, cu_seqlens=cu_seqlens)
        return out.square().sum() + final.square().sum(), out, final

    eager = step(*[kw[k] for k in names], cu)
    eager_grads = torch.autograd.grad(eager[0], [kw[k] for k in names])
    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)(*[kw[k] for k in names], cu)
    grads = torch.autograd.grad(compiled[0], [kw[k] for k in names])
    for c, e in zip(compiled[1:], eager[1:]):
        assert torch.allclose(c, e, atol=1e-6, rtol=1e-6)
    for g, e in zip(grads, eager_grads):
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5)


def bad_cu_seqlens_cases():
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    yield "batch", dict(batch=2), cu, "cu_seqlens packs sequences into one row, so batch must be 1"
    yield "both", dict(seq_idx=torch.zeros(1, 8, dtype=torch.int32)), cu, "seq_idx and cu_seqlens .* pass only one"
    yield "dtype", {}, cu.float(), "cu_seqlens must have dtype int32 or int64"
    yield "rank", {}, cu[None], r"cu_seqlens must have shape \(num_seqs \+ 1,\)"
    yield "no sequence", {}, cu[:1], r"cu_seqlens holds no sequence \(shape \(1,\)\), but seqlen = 8"
    yield "start", {}, torch.tensor([2, 3, 8]), r"cu_seqlens\[0\] must be 0, got 2"
    yield "end", {}, torch.tensor([0, 3, 9]), r"cu_seqlens\[-1\] must equal seqlen = 8"
    yield "decreasing", {}, torch.tensor([0, 5, 3, 8], dtype=torch.int32), "cu_seqlens must be non-decreasing"
    yield "device", {}, cu.to("meta"), "cu_seqlens is on meta"
    yield "initial_states rows", dict(initial_states=torch.randn(1, 4, 2)), cu, \
        r"initial_states must have shape \(num_seqs, dim, width - 1\)"


@pytest.mark.parametrize("name,changes,cu,message", list(bad_cu_seqlens_cases()),
                         ids=[c[0] for c in bad_cu_seqlens_cases()])
def test_bad_cu_seqlens(name, changes, cu, message):
    batch = changes.pop("batch", 1)
    kw = dict(x=torch.randn(batch, 4, 8), weight=torch.randn(4, 3))
    kw.update(changes)
    with pytest.raises(RuntimeError, match=f"mamba_ext.causal_conv1d: {message}"):
        mamba_ext.causal_conv1d(**kw, cu_seqlens=cu)


# ---------------------------------------------------------------------------------------------- update


def make_update_inputs(batch, dim, width, state_len, seqlen, dtype, device, pool=0, pad_rows=()):
    g = dict(dtype=dtype, device=device)
    n_states = pool or batch
    kw = dict(x=torch.randn(batch, dim, seqlen, **g) if seqlen else torch.randn(batch, dim, **g),
              conv_state=torch.randn(n_states, dim, state_len, **g),
              weight=torch.randn(dim, width, **g) / width ** 0.5, bias=torch.randn(dim, **g), activation="silu",
              conv_state_indices=None)
    if pool:
        idx = torch.randperm(pool)[:batch].int()
        idx[list(pad_rows)] = -1
        kw["conv_state_indices"] = idx.to(device)
    return kw


@pytest.mark.parametrize("width,state_len", [(2, 1), (4, 3), (4, 6), (7, 6)])
@pytest.mark.parametrize("seqlen", [0, 1, 3])  # 0: x given as (batch, dim)
@pytest.mark.parametrize("pool", [0, 9])
def test_update_matches_reference(width, state_len, seqlen, pool, device):
    kw = make_update_inputs(5, 6, width, state_len, seqlen, torch.float32, device, pool=pool,
                            pad_rows=(1,) if pool else ())
    ref_state = kw["conv_state"].double().clone()
    ref = causal_conv1d_update_ref(**{**cast(kw, torch.float64), "conv_state": ref_state})
    out = mamba_ext.causal_conv1d_update(**kw)
    assert out.shape == kw["x"].shape and out.dtype == kw["x"].dtype
    assert rel_err(out, ref) < 1e-5
    assert torch.allclose(kw["conv_state"].double(), ref_state, atol=1e-6)
    if pool:
        assert (out[1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("weight_dtype", [None, torch.float32])  # None: x's dtype
def test_update_low_precision(dtype, weight_dtype, device):
    kw = make_update_inputs(3, 16, 4, 3, 2, dtype, device)
    if weight_dtype is not None:
        kw["weight"], kw["bias"] = kw["weight"].to(weight_dtype), kw["bias"].to(weight_dtype)
    ref_state = kw["conv_state"].float().clone()
    ref = causal_conv1d_update_ref(**{**cast(kw, torch.float32), "conv_state": ref_state})
    out = mamba_ext.causal_conv1d_update(**kw)
    assert rel_err(out, ref) < 1e-2
    assert torch.equal(kw["conv_state"], ref_state.to(dtype))  # the state only moves inputs


def test_update_continues_the_parallel_conv(device):
    """causal_conv1d over a prefix, then decode steps from its final states == causal_conv1d on everything."""
    dim, width, prefix, steps = 8, 4, 13, 5
    x = torch.randn(2, dim, prefix + steps, device=device)
    w, bias = torch.randn(dim, width, device=device), torch.randn(dim, device=device)
    full = mamba_ext.causal_conv1d(x, w, bias, "silu")
    _, state = mamba_ext.causal_conv1d(x[..., :prefix], w, bias, "silu", return_final_states=True)
    outs = [mamba_ext.causal_conv1d_update(x[..., t], state, w, bias, "silu") for t in range(prefix, prefix + steps)]
    assert torch.allclose(torch.stack(outs, dim=-1), full[..., prefix:], atol=1e-5, rtol=1e-5)


def test_update_opcheck(device):
    kw = make_update_inputs(4, 6, 4, 5, 2, torch.float32, device, pool=7, pad_rows=(2,))
    opcheck(torch.ops.mamba_ext.causal_conv1d_update.default,
            (kw["x"], kw["conv_state"], kw["weight"], kw["bias"], "silu", kw["conv_state_indices"]))
    kw = make_update_inputs(4, 6, 3, 2, 0, torch.float32, device)
    opcheck(torch.ops.mamba_ext.causal_conv1d_update.default,
            (kw["x"], kw["conv_state"], kw["weight"], None, None, None))


def test_update_compile_fullgraph_matches_eager(device):
    kw = make_update_inputs(4, 6, 4, 3, 1, torch.float32, device, pool=6, pad_rows=(0,))
    state_eager = kw["conv_state"].clone()
    eager = [mamba_ext.causal_conv1d_update(**{**kw, "conv_state": state_eager}) for _ in range(2)]
    torch._dynamo.reset()
    fn = torch.compile(lambda **k: mamba_ext.causal_conv1d_update(**k) * 2, fullgraph=True)
    compiled = [fn(**kw) / 2 for _ in range(2)]
    for c, e in zip(compiled, eager):
        assert torch.allclose(c, e, atol=1e-6)
    assert torch.equal(kw["conv_state"], state_eager)


def test_update_rejects_grad():
    kw = make_update_inputs(2, 4, 4, 3, 1, torch.float32, "cpu")
    kw["weight"].requires_grad_()
    with pytest.raises(RuntimeError, match="causal_conv1d_update"):
        mamba_ext.causal_conv1d_update(**kw).sum().backward()


def update_bad_cases(device):
    kw = make_update_inputs(2, 4, 4, 3, 1, torch.float32, device)
    yield {**kw, "conv_state": kw["conv_state"][..., :2]}, "conv_state must have shape"
    yield {**kw, "conv_state": kw["conv_state"].double()}, "conv_state must have dtype"
    yield {**kw, "conv_state": kw["conv_state"][:1]}, "conv_state has 1 rows but x has batch 2"
    yield {**kw, "x": kw["x"][0, 0]}, "x must be \\(batch, dim\\)"
    yield {**kw, "conv_state_indices": torch.zeros(3, dtype=torch.int32, device=device)}, "conv_state_indices must"
    yield {**kw, "conv_state_indices": torch.zeros(2, device=device)}, "conv_state_indices must have dtype"
    yield {**kw, "activation": "gelu"}, "activation must be None"
    if device == "cpu":
        yield {**kw, "conv_state_indices": torch.tensor([0, 2], dtype=torch.int32)}, "out of range"


@pytest.mark.parametrize("i", range(8))
def test_update_bad_inputs(i, device):
    cases = list(update_bad_cases(device))
    if i >= len(cases):
        pytest.skip("no such case on this device")
    kw, message = cases[i]
    state_before = kw["conv_state"].clone()
    with pytest.raises(RuntimeError, match="mamba_ext.causal_conv1d_update: .*" + message):
        mamba_ext.causal_conv1d_update(**kw)
    assert torch.equal(kw["conv_state"], state_before)


def test_update_empty_batch(device):
    kw = make_update_inputs(0, 4, 4, 3, 1, torch.float32, device)
    assert mamba_ext.causal_conv1d_update(**kw).shape == (0, 4, 1)


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("seq", [False, True])
def test_memory_past_the_row_is_never_read(width, seq, device):
    """x is a view into rows padded with NaN past seqlen: no output or gradient may see the padding. (The CUDA
    kernels once read halo inputs past the end for threads with no steps of their own; the NaN there times a
    zero gradient made the weight gradient NaN.)"""
    padded = torch.full((2, 8, 600), float("nan"), device=device)
    padded[..., :5] = torch.randn(2, 8, 5, device=device)
    x = padded[..., :5].requires_grad_()
    w = torch.randn(8, width, device=device, requires_grad=True)
    b = torch.randn(8, device=device, requires_grad=True)
    seq_idx = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.int32, device=device) if seq else None
    out = mamba_ext.causal_conv1d(x, w, b, "silu", seq_idx=seq_idx)
    grads = torch.autograd.grad(out.square().sum(), (x, w, b))
    xr, wr, br = (t.detach().double().cpu().requires_grad_() for t in (x, w, b))
    ref = causal_conv1d_ref(xr, wr, br, "silu", seq_idx=None if seq_idx is None else seq_idx.cpu())
    ref_grads = torch.autograd.grad(ref.square().sum(), (xr, wr, br))
    assert rel_err(out, ref) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert torch.isfinite(g).all() and rel_err(g, r) < 1e-5
