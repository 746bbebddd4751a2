"""Packed variable-length batches (seq_idx, cu_seqlens): a packed row equals running each sequence alone.

seq_idx and cu_seqlens (with per-sequence initial and last states) run on CPU and CUDA. The CUDA cases use
few channels, so the kernels cut the sequence into time splits, and sequence starts and ends fall inside
and at the edges of splits and of the kernels' 32-step tiles.
"""

import pytest
import torch

import mamba_ext
from mamba_ext.reference import selective_scan_ref
from scan_cases import ScanCase, cast_inputs, make_inputs, tensor_args
from conftest import DEVICES, cu_of, cuda_ready, forward_and_grads, rel_err

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


# ------------------------------------------------------------------------------------------- cu_seqlens
# Sequences given by their boundaries, each with its own initial and final state, on CPU and CUDA.

def packed_inputs(lengths, bc, dtype, device, states=True):
    """selective_scan kwargs of one packed row (batch 1) with per-sequence initial states when states."""
    case = ScanCase(batch=1, seqlen=sum(lengths), bc=bc, has_initial_state=False, return_last_state=states)
    kw = make_inputs(case, dtype, device, requires_grad=True)
    if states:
        state_dtype = kw["A"].dtype
        kw["initial_state"] = torch.randn(len(lengths), case.dim, case.dstate, dtype=state_dtype, device=device,
                                          requires_grad=True)
    return kw


def each_sequence_alone(fn, lengths):
    """Runs fn (selective_scan or its reference) on every sequence alone, sequence i from initial_state[i];
    returns the concatenated outputs and (with return_last_state) the stacked last states."""
    def run(initial_state=None, return_last_state=False, **kw):
        outs, lasts, start = [], [], 0
        for i, n in enumerate(lengths):
            piece = {k: (v[..., start:start + n] if k in ("u", "delta", "z", "B", "C") and v is not None
                         and v.dim() >= 3 else v) for k, v in kw.items()}
            init = initial_state[i:i + 1] if initial_state is not None else None
            result = fn(**piece, initial_state=init, return_last_state=True)
            outs.append(result[0])
            lasts.append(result[1])
            start += n
        out = torch.cat(outs, dim=-1)
        return (out, torch.cat(lasts)) if return_last_state else out
    return run


# Empty sequences first, last and in between; starts and ends on and between the CUDA kernels' 32-step tiles;
# 3100 steps split into several CUDA time splits with sequences across their edges.
LENGTHS = [(5, 0, 1, 130, 7), (0, 200, 129, 0), (1,), (0,), (128, 128, 1), (32, 0, 1, 31, 64, 100),
           (700, 3, 1500, 1, 896)]


@pytest.mark.parametrize("lengths", LENGTHS, ids=str)
@pytest.mark.parametrize("bc", ["constant", "variable", "grouped"])
def test_cu_seqlens_equals_each_sequence_alone(lengths, bc, device):
    """Values, per-sequence last states and every gradient (inputs, parameters, each initial state, and the
    gradient flowing into each last state) equal running each sequence alone with its own initial state,
    and the float64 reference."""
    kw = packed_inputs(lengths, bc, torch.float32, device)
    cu = cu_of(lengths, device)
    packed, packed_grads = forward_and_grads(lambda **k: mamba_ext.selective_scan(**k, cu_seqlens=cu), kw, 5)
    assert packed[1].shape == (len(lengths), 4, 4)
    alone, alone_grads = forward_and_grads(each_sequence_alone(mamba_ext.selective_scan, lengths), kw, 5)
    # CUDA: other split layouts and tile phases than the runs alone, approximate exp2
    tol_alone, tol_ref = (1e-6, 5e-5) if device == "cpu" else (5e-5, 2e-4)
    for a, b in zip(packed, alone):
        assert rel_err(a, b) < tol_alone
    for name, g in packed_grads.items():
        assert rel_err(g, alone_grads[name]) < 10 * tol_alone, name
    if sum(lengths) == 0:
        return  # the reference's graph of an empty row does not reach delta
    ref, ref_grads = forward_and_grads(each_sequence_alone(selective_scan_ref, lengths),
                                       cast_inputs(kw, torch.float64), 5)
    for a, r in zip(packed, ref):
        assert rel_err(a, r) < tol_ref
    for name, g in packed_grads.items():
        assert rel_err(g, ref_grads[name]) < tol_ref, name


