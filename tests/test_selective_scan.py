"""selective_scan against the pure-PyTorch reference: every option combination, values and gradients."""
import os
import subprocess
import sys

import pytest
import torch

import mamba_ext
from mamba_ext.reference import selective_scan_ref
from scan_cases import ScanCase, all_option_cases, cast_inputs, make_inputs, tensor_args
from conftest import forward_and_grads, rel_err

SEQLENS = (1, 7, 128, 2049, 4113)  # straddle the CPU (128) and CUDA (2048) chunk lengths


def compare_with_reference(case, device, dtype, tol):
    kw = make_inputs(case, dtype, device, requires_grad=True)
    outs, grads = forward_and_grads(mamba_ext.selective_scan, kw, grad_seed=1)
    ref_outs, ref_grads = forward_and_grads(selective_scan_ref, cast_inputs(kw, torch.float64), grad_seed=1)
    assert len(outs) == (2 if case.return_last_state else 1)
    for name, o, r in zip(("out", "last_state"), outs, ref_outs):
        assert o.dtype == (dtype if name == "out" else torch.float32) and o.device.type == device
        assert rel_err(o, r) < tol, f"{name}: {rel_err(o, r):.2e}"
    for name, g in grads.items():
        assert g.dtype == kw[name].dtype and g.shape == kw[name].shape, name
        assert rel_err(g, ref_grads[name]) < tol, f"d{name}: {rel_err(g, ref_grads[name]):.2e}"


@pytest.mark.parametrize("seqlen", SEQLENS)
@pytest.mark.parametrize("case", list(all_option_cases()), ids=ScanCase.id)
def test_all_options_fp32(case, seqlen, device):
    compare_with_reference(case.with_(seqlen=seqlen), device, torch.float32, tol=5e-5)


