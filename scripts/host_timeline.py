"""Where a benchmark call's time goes besides the kernels: host cost per call, and the timeline of one call
(CUDA runtime calls on the host, kernels on the GPU, the GPU's idle gaps), from torch.profiler's trace.

Usage: python scripts/host_timeline.py [batch dim seqlen ...]  (triples; default (16, 1536, 512))
Prints, per shape and for the forward and forward+backward of bench_scan_cuda.py: the CUDA-event time as the
benchmark takes it, the kernels' total, and one call's timeline. Also the host cost of one call on a tiny
input (GPU work negligible), against torch.add's.
"""
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "benchmarks")
from bench_scan_cuda import bench, fwd, fwd_bwd, make_inputs  # noqa: E402


def host_us(fn, t, calls=300):
    """Host microseconds per call when the GPU keeps up (tiny inputs), median of 5 loops."""
    for _ in range(20):
        fn(t)
    torch.cuda.synchronize()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn(t)
        runs.append((time.perf_counter() - start) / calls * 1e6)
        torch.cuda.synchronize()
    return statistics.median(runs)


def timeline(fn, t):
    """One call under the profiler: its kernels with the GPU's idle gaps between them (GPU clock), and the
    host's CUDA runtime calls (host clock; the two clocks are not aligned in the trace)."""
    for _ in range(5):
        fn(t)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn(t)
        torch.cuda.synchronize()
    path = os.path.join(tempfile.mkdtemp(), "trace.json")
    prof.export_chrome_trace(path)
    events = [e for e in json.load(open(path))["traceEvents"] if e.get("ph") == "X"]
    kernels = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                     key=lambda e: e["ts"])
    host = sorted((e for e in events if e.get("cat") == "cuda_runtime"
                   and not any(k in e["name"] for k in ("Event", "StreamIsCapturing", "GetLastError",
                                                        "PeekAtLastError"))), key=lambda e: e["ts"])
    if not kernels or not host:
        print("    nothing to show; categories:", sorted({e.get("cat") for e in events} - {None}))
        return
    busy = sum(e["dur"] for e in kernels)
    span = kernels[-1]["ts"] + kernels[-1]["dur"] - kernels[0]["ts"]
    print(f"    GPU: kernels {busy:.1f} us over a span of {span:.1f} us (idle {span - busy:.1f} us)")
    end = kernels[0]["ts"]
    for e in kernels:
        print(f"      gap {e['ts'] - end:7.1f}  run {e['dur']:7.1f} us  {e['name'][:80]}")
        end = e["ts"] + e["dur"]
    t0 = host[0]["ts"]
    print(f"    host: {len(host)} runtime calls over {host[-1]['ts'] - t0:.1f} us before the synchronize")
    for e in host:
        print(f"      at {e['ts'] - t0:7.1f}  took {e['dur']:6.1f} us  {e['name'][:60]}")


def main():
    nums = [int(a) for a in sys.argv[1:]] or [16, 1536, 512]
    tiny = make_inputs(1, 64, 64, torch.bfloat16, grad=True)
    x = torch.randn(64, device="cuda")
    print(f"host per call on (1, 64, 64): forward {host_us(fwd, tiny):.1f} us, forward+backward "
          f"{host_us(fwd_bwd, tiny):.1f} us; torch.add {host_us(lambda _: torch.add(x, x), None):.1f} us")
    # The internal ops alone (no autograd), and autograd through three torch ops with as many inputs as ours.
    ops = torch.ops.mamba_ext
    args = [tiny[k].detach() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    out, last, states = ops.selective_scan_fwd(*args, True, None, None, 32, None)
    internal_fwd = host_us(lambda _: ops.selective_scan_fwd(*args, True, None, None, 32, None), None)
    internal_bwd = host_us(lambda _: ops.selective_scan_bwd(tiny["dout"], None, *args, True, None, None, states, 32,
                                                            False, None), None)
    leaves = [tiny[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]

    def torch_graph(_):
        y = tiny["u"] * tiny["delta"] + tiny["z"] + (tiny["B"].sum() + tiny["C"].sum()) + \
            (tiny["A"].sum() + tiny["D"].sum() + tiny["delta_bias"].sum())
        torch.autograd.grad(y, leaves, tiny["dout"])
    print(f"host per call, internal ops alone: forward {internal_fwd:.1f} us, backward {internal_bwd:.1f} us; "
          f"autograd.grad through 8 torch ops on the same 8 inputs: {host_us(torch_graph, None):.1f} us")
    for i in range(0, len(nums), 3):
        shape = tuple(nums[i:i + 3])
        t = make_inputs(*shape, torch.bfloat16, grad=True)
        for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
            print(f"{shape} {name}: CUDA events {bench(fn, [t]) * 1e3:.1f} us")
            timeline(fn, t)


if __name__ == "__main__":
    main()