def test_cu_seqlens_int64_and_without_initial_state():
    lengths = (3, 0, 140)
    kw = packed_inputs(lengths, "variable", torch.float32, "cpu")
    kw["initial_state"] = None
    out32, last32 = mamba_ext.selective_scan(**kw, cu_seqlens=cu_of(lengths, "cpu"))
    out64, last64 = mamba_ext.selective_scan(**kw, cu_seqlens=cu_of(lengths, "cpu", torch.int64))
    alone_out, alone_last = each_sequence_alone(mamba_ext.selective_scan, lengths)(**kw)
    assert torch.equal(out32, out64) and torch.equal(last32, last64)
    assert rel_err(out32, alone_out) < 1e-6 and rel_err(last32, alone_last) < 1e-6
    assert torch.equal(last32[1], torch.zeros_like(last32[1]))  # the empty sequence: zeros


@pytest.mark.parametrize("cu_device", DEVICES)
def test_cu_seqlens_without_states_runs_as_seq_idx(cu_device):
    """A plain cu_seqlens (no per-sequence states asked for) equals the seq_idx it describes, on every device."""
    lengths = (7, 0, 1, 40)
    kw = packed_inputs(lengths, "variable", torch.float32, cu_device, states=False)
    packed, packed_grads = forward_and_grads(
        lambda **k: mamba_ext.selective_scan(**k, cu_seqlens=cu_of(lengths, cu_device)), kw, 3)
    alone, alone_grads = forward_and_grads(each_sequence_alone(mamba_ext.selective_scan, lengths), kw, 3)
    assert rel_err(packed[0], alone[0]) < 1e-5
    for name, g in packed_grads.items():
        assert rel_err(g, alone_grads[name]) < 1e-5, name


@pytest.mark.skipif(not cuda_ready(), reason="needs a GPU and the CUDA build")
@pytest.mark.parametrize("lengths", [(32, 0, 1, 31, 64, 100), (5, 300), (0, 7)], ids=str)
@pytest.mark.parametrize("dstate", [16, 200])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_cuda_per_sequence_states_match_cpu(lengths, dstate, dtype):
    """CUDA bf16/fp16 against the CPU kernels on the same rounded inputs in float32: values, last states and
    every gradient, for both CUDA state layouts (N = 16: 4 states per lane, N = 200: 8)."""
    case = ScanCase(batch=1, dim=8, dstate=dstate, seqlen=sum(lengths), bc="variable", has_initial_state=False)
    kw = make_inputs(case, dtype, "cuda", requires_grad=True)
    kw["initial_state"] = torch.randn(len(lengths), case.dim, dstate, device="cuda", requires_grad=True)
    cu = cu_of(lengths, "cuda")
    ours, ours_grads = forward_and_grads(lambda **k: mamba_ext.selective_scan(**k, cu_seqlens=cu), kw, 7)
    cpu_kw = cast_inputs(kw, torch.float32)
    cpu, cpu_grads = forward_and_grads(lambda **k: mamba_ext.selective_scan(**k, cu_seqlens=cu.cpu()), cpu_kw, 7)
    for a, b in zip(ours, cpu):
        assert rel_err(a.float().cpu(), b) < 1e-2  # the CUDA output is rounded to bf16/fp16
    for name, g in ours_grads.items():
        assert rel_err(g.float().cpu(), cpu_grads[name]) < 2e-2, name


@pytest.mark.skipif(not cuda_ready(), reason="needs a GPU and the CUDA build")
def test_cuda_per_sequence_states_backward_is_deterministic():
    lengths = (700, 3, 1500, 1, 896)
    kw = packed_inputs(lengths, "variable", torch.float32, "cuda")
    cu = cu_of(lengths, "cuda")
    run = lambda: forward_and_grads(lambda **k: mamba_ext.selective_scan(**k, cu_seqlens=cu), kw, 8)  # noqa: E731
    (out1, last1), grads1 = run()
    (out2, last2), grads2 = run()
    assert torch.equal(out1, out2) and torch.equal(last1, last2)
    for name, g in grads1.items():
        assert torch.equal(g, grads2[name]), name


def test_cu_seqlens_gradcheck():
    lengths = (3, 0, 1, 5)
    kw = make_inputs(ScanCase(batch=1, dim=2, seqlen=9, dstate=3, has_initial_state=False), torch.float64,
                     requires_grad=True)
    kw["initial_state"] = torch.randn(len(lengths), 2, 3, dtype=torch.float64, requires_grad=True)
    cu = cu_of(lengths, "cpu")
    names = [k for k, _ in tensor_args(kw)]
    fn = lambda *t: mamba_ext.selective_scan(**{**kw, **dict(zip(names, t))}, cu_seqlens=cu)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [kw[k] for k in names])


