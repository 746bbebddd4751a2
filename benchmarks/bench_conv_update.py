#!/usr/bin/env python3
"""Causal conv1d forward+backward and selective_state_update on CUDA against their HBM floors.

Floors: the fewest bytes each op must move (every input read once, every output written once) over the
device-to-device copy bandwidth measured in the same run (gpu_ceilings.py). Timing: CUDA events, warm-up,
median of many repeats; inputs are random (never zeros) and the decode states rotate through buffers
larger than L2. Prints a table and writes JSON.

Usage: python3 benchmarks/bench_conv_update.py [--json FILE]
"""
import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mamba_ext  # noqa: E402
from gpu_ceilings import ceilings  # noqa: E402

L2_BYTES = 50 * 2 ** 20


def time_ms(fn, warmup=10, reps=50, inner=1):
    """Median over reps of the time of `inner` back-to-back calls of fn, per call, in ms (CUDA events)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def bench_conv(batch, dim, seqlen, width, copy_bps, dtype=torch.bfloat16):
    g = dict(device="cuda", dtype=dtype)
    x = torch.randn(batch, dim, seqlen, **g)
    w = torch.randn(dim, width, **g) / width ** 0.5
    bias = torch.randn(dim, **g)
    dout = torch.randn(batch, dim, seqlen, **g)
    ops = torch.ops.mamba_ext
    out, _ = ops.causal_conv1d_fwd(x, w, bias, None, None, True)
    # Ten calls queued back to back per timing: the GPU time of each op with the host running ahead, as in a
    # training step. One call alone would also time the host's dispatch before the first kernel starts.
    fwd = time_ms(lambda: ops.causal_conv1d_fwd(x, w, bias, None, None, True), inner=10)
    bwd = time_ms(lambda: ops.causal_conv1d_bwd(dout, None, x, w, bias, None, None, True), inner=10)

    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, bias))

    def autograd_step():  # autograd.grad: no accumulation into .grad, which would add a pass over dx
        torch.autograd.grad(mamba_ext.causal_conv1d(xg, wg, bg, "silu"), (xg, wg, bg), dout)

    e2e = time_ms(autograd_step, inner=10)
    e2e_single = time_ms(autograd_step)

    def torch_step():  # PyTorch's own depthwise conv (cuDNN) + SiLU, for context
        y = F.silu(F.conv1d(xg, wg.unsqueeze(1), bg, padding=width - 1, groups=dim)[..., :seqlen])
        torch.autograd.grad(y, (xg, wg, bg), dout)

    torch_ms = time_ms(torch_step, warmup=3, reps=10)
    elt = x.element_size()
    n = x.numel()
    # fwd: read x, write out; bwd: read x and dout, write dx (weights, bias, partial sums: < 1%).
    floor_bytes = 2 * n * elt + 3 * n * elt
    floor_ms = floor_bytes / copy_bps * 1e3
    return dict(op="causal_conv1d fwd+bwd", shape=f"({batch}, {dim}, {seqlen}), width {width}", dtype=str(dtype),
                fwd_ms=fwd, bwd_ms=bwd, fwd_bwd_ms=fwd + bwd, autograd_fwd_bwd_ms=e2e,
                autograd_single_call_ms=e2e_single, pytorch_conv1d_fwd_bwd_ms=torch_ms,
                floor_ms=floor_ms, floor_bytes=floor_bytes, ratio=(fwd + bwd) / floor_ms,
                fwd_ratio=fwd / (2 * n * elt / copy_bps * 1e3), bwd_ratio=bwd / (3 * n * elt / copy_bps * 1e3))


def bench_state_update(batch, dim, dstate, copy_bps, dtype=torch.bfloat16):
    g = dict(device="cuda", dtype=dtype)
    state_bytes = batch * dim * dstate * 4
    n_sets = max(2, -(-4 * L2_BYTES // state_bytes))  # rotate through > 4x L2 of state
    sets = []
    for _ in range(n_sets):
        sets.append(dict(state=torch.randn(batch, dim, dstate, device="cuda"), x=torch.randn(batch, dim, **g),
                         dt=torch.randn(batch, dim, **g) * 0.5 - 1, B=torch.randn(batch, dstate, **g),
                         C=torch.randn(batch, dstate, **g), z=torch.randn(batch, dim, **g)))
    A = -(torch.rand(dim, dstate, device="cuda") + 0.5)
    D, dt_bias = torch.randn(dim, device="cuda"), torch.randn(dim, device="cuda") * 0.1

    def run_all():
        for s in sets:
            mamba_ext.selective_state_update(s["state"], s["x"], s["dt"], A, s["B"], s["C"], D, s["z"], dt_bias, True)

    ms = time_ms(run_all, warmup=5, reps=50) / n_sets
    # The same calls replayed from a CUDA graph, as decoding loops run them: GPU time without the per-call
    # host cost (Python wrapper, dispatcher, argument checks, launch), which can exceed a small kernel's time.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run_all()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_all()
    graph_ms = time_ms(graph.replay, warmup=5, reps=50) / n_sets
    elt = torch.empty((), dtype=dtype).element_size()
    # state read + write (fp32); x, dt, z read and out written; B, C read; A, D, dt_bias read once.
    floor_bytes = 2 * state_bytes + 4 * batch * dim * elt + 2 * batch * dstate * elt + dim * dstate * 4 + 2 * dim * 4
    floor_ms = floor_bytes / copy_bps * 1e3
    return dict(op="selective_state_update", shape=f"batch {batch}, dim {dim}, N {dstate}", dtype=str(dtype),
                ms=ms, graph_ms=graph_ms, floor_ms=floor_ms, floor_bytes=floor_bytes, ratio=ms / floor_ms,
                graph_ratio=graph_ms / floor_ms, rotated_sets=n_sets)


def bench_conv_packed(dim, seqlen, n_seqs, width, dtype=torch.bfloat16):
    """Autograd fwd+bwd of one row packing n_seqs equal sequences with cu_seqlens: without states (the packed
    row runs directly) and with per-sequence initial states and a gradient into the final states (the row is
    extended with each sequence's initial states, cuda_sequence_states.h), against the same row unpacked."""
    g = dict(device="cuda", dtype=dtype)
    x = torch.randn(1, dim, seqlen, **g, requires_grad=True)
    w = (torch.randn(dim, width, **g) / width ** 0.5).requires_grad_()
    bias = torch.randn(dim, **g, requires_grad=True)
    dout = torch.randn(1, dim, seqlen, **g)
    cu = torch.arange(n_seqs + 1, device="cuda", dtype=torch.int32) * (seqlen // n_seqs)
    init = torch.randn(n_seqs, dim, width - 1, **g, requires_grad=True)
    dfinal = torch.randn(n_seqs, dim, width - 1, **g)

    def step(cu_seqlens=None, states=False):
        if states:
            out, final = mamba_ext.causal_conv1d(x, w, bias, "silu", init, True, cu_seqlens=cu_seqlens)
            torch.autograd.grad((out, final), (x, w, bias, init), (dout, dfinal))
        else:
            torch.autograd.grad(mamba_ext.causal_conv1d(x, w, bias, "silu", cu_seqlens=cu_seqlens), (x, w, bias), dout)

    return dict(shape=f"(1, {dim}, {seqlen}), width {width}, {n_seqs} sequences",
                unpacked_ms=time_ms(step, inner=10), cu_seqlens_ms=time_ms(lambda: step(cu), inner=10),
                cu_seqlens_states_ms=time_ms(lambda: step(cu, True), inner=10))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    ceil = ceilings()
    copy_bps = ceil["copy_bytes_per_s"]
    rows = [bench_conv(8, 3072, 2048, 4, copy_bps)]
    rows += [bench_state_update(b, 4096, 16, copy_bps) for b in (64, 256)]
    packed = bench_conv_packed(3072, 16384, 8, 4)
    result = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, ceilings=ceil, results=rows,
                  packed=packed)
    print(f"\n{result['device']}, torch {result['torch']}: copy {copy_bps / 1e12:.2f} TB/s (read+write)")
    print(f"{'op':<24} {'shape':<34} {'time ms':>9} {'floor ms':>9} {'x floor':>8}")
    for r in rows:
        t = r.get("fwd_bwd_ms", r.get("ms"))
        print(f"{r['op']:<24} {r['shape']:<34} {t:>9.4f} {r['floor_ms']:>9.4f} {r['ratio']:>8.2f}")
    for r in rows[1:]:
        print(f"  state_update {r['shape']}: replayed from a CUDA graph {r['graph_ms']:.4f} ms "
              f"({r['graph_ratio']:.2f}x its floor); the eager time above includes the per-call host cost")
    c = rows[0]
    print(f"  conv fwd {c['fwd_ms']:.4f} ms ({c['fwd_ratio']:.2f}x its floor), bwd {c['bwd_ms']:.4f} ms "
          f"({c['bwd_ratio']:.2f}x), each timed over 10 calls queued back to back; through autograd "
          f"{c['autograd_fwd_bwd_ms']:.4f} ms queued, {c['autograd_single_call_ms']:.4f} ms for one call alone; "
          f"PyTorch F.conv1d+SiLU fwd+bwd {c['pytorch_conv1d_fwd_bwd_ms']:.4f} ms")
    print(f"  conv fwd+bwd through autograd, {packed['shape']}: unpacked {packed['unpacked_ms']:.4f} ms, "
          f"cu_seqlens {packed['cu_seqlens_ms']:.4f} ms, cu_seqlens with per-sequence states "
          f"{packed['cu_seqlens_states_ms']:.4f} ms ({packed['cu_seqlens_states_ms'] / packed['unpacked_ms']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