@pytest.mark.parametrize("dstate", [1, 17, 64, 256])
def test_state_sizes(dstate, device):
    """N from 1 to the limit 256, including sizes that are not a multiple of the vector width."""
    case = ScanCase(dstate=dstate, seqlen=150, bc="grouped")
    compare_with_reference(case, device, torch.float32, tol=5e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bc", ["constant", "variable", "grouped"])
@pytest.mark.parametrize("seqlen", [7, 2049])
def test_low_precision_within_twice_pytorch_error(dtype, bc, seqlen, device):
    """Kernel error vs an fp32 reference is at most 2x the error of the same math done by PyTorch in dtype."""
    case = ScanCase(bc=bc, seqlen=seqlen, dim=8)
    kw = make_inputs(case, dtype, device, requires_grad=True)
    outs, grads = forward_and_grads(mamba_ext.selective_scan, kw, grad_seed=2)
    exact_outs, exact_grads = forward_and_grads(selective_scan_ref, cast_inputs(kw, torch.float32, device), 2)
    low_outs, low_grads = forward_and_grads(selective_scan_ref, cast_inputs(kw, dtype, device), 2)
    for o, e, lo in zip(outs, exact_outs, low_outs):
        assert rel_err(o, e) <= 2 * rel_err(lo, e) + 1e-6
    for name, g in grads.items():
        assert g.dtype == kw[name].dtype
        assert rel_err(g, exact_grads[name]) <= 2 * rel_err(low_grads[name], exact_grads[name]) + 1e-6, name


@pytest.mark.parametrize("bc", ["constant", "variable", "grouped"])
@pytest.mark.parametrize("all_options", [False, True])
def test_gradcheck_float64(bc, all_options):
    flags = dict(has_D=all_options, has_z=all_options, has_delta_bias=all_options, delta_softplus=all_options,
                 has_initial_state=all_options, return_last_state=True)
    kw = make_inputs(ScanCase(batch=2, dim=4, seqlen=5, dstate=3, bc=bc, **flags), torch.float64,
                     requires_grad=True)
    names = [k for k, _ in tensor_args(kw)]

    def fn(*tensors):
        return mamba_ext.selective_scan(**{**kw, **dict(zip(names, tensors))})

    assert torch.autograd.gradcheck(fn, [kw[k] for k in names])


def test_gradcheck_seqlen_crossing_cpu_chunks():
    kw = make_inputs(ScanCase(batch=1, dim=2, seqlen=130, dstate=2), torch.float64, requires_grad=True)
    names = [k for k, _ in tensor_args(kw)]
    fn = lambda *t: mamba_ext.selective_scan(**{**kw, **dict(zip(names, t))})  # noqa: E731
    assert torch.autograd.gradcheck(fn, [kw[k] for k in names], atol=1e-6)


@pytest.mark.parametrize("split", [1, 64, 129, 2048])
def test_chained_calls_equal_one_call(split, device):
    """Two calls chained through initial_state/last_state equal one call: values and gradients."""
    case = ScanCase(seqlen=2100, bc="grouped")
    kw = make_inputs(case, torch.float32, device, requires_grad=True)
    whole, whole_grads = forward_and_grads(mamba_ext.selective_scan, kw, grad_seed=3)

    def chained(u, delta, B, C, z, initial_state, **rest):
        first = dict(u=u[..., :split], delta=delta[..., :split], B=B[..., :split], C=C[..., :split],
                     z=z[..., :split])
        second = dict(u=u[..., split:], delta=delta[..., split:], B=B[..., split:], C=C[..., split:],
                      z=z[..., split:])
        out1, h = mamba_ext.selective_scan(**first, initial_state=initial_state, **rest)
        out2, last = mamba_ext.selective_scan(**second, initial_state=h, **rest)
        return torch.cat([out1, out2], dim=-1), last

    parts, part_grads = forward_and_grads(chained, kw, grad_seed=3)
    for a, b in zip(parts, whole):
        assert rel_err(a, b) < 1e-5
    for name, g in part_grads.items():
        assert rel_err(g, whole_grads[name]) < 1e-5, name


def test_long_sequence_closed_form():
    """seqlen 2^20 + 5 with constant inputs against the closed form h_t = a^(t+1) h0 + b (1 - a^(t+1)) / (1 - a)."""
    L, N = (1 << 20) + 5, 4
    dt, uval = 0.01, 0.7
    A = -torch.rand(2, N) * 0.5 - 0.1
    B, C, h0 = torch.randn(2, N), torch.randn(2, N), torch.randn(1, 2, N)
    u = torch.full((1, 2, L), uval)
    delta = torch.full((1, 2, L), dt)
    out, last = mamba_ext.selective_scan(u, delta, A, B, C, initial_state=h0, return_last_state=True)
    a, b = torch.exp(dt * A.double()), (dt * uval) * B.double()
    # In fp32, h = a h + b settles only to within ~ulp / (1 - a) of its fixed point: here 1 - a >= 1e-3, so
    # each state is good to a few 1e-5 (an fp32 loop with torch.exp lands 5e-5 away), and y = sum C h
    # cancels, so its error is bounded by the terms' magnitudes, not by y.
    rel = 3e-4
    for t in (0, 1000, L - 1):
        h = a ** (t + 1) * h0[0].double() + b * (1 - a ** (t + 1)) / (1 - a)
        terms = h * C.double()
        err = (out[0, :, t].double() - terms.sum(-1)).abs()
        assert (err <= rel * terms.abs().sum(-1)).all(), (t, err)
    assert torch.allclose(last[0].double(), b / (1 - a), rtol=rel, atol=1e-5)
    dlast = torch.randn(1, 2, N)
    h0.requires_grad_(True)
    _, last = mamba_ext.selective_scan(u, delta, A, B, C, initial_state=h0, return_last_state=True)
    (dh0,) = torch.autograd.grad((last * dlast).sum(), h0)
    assert torch.allclose(dh0[0].double(), dlast[0].double() * a ** L, atol=1e-30)


@pytest.mark.parametrize("A_extreme", [-300.0, -1e30, float("-inf")])
def test_extreme_decays_match_reference(A_extreme, device):
    """On AVX-512 CPUs the forward's exp skips its clamps for a piece whose every dt*A is moderate and takes a
    clamped exp otherwise (unclamped, dt*A = -inf would give NaN, and below about -1e24 the rounding breaks).
    Here one state of one channel decays to (almost) nothing at every step: dt*A down to about -300, about
    -3e29, or -inf. That channel's lane group runs the clamped exp, the others the unclamped one, and every
    channel, the last state and (for finite A) every gradient must match the float64 reference."""
    case = ScanCase(batch=2, dim=40, seqlen=300, dstate=16)
    finite = A_extreme > float("-inf")
    kw = make_inputs(case, torch.float32, device, requires_grad=finite)
    with torch.no_grad():
        kw["A"][3, 0] = A_extreme
    if finite:
        outs, grads = forward_and_grads(mamba_ext.selective_scan, kw, grad_seed=3)
        ref_outs, ref_grads = forward_and_grads(selective_scan_ref, cast_inputs(kw, torch.float64), grad_seed=3)
        for name, g in grads.items():
            assert rel_err(g, ref_grads[name]) < 5e-5, name
    else:
        outs = mamba_ext.selective_scan(**kw)
        ref_outs = selective_scan_ref(**cast_inputs(kw, torch.float64))
    for o, r in zip(outs, ref_outs):
        torch.testing.assert_close(o.double(), r, rtol=1e-4, atol=1e-4)


def test_strided_inputs_equal_contiguous(device):
    case = ScanCase(batch=3, dim=6, seqlen=33, bc="grouped")
    kw = make_inputs(case, torch.float32, device)
    strided = dict(kw)
    for name in ("u", "delta", "z"):  # (batch, dim, seqlen) views with batch/channel strides permuted
        strided[name] = kw[name].transpose(0, 1).contiguous().transpose(0, 1)
    strided["B"] = kw["B"].transpose(-1, -2).contiguous().transpose(-1, -2)  # time stride != 1: copied
    strided["C"] = kw["C"][:, :, :, :].permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    a, b = mamba_ext.selective_scan(**kw), mamba_ext.selective_scan(**strided)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_empty_sizes(device):
    for shape in [(0, 4, 9), (2, 4, 0)]:
        kw = make_inputs(ScanCase(batch=shape[0], dim=shape[1], seqlen=shape[2]), torch.float32, device,
                         requires_grad=True)
        out, last = mamba_ext.selective_scan(**kw)
        assert out.shape == shape and last.shape == (shape[0], 4, 4)
        if shape[2] == 0:  # no steps: the last state is the initial state, and so is its gradient
            assert torch.equal(last, kw["initial_state"])
            g = torch.randn_like(last)
            (dh0,) = torch.autograd.grad((last * g).sum(), kw["initial_state"])
            assert torch.equal(dh0, g)


def test_double_backward_raises():
    kw = make_inputs(ScanCase(), torch.float64, requires_grad=True)
    out, last = mamba_ext.selective_scan(**kw)
    (du,) = torch.autograd.grad(out.sum(), kw["u"], create_graph=True)
    with pytest.raises(RuntimeError, match="selective_scan_bwd"):
        du.sum().backward()


def test_inference_mode_and_no_grad_match_autograd(device):
    kw = make_inputs(ScanCase(seqlen=300), torch.float32, device)
    expected = mamba_ext.selective_scan(**kw)
    with torch.inference_mode():
        got = mamba_ext.selective_scan(**kw)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


# A decay of exp(100): the AVX-512 loop's exp overflows to inf, the portable one saturates at exp(88), so
# the printed finiteness tells which loop ran (the second step's output is 1e-28 * exp(88) there).
WHICH_CPU_LOOP = """
import torch, mamba_ext
u, delta = torch.ones(1, 1, 2), torch.full((1, 1, 2), 100.0)
A, B, C = torch.ones(1, 1), torch.full((1, 1), 1e-30), torch.ones(1, 1)
print("portable" if torch.isfinite(mamba_ext.selective_scan(u, delta, A, B, C)[0, 0, 1]) else "avx512")
"""


def run_python(args, disable_avx512):
    env = {k: v for k, v in os.environ.items() if k != "MAMBA_EXT_DISABLE_AVX512"}
    if disable_avx512:
        env["MAMBA_EXT_DISABLE_AVX512"] = "1"
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)


def test_portable_cpu_forward_matches_reference():
    """On an AVX-512 CPU fp32 runs loops built for AVX-512 (TableExp: a table-based exp); machines
    without it run the portable loop. MAMBA_EXT_DISABLE_AVX512 selects the portable loop for a process: this
    checks that it does, then runs part of this file's reference comparisons again in such a process."""
    assert run_python(["-c", WHICH_CPU_LOOP], disable_avx512=True).stdout.strip() == "portable"
    selection = "cpu and (all_options_fp32 and 2049 or state_sizes or chained)"
    result = run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", selection], True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1] and "failed" not in result.stdout.splitlines()[-1]


def test_cpu_forward_loop_follows_the_cpu():
    """Without the variable, the AVX-512 loop runs exactly where the CPU has AVX-512F."""
    cpuinfo = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if not cpuinfo or sys.platform != "linux" or os.uname().machine != "x86_64":
        pytest.skip("needs Linux on x86-64 to read the CPU's flags")
    expected = "avx512" if " avx512f" in cpuinfo else "portable"
    assert run_python(["-c", WHICH_CPU_LOOP], disable_avx512=False).stdout.strip() == expected