def test_cu_seqlens_opcheck():
    lengths = (5, 0, 130, 1)
    kw = packed_inputs(lengths, "grouped", torch.float32, "cpu")
    cu = cu_of(lengths, "cpu")
    args = tuple(kw[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "delta_softplus",
                                 "initial_state"))
    torch.library.opcheck(OP.selective_scan.default, args + (None, cu))
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    seq_idx = packed_seq_idx(1, lengths, "cpu")
    out, last, states = OP.selective_scan_fwd(*detached, seq_idx, 128, cu)
    torch.library.opcheck(OP.selective_scan_fwd.default, detached + (seq_idx, 128, cu))
    for dlast in (torch.randn_like(last), None):
        torch.library.opcheck(OP.selective_scan_bwd.default,
                              (torch.randn_like(out), dlast) + detached + (seq_idx, states, 128, False, cu))


def test_cu_seqlens_compile_fullgraph_matches_eager():
    lengths = (5, 0, 130, 1)
    kw = packed_inputs(lengths, "variable", torch.float32, "cpu")
    cu = cu_of(lengths, "cpu")
    tensors = {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}
    flags = {k: v for k, v in kw.items() if not isinstance(v, torch.Tensor)}

    def loss_fn(t, cu_seqlens):
        out, last = mamba_ext.selective_scan(**t, **flags, cu_seqlens=cu_seqlens)
        return (out * out).sum() + (last * last).sum(), out, last

    torch._dynamo.reset()
    loss_c, out_c, last_c = torch.compile(loss_fn, fullgraph=True)(tensors, cu)
    grads_c = torch.autograd.grad(loss_c, list(tensors.values()))
    loss_e, out_e, last_e = loss_fn(tensors, cu)
    grads_e = torch.autograd.grad(loss_e, list(tensors.values()))
    assert rel_err(out_c, out_e) < 1e-6 and rel_err(last_c, last_e) < 1e-6
    for gc, ge in zip(grads_c, grads_e):
        assert rel_err(gc, ge) < 1e-6


def bad_cu_seqlens_cases():
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    yield "batch", dict(batch=2), cu, r"cu_seqlens packs sequences into one row, so batch must be 1"
    yield "both", dict(seq_idx=torch.zeros(1, 7, dtype=torch.int32)), cu, "seq_idx and cu_seqlens .* pass only one"
    yield "dtype", {}, cu.float(), "cu_seqlens must have dtype int32 or int64"
    yield "int16", {}, cu.short(), "cu_seqlens must have dtype int32 or int64"
    yield "rank", {}, cu[None], r"cu_seqlens must have shape \(num_seqs \+ 1,\)"
    yield "no entries", {}, cu[:0], r"cu_seqlens must have shape \(num_seqs \+ 1,\)"
    yield "no sequence", {}, cu[:1], r"cu_seqlens holds no sequence \(shape \(1,\)\), but seqlen = 7"
    yield "start", {}, torch.tensor([1, 3, 7], dtype=torch.int32), r"cu_seqlens\[0\] must be 0, got 1"
    yield "end", {}, torch.tensor([0, 3, 6], dtype=torch.int32), r"cu_seqlens\[-1\] must equal seqlen = 7"
    yield "decreasing", {}, torch.tensor([0, 5, 3, 7]), "cu_seqlens must be non-decreasing"
    yield "device", {}, cu.to("meta"), "cu_seqlens is on meta"
    yield "initial_state rows", dict(initial_state=torch.randn(3, 4, 3)), cu, \
        r"initial_state must have shape \(num_seqs, dim, N\)"


@pytest.mark.parametrize("name,changes,cu,message", list(bad_cu_seqlens_cases()),
                         ids=[c[0] for c in bad_cu_seqlens_cases()])
def test_bad_cu_seqlens(name, changes, cu, message):
    batch = changes.pop("batch", 1)
    kw = make_inputs(ScanCase(batch=batch, seqlen=7, dstate=3, has_initial_state=False), torch.float32)
    kw.update(changes)
    with pytest.raises(RuntimeError, match=rf"mamba_ext\.selective_scan: {message}"):
        mamba_ext.selective_scan(**kw, cu_seqlens=cu)
