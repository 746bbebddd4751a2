"""CUDA benchmark of the selective scan (issue 3): ours against the floor, mamba_ssm's published numbers,
the pure-PyTorch reference and SDPA flash attention, plus the seqlen sweep of the paper's Figure 8 (left).

Shapes are (batch, dim, seqlen), N = 16, B/C input-dependent (batch, 1, N, seqlen), with z, D, delta_bias
and softplus. Times are medians of CUDA-event timings after warm-up, on random inputs, rotating input sets
so that their total exceeds L2: waiting for the GPU after each call (the host's time to the first launch
included), issued back to back (b2b: the host runs ahead), and replayed from a CUDA graph. The floor is
max((N + 4) * elements / exp2 rate, bytes / copy bandwidth), both ceilings measured in the same run
(gpu_ceilings.py beside this file).

Usage: python benchmarks/bench_scan_cuda.py [--out DIR] [--no-sweep]
       python benchmarks/bench_scan_cuda.py --plot DIR/bench_scan_cuda.json   (redraw the figure only)
Called by bench_scan.py for --device cuda as main(argv).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [(8, 1536, 2048), (4, 4096, 2048), (1, 4096, 16384), (1, 1536, 131072), (16, 1536, 512)]
N = 16
# mamba_ssm on an H100 80GB HBM3, bf16 (DESIGN.md section 5; not installed on the GPU machine): fwd, fwd+bwd ms.
MAMBA_SSM = {(8, 1536, 2048): (0.451, 2.28), (4, 4096, 2048): (0.596, 3.02), (1, 4096, 16384): (1.48, 6.94),
             (1, 1536, 131072): (4.45, 19.9), (16, 1536, 512): (0.217, 1.05)}
L2_BYTES = 50 * 2**20
SWEEP = [512 * 2**i for i in range(10)]  # 512 ... 262144 at (1, 2048, L)


def make_inputs(batch, dim, seqlen, dtype, grad=False, device="cuda"):
    t = {"u": torch.randn(batch, dim, seqlen, device=device, dtype=dtype),
         "delta": (0.5 * torch.randn(batch, dim, seqlen, device=device) - 1).to(dtype),
         "A": -(0.5 + 2 * torch.rand(dim, N, device=device)),
         "B": torch.randn(batch, 1, N, seqlen, device=device, dtype=dtype),
         "C": torch.randn(batch, 1, N, seqlen, device=device, dtype=dtype),
         "D": torch.randn(dim, device=device),
         "z": torch.randn(batch, dim, seqlen, device=device, dtype=dtype),
         "delta_bias": 0.5 * torch.randn(dim, device=device)}
    if grad:
        for v in t.values():
            v.requires_grad_()
        t["dout"] = torch.randn(batch, dim, seqlen, device=device, dtype=dtype)
    return t


def input_sets(batch, dim, seqlen, dtype, grad):
    one = batch * dim * seqlen * torch.tensor([], dtype=dtype).element_size() * (4 if grad else 3)
    n = max(2, min(8, math.ceil(2 * L2_BYTES / one)))
    return [make_inputs(batch, dim, seqlen, dtype, grad) for _ in range(n)]


def bench(fn, sets, warmup=3, reps=15):
    """Median milliseconds of fn(set) over reps, rotating input sets, after warmup calls."""
    for i in range(warmup):
        fn(sets[i % len(sets)])
    times = []
    for i in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(sets[i % len(sets)])
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def bench_streamed(fn, sets, warmup=3, reps=15):
    """Median milliseconds of fn(set) between CUDA events, the calls issued back to back without waiting for
    the GPU in between (as triton's do_bench): the host runs ahead, so a call's time is the GPU's unless the
    host cannot keep up with it. bench() waits after every call, so each of its calls also holds the host's
    time to the first launch, during which the GPU idles."""
    for i in range(warmup):
        fn(sets[i % len(sets)])
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for i, (start, end) in enumerate(events):
        start.record()
        fn(sets[i % len(sets)])
        end.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in events)


def scan(t):
    """The op's outputs as a tuple: (out,), or (out, last_state) for per-sequence states (cu_seqlens)."""
    import mamba_ext
    result = mamba_ext.selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
                                      True, t.get("initial_state"), "cu_seqlens" in t, seq_idx=t.get("seq_idx"),
                                      cu_seqlens=t.get("cu_seqlens"))
    return result if isinstance(result, tuple) else (result,)


