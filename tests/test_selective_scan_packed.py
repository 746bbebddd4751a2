"""Packed variable-length batches (seq_idx): a packed row equals running each sequence alone, on CPU and
CUDA (the CUDA cases use few channels, so the kernels cut the sequence into time splits and sequence starts
fall inside and at the edges of splits and tiles)."""
import pytest
import torch

import mamba_ext
from mamba_ext.reference import selective_scan_ref
from scan_cases import ScanCase, cast_inputs, make_inputs, tensor_args
from conftest import forward_and_grads, rel_err

OP = torch.ops.mamba_ext


def packed_seq_idx(batch, lengths, device):
    """(batch, sum(lengths)) int32: sequence i of every row covers lengths[i] consecutive positions."""
    ids = torch.cat([torch.full((n,), i, dtype=torch.int32) for i, n in enumerate(lengths)])
    return ids.expand(batch, -1).contiguous().to(device)


@pytest.mark.parametrize("lengths", [(5, 1, 130, 7), (1, 1, 1), (200, 129), (300,), (32, 32, 1, 31, 2000, 33)],
                         ids=str)
@pytest.mark.parametrize("bc", ["constant", "grouped"])
def test_packed_equals_each_sequence_alone(lengths, bc, device):
    case = ScanCase(seqlen=sum(lengths), bc=bc)
    kw = make_inputs(case, torch.float32, device, requires_grad=True)
    seq_idx = packed_seq_idx(case.batch, lengths, device)
    packed, packed_grads = forward_and_grads(lambda **k: mamba_ext.selective_scan(**k, seq_idx=seq_idx), kw, 5)

    def one_by_one(u, delta, z, B, C, initial_state, **rest):
        outs, start, h = [], 0, initial_state
        for i, n in enumerate(lengths):
            piece = lambda t: t[..., start:start + n] if t.dim() >= 3 else t  # noqa: E731
            out, h = mamba_ext.selective_scan(piece(u), piece(delta), B=piece(B), C=piece(C), z=piece(z),
                                              initial_state=initial_state if i == 0 else None, **rest)
            outs.append(out)
            start += n
        return torch.cat(outs, dim=-1), h

    alone, alone_grads = forward_and_grads(one_by_one, kw, 5)
    tol = 1e-5 if device == "cpu" else 2e-5  # CUDA: different split layouts, approximate exp2
    for a, b in zip(packed, alone):
        assert rel_err(a, b) < tol
    for name, g in packed_grads.items():
        assert rel_err(g, alone_grads[name]) < tol, name


@pytest.mark.parametrize("seqlen", [7, 300])
def test_packed_matches_reference(seqlen, device):
    case = ScanCase(seqlen=seqlen, bc="variable")
    kw = make_inputs(case, torch.float32, device, requires_grad=True)
    seq_idx = torch.randint(0, 3, (case.batch, seqlen), dtype=torch.int32).sort(dim=1).values.to(device)
    ours, ours_grads = forward_and_grads(lambda **k: mamba_ext.selective_scan(**k, seq_idx=seq_idx), kw, 6)
    ref_kw = cast_inputs(kw, torch.float64)
    ref, ref_grads = forward_and_grads(lambda **k: selective_scan_ref(**k, seq_idx=seq_idx.cpu()), ref_kw, 6)
    for a, b in zip(ours, ref):
        assert rel_err(a, b) < 5e-5
    for name, g in ours_grads.items():
        assert rel_err(g, ref_grads[name]) < 5e-5, name


def test_packed_gradcheck():
    kw = make_inputs(ScanCase(batch=1, dim=2, seqlen=9, dstate=3), torch.float64, requires_grad=True)
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2]], dtype=torch.int32)
    names = [k for k, _ in tensor_args(kw)]
    fn = lambda *t: mamba_ext.selective_scan(**{**kw, **dict(zip(names, t))}, seq_idx=seq_idx)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [kw[k] for k in names])


def test_packed_opcheck(device):
    kw = make_inputs(ScanCase(seqlen=20), torch.float32, device, requires_grad=True)
    seq_idx = packed_seq_idx(2, (8, 12), device)
    args = tuple(kw[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus",
                                 "initial_state"))
    torch.library.opcheck(OP.selective_scan.default, args + (seq_idx,))


@pytest.mark.parametrize("bad,message", [
    (torch.zeros(2, 7, dtype=torch.int64), "seq_idx must have dtype"),
    (torch.zeros(2, 6, dtype=torch.int32), "seq_idx must have shape"),
    (torch.zeros(7, dtype=torch.int32), "seq_idx must have shape"),
])
def test_bad_seq_idx(bad, message):
    kw = make_inputs(ScanCase(seqlen=7), torch.float32)
    with pytest.raises(RuntimeError, match=rf"mamba_ext\.selective_scan: {message}"):
        mamba_ext.selective_scan(**kw, seq_idx=bad)
