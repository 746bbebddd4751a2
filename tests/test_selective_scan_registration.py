"""Registration of the selective-scan ops: opcheck, torch.compile, C++-level argument errors."""
import pytest
import torch

import mamba_ext
from scan_cases import ScanCase, all_option_cases, make_inputs
from conftest import rel_err

OP = torch.ops.mamba_ext


def op_args(kw):
    """Positional args of torch.ops.mamba_ext.selective_scan (return_last_state is Python-only)."""
    return tuple(kw[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus",
                                 "initial_state"))


# Every option combination at one short length, with and without gradients: the public op.
@pytest.mark.parametrize("case", list(all_option_cases(seqlen=5, dim=4, dstate=3)), ids=ScanCase.id)
def test_opcheck_public_op(case, device):
    kw = make_inputs(case, torch.float32, device, requires_grad=case.has_z)
    torch.library.opcheck(OP.selective_scan.default, op_args(kw))


@pytest.mark.parametrize("case", [ScanCase(bc=bc, seqlen=L)
                                  for bc in ("constant", "variable", "grouped") for L in (1, 130)],
                         ids=ScanCase.id)
def test_opcheck_internal_ops(case, device):
    kw = make_inputs(case, torch.float32, device)
    chunk = 32 if device == "cuda" else 128  # the CUDA kernels take only their tile length
    seq_idx = None
    if device == "cpu":  # two packed sequences per row, split in the middle (CPU only for now)
        seq_idx = (torch.arange(case.seqlen) >= case.seqlen // 2).to(torch.int32).expand(case.batch, -1).contiguous()
    out, last, states = OP.selective_scan_fwd(*op_args(kw), seq_idx, chunk)
    torch.library.opcheck(OP.selective_scan_fwd.default, op_args(kw) + (seq_idx, chunk))
    dout, dlast = torch.randn_like(out), torch.randn_like(last)
    bwd_args = (dout, dlast) + op_args(kw) + (seq_idx, states, chunk, False)
    torch.library.opcheck(OP.selective_scan_bwd.default, bwd_args)


@pytest.mark.parametrize("with_grad", [False, True])
def test_forward_mode_ad_is_refused(with_grad, device):
    """Dual tensors raise (there is no forward-mode formula) instead of giving outputs without tangents."""
    import torch.autograd.forward_ad as fwAD
    kw = make_inputs(ScanCase(seqlen=9), torch.float32, device, requires_grad=with_grad)
    with fwAD.dual_level():
        kw["u"] = fwAD.make_dual(kw["u"], torch.randn_like(kw["u"]))
        with pytest.raises(RuntimeError, match="mamba_ext.selective_scan: forward-mode AD"):
            OP.selective_scan(*op_args(kw))


@pytest.mark.parametrize("bc", ["constant", "variable"])
def test_internal_forward_without_saved_states(bc, device):
    """save_states=False (the forward under no_grad) gives the same outputs and an empty chunk_states."""
    case = ScanCase(bc=bc, seqlen=300)
    kw = make_inputs(case, torch.float32, device)
    chunk = 32 if device == "cuda" else 128
    out, last, states = OP.selective_scan_fwd(*op_args(kw), None, chunk)
    out_ns, last_ns, states_ns = OP.selective_scan_fwd(*op_args(kw), None, chunk, None, False)
    assert torch.equal(out, out_ns) and torch.equal(last, last_ns)
    assert states.shape == (case.batch, case.dim, -(-case.seqlen // chunk), case.dstate)
    assert states_ns.shape == (case.batch, case.dim, 0, case.dstate)
    torch.library.opcheck(OP.selective_scan_fwd.default, op_args(kw) + (None, chunk, None, False))
    # The public op stores none either when no graph is recorded, and returns the same values.
    with torch.no_grad():
        out_pub, last_pub = OP.selective_scan(*op_args(kw))
    assert torch.equal(out_pub, out) and torch.equal(last_pub, last)


@pytest.mark.parametrize("case", [ScanCase(bc="grouped", seqlen=150),
                                  ScanCase(bc="constant", has_z=False, has_D=False, has_initial_state=False,
                                           delta_softplus=False, has_delta_bias=False, seqlen=40)], ids=ScanCase.id)
def test_compile_fullgraph_matches_eager(case, device):
    kw = make_inputs(case, torch.float32, device, requires_grad=True)
    tensors = {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}
    flags = {k: v for k, v in kw.items() if not isinstance(v, torch.Tensor)}

    def loss_fn(t):
        out, last = mamba_ext.selective_scan(**t, **flags)
        return (out * out).sum() + last.sum(), out

    torch._dynamo.reset()
    compiled = torch.compile(loss_fn, fullgraph=True)
    loss_c, out_c = compiled(tensors)
    grads_c = torch.autograd.grad(loss_c, list(tensors.values()))
    loss_e, out_e = loss_fn(tensors)
    grads_e = torch.autograd.grad(loss_e, list(tensors.values()))
    assert rel_err(out_c, out_e) < 1e-6
    for gc, ge in zip(grads_c, grads_e):
        assert rel_err(gc, ge) < 1e-6


def bad(**changes):
    kw = make_inputs(ScanCase(batch=2, dim=4, seqlen=6, dstate=3), torch.float32)
    kw.pop("return_last_state")
    kw.update(changes)
    return kw


def t(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


BAD_INPUTS = [
    ("u rank", bad(u=t(2, 4)), "u must have 3 dimensions"),
    ("u dtype", bad(u=torch.ones(2, 4, 6, dtype=torch.int32)), "u must be float32"),
    ("delta shape", bad(delta=t(2, 4, 5)), "delta must have shape"),
    ("delta dtype", bad(delta=t(2, 4, 6, dtype=torch.float64)), "delta must have dtype"),
    ("A rank", bad(A=t(4)), "A must have 2 dimensions"),
    ("A dim", bad(A=t(3, 3)), "A must have shape"),
    ("A dtype", bad(A=t(4, 3, dtype=torch.float16)), "A must have dtype"),
    ("N over limit", bad(A=t(4, 257), B=t(4, 257), C=t(4, 257)), "N must be between 1 and 256"),
    ("B rank", bad(B=t(2, 1, 1, 3, 6)), "B must be"),
    ("B shape", bad(B=t(2, 3, 7)), "B must have shape"),
    ("B groups", bad(B=t(2, 3, 3, 6), C=t(2, 3, 3, 6)), "B has 3 groups"),
    ("B constant dtype", bad(B=t(4, 3, dtype=torch.float16)), "B must have dtype"),
    ("C shape", bad(C=t(2, 4, 6)), "C must have shape"),
    ("B C groups differ", bad(B=t(2, 2, 3, 6), C=t(2, 4, 3, 6)), "same number of groups"),
    ("D shape", bad(D=t(5)), "D must have shape"),
    ("z shape", bad(z=t(2, 4, 7)), "z must have shape"),
    ("delta_bias dtype", bad(delta_bias=t(4, dtype=torch.float64)), "delta_bias must have dtype"),
    ("initial_state shape", bad(initial_state=t(2, 4, 2)), "initial_state must have shape"),
    ("device", bad(D=torch.randn(4, device="meta")), "D is on meta"),
]


@pytest.mark.parametrize("name,kw,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_names_op_and_argument(name, kw, message):
    with pytest.raises(RuntimeError, match=rf"mamba_ext\.selective_scan: .*{message}"):
        mamba_ext.selective_scan(**kw)