def fwd(t):
    with torch.no_grad():
        scan(t)


GRAD_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def fwd_bwd(t):
    # autograd.grad, not .backward(): from the second call on, .backward() would also add every gradient into
    # the inputs' .grad, an extra pass over du, ddelta, dz, dB and dC that is not the op's cost.
    outs = scan(t)
    inputs = [t[k] for k in GRAD_INPUTS + (("initial_state",) if "initial_state" in t else ())]
    torch.autograd.grad(outs, inputs, (t["dout"], t.get("dlast"))[:len(outs)])


def time_ours(batch, dim, seqlen, dtype, streamed=False):
    """Forward and forward+backward ms by bench(), or by bench_streamed() when streamed."""
    timer = bench_streamed if streamed else bench
    sets = input_sets(batch, dim, seqlen, dtype, False)
    f = timer(fwd, sets)
    del sets
    sets = input_sets(batch, dim, seqlen, dtype, True)
    fb = timer(fwd_bwd, sets, warmup=2, reps=9)
    del sets
    torch.cuda.empty_cache()
    return f, fb


def time_graph(batch, dim, seqlen, dtype=torch.bfloat16):
    """GPU time without the host: the forward and forward+backward replayed from CUDA graphs, one call per
    rotated input set, per call. Event timings of eager calls also hold the host's time to the first launch
    and, in forward+backward, the autograd engine's hand-off between the forward and the backward kernels,
    which the GPU waits out when its work is short (scripts/host_timeline.py)."""
    times = []
    for fn, grad in ((fwd, False), (fwd_bwd, True)):
        sets = input_sets(batch, dim, seqlen, dtype, grad)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capturing stream, as torch.cuda.graph asks
            for t in sets:
                fn(t)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for t in sets:
                fn(t)
        times.append(bench(lambda _: graph.replay(), [None], warmup=3, reps=15) / len(sets))
        del graph, sets
        torch.cuda.empty_cache()
    return times


def time_packed(dim=4096, seqlen=16384, n_seqs=8, dtype=torch.bfloat16):
    """One row packing n_seqs equal sequences, against the same row unpacked: with seq_idx (the state restarts
    from zero), and with cu_seqlens and per-sequence states (an initial state per sequence, its last state,
    and a gradient flowing into those last states)."""
    def packed(sets, per_sequence_states):
        for t in sets:
            if per_sequence_states:
                t["cu_seqlens"] = torch.arange(n_seqs + 1, device="cuda", dtype=torch.int32) * (seqlen // n_seqs)
                t["initial_state"] = torch.randn(n_seqs, dim, N, device="cuda", requires_grad="dout" in t)
                t["dlast"] = torch.randn(n_seqs, dim, N, device="cuda")
            else:
                t["seq_idx"] = (torch.arange(seqlen, device="cuda") * n_seqs // seqlen).int()[None].contiguous()
        return sets
    result = {"shape": [1, dim, seqlen], "n_seqs": n_seqs}
    for name, states in (("seq_idx", False), ("cu_seqlens", True)):
        result[f"{name}_fwd_ms"] = bench(fwd, packed(input_sets(1, dim, seqlen, dtype, False), states))
        result[f"{name}_fwdbwd_ms"] = bench(fwd_bwd, packed(input_sets(1, dim, seqlen, dtype, True), states),
                                            warmup=2, reps=9)
        torch.cuda.empty_cache()
    return result


def time_reference(batch, dim, seqlen, device="cuda"):
    """The pure-PyTorch reference (one step at a time), in fp32 as it expects, on bf16-valued inputs."""
    from mamba_ext.reference import selective_scan_ref
    t = make_inputs(batch, dim, seqlen, torch.bfloat16, device=device)
    args = [t[k].float() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    with torch.no_grad():
        return bench(lambda _: selective_scan_ref(*args, delta_softplus=True), [None], warmup=1, reps=3)


def sdpa_heads(dim):
    width = dim // 2  # the Transformer layer of the same width: dim / 2 model width
    head_dim = 128 if dim >= 4096 else 64
    return width // head_dim, head_dim


def time_sdpa(batch, dim, seqlen):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    heads, head_dim = sdpa_heads(dim)
    sets = [[torch.randn(batch, heads, seqlen, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
            for _ in range(2)]
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
        reps = 15 if seqlen <= 32768 else 3
        return bench(lambda qkv: F.scaled_dot_product_attention(*qkv, is_causal=True), sets, warmup=2, reps=reps)


def floor_ms(batch, dim, seqlen, dtype, ceil):
    elements = batch * dim * seqlen
    size = torch.tensor([], dtype=dtype).element_size()
    bytes_moved = size * (4 * elements + 2 * batch * N * seqlen)  # u, delta, z in, out; B, C
    return 1e3 * max((N + 4) * elements / ceil["exp2_per_s"], bytes_moved / ceil["copy_bytes_per_s"])


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib not installed: figure not drawn (redraw with --plot {path[:-4]}.json)")
        return
    sweep = results["sweep"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for key, label, style in (("ours_fwd_ms", "mamba_ext scan (CUDA)", "o-"),
                              ("sdpa_flash_ms", "SDPA flash attention (causal)", "s-"),
                              ("reference_ms", "PyTorch reference scan", "^--")):
        pts = [(r["seqlen"], r[key]) for r in sweep if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel("forward time (ms)")
    ax.set_title(f"Scan vs attention, (1, 2048, L), bf16, N=16\n{results['device']}, {results['date']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results", help="directory for the JSON and the PNG")
    ap.add_argument("--no-sweep", action="store_true", help="skip the Figure 8 sweep")
    ap.add_argument("--plot", help="only redraw the figure from this JSON file")
    args = ap.parse_args(argv)
    if args.plot:
        results = json.load(open(args.plot))
        plot(results, os.path.join(os.path.dirname(args.plot), "fig8_left_scan_vs_attention.png"))
        return results
    import mamba_ext
    assert torch.cuda.is_available() and mamba_ext.has_cuda(), "needs a GPU and mamba_ext built with CUDA"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from gpu_ceilings import ceilings
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    ceil = ceilings()
    results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"),
               "torch": torch.__version__, "ceilings": ceil, "shapes": [], "sweep": []}
    print(f"{ceil['device']}: copy {ceil['copy_bytes_per_s'] / 1e12:.2f} TB/s, "
          f"exp2 {ceil['exp2_per_s'] / 1e12:.2f} T/s")
    for shape in SHAPES:
        row = {"shape": shape}
        for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
            row[f"{name}_fwd_ms"], row[f"{name}_fwdbwd_ms"] = time_ours(*shape, dtype)
            row[f"{name}_floor_ms"] = floor_ms(*shape, dtype, ceil)
        row["bf16_streamed_fwd_ms"], row["bf16_streamed_fwdbwd_ms"] = time_ours(*shape, torch.bfloat16, True)
        row["bf16_graph_fwd_ms"], row["bf16_graph_fwdbwd_ms"] = time_graph(*shape)
        row["mamba_ssm_fwd_ms"], row["mamba_ssm_fwdbwd_ms"] = MAMBA_SSM[shape]
        row["sdpa_flash_ms"] = time_sdpa(*shape)
        results["shapes"].append(row)
        print(f"  {shape}: bf16 fwd {row['bf16_fwd_ms']:.3f} fwd+bwd {row['bf16_fwdbwd_ms']:.3f} (CUDA graph "
              f"{row['bf16_graph_fwd_ms']:.3f} / {row['bf16_graph_fwdbwd_ms']:.3f}), fp32 fwd "
              f"{row['fp32_fwd_ms']:.3f} fwd+bwd {row['fp32_fwdbwd_ms']:.3f}, back to back "
              f"{row['bf16_streamed_fwd_ms']:.3f} / {row['bf16_streamed_fwdbwd_ms']:.3f}, floor "
              f"{row['bf16_floor_ms']:.3f}, sdpa {row['sdpa_flash_ms']:.3f} ms", flush=True)
        json.dump(results, open(os.path.join(args.out, "bench_scan_cuda.json"), "w"), indent=1)
    results["packed"] = time_packed()
    packed = results["packed"]
    print(f"  packed {tuple(packed['shape'])}, {packed['n_seqs']} sequences: seq_idx fwd "
          f"{packed['seq_idx_fwd_ms']:.3f} fwd+bwd {packed['seq_idx_fwdbwd_ms']:.3f} ms; cu_seqlens with states fwd "
          f"{packed['cu_seqlens_fwd_ms']:.3f} fwd+bwd {packed['cu_seqlens_fwdbwd_ms']:.3f} ms", flush=True)
    ref_shape = SHAPES[0]
    results["reference"] = {"shape": ref_shape, "ms": time_reference(*ref_shape)}
    print(f"  reference {ref_shape}: {results['reference']['ms']:.1f} ms", flush=True)
    if not args.no_sweep:
        for L in SWEEP:
            r = {"seqlen": L, "ours_fwd_ms": bench(fwd, input_sets(1, 2048, L, torch.bfloat16, False)),
                 "sdpa_flash_ms": time_sdpa(1, 2048, L),
                 "reference_ms": time_reference(1, 2048, L) if L <= 4096 else None}
            results["sweep"].append(r)
            print(f"  sweep L={L}: ours {r['ours_fwd_ms']:.3f} ms, sdpa {r['sdpa_flash_ms']:.3f} ms", flush=True)
            torch.cuda.empty_cache()
    json_path = os.path.join(args.out, "bench_scan_cuda.json")
    json.dump(results, open(json_path, "w"), indent=1)
    print_table(results)
    if results["sweep"]:
        plot(results, os.path.join(args.out, "fig8_left_scan_vs_attention.png"))
    return results


def print_table(results):
    print(f"\nselective scan, CUDA, {results['device']}, {results['date']}, torch {results['torch']}; "
          "N=16, B/C (batch,1,N,L), z, D, delta_bias, softplus; ms, median of CUDA events, waiting for the GPU "
          "after each call; b2b: the same calls issued back to back (the host runs ahead, as in do_bench); graph: "
          "the same calls replayed from a CUDA graph (GPU time without the host's)")
    hdr = (f"{'(batch,dim,seqlen)':20s} {'bf16 fwd':>9s} {'fwd+bwd':>8s} {'floor':>6s} {'floor/fwd':>9s} "
           f"{'b2b fwd':>8s} {'fwd+bwd':>8s} {'graph fwd':>9s} {'fwd+bwd':>8s} {'mamba_ssm':>13s} {'speedup':>11s} "
           f"{'fp32 fwd':>9s} {'fwd+bwd':>8s} {'SDPA':>8s} {'SDPA/ours':>9s}")
    print(hdr)
    nan = float("nan")
    for r in results["shapes"]:
        ms_f, ms_fb = r["mamba_ssm_fwd_ms"], r["mamba_ssm_fwdbwd_ms"]
        print(f"{str(tuple(r['shape'])):20s} {r['bf16_fwd_ms']:9.3f} {r['bf16_fwdbwd_ms']:8.3f} "
              f"{r['bf16_floor_ms']:6.3f} {r['bf16_floor_ms'] / r['bf16_fwd_ms']:9.2f} "
              f"{r.get('bf16_streamed_fwd_ms', nan):8.3f} {r.get('bf16_streamed_fwdbwd_ms', nan):8.3f} "
              f"{r.get('bf16_graph_fwd_ms', nan):9.3f} {r.get('bf16_graph_fwdbwd_ms', nan):8.3f} "
              f"{ms_f:6.3f}/{ms_fb:6.2f} {ms_f / r['bf16_fwd_ms']:5.2f}/{ms_fb / r['bf16_fwdbwd_ms']:5.2f} "
              f"{r['fp32_fwd_ms']:9.3f} {r['fp32_fwdbwd_ms']:8.3f} {r['sdpa_flash_ms']:8.3f} "
              f"{r['sdpa_flash_ms'] / r['bf16_fwd_ms']:9.2f}")
    packed = results.get("packed")
    if packed:
        same = next(r for r in results["shapes"] if list(r["shape"]) == packed["shape"])
        for name, what in (("seq_idx", "seq_idx"), ("cu_seqlens", "cu_seqlens with per-sequence states")):
            f, fb = packed[f"{name}_fwd_ms"], packed[f"{name}_fwdbwd_ms"]
            print(f"Packed row {tuple(packed['shape'])} holding {packed['n_seqs']} sequences ({what}): bf16 fwd "
                  f"{f:.3f} ms, fwd+bwd {fb:.3f} ms ({f / same['bf16_fwd_ms']:.2f}x / "
                  f"{fb / same['bf16_fwdbwd_ms']:.2f}x the unpacked row)")
    ref = results["reference"]
    first = results["shapes"][0]
    print(f"PyTorch reference scan at {tuple(ref['shape'])}: {ref['ms']:.1f} ms "
          f"({ref['ms'] / first['bf16_fwd_ms']:.0f}x our bf16 forward)")


if __name__ == "__main__":
    main()
