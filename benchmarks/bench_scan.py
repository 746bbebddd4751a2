"""Benchmark of the selective scan against the straightforward PyTorch loop and the machine's floor.

CPU (default): shapes (1, 1536, 2048) and (8, 768, 1024), N = 16, fp32, B/C input-dependent
(batch, 1, N, seqlen), with z, D, delta_bias and softplus; forward and forward+backward; our op against
the PyTorch loop (one step per time step, vectorized over batch, channel and state) and autograd through
it; peak memory of each (a fresh process per measurement); the floor from the exp and multiply-add work
per (element, state) over rates measured on this machine in the same run.

Usage: python benchmarks/bench_scan.py [--device cpu|cuda] [--out DIR] [--quick]
       --device cuda runs benchmarks/bench_scan_cuda.py (see its docstring).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [(1, 1536, 2048), (8, 768, 1024)]
N = 16
# Work per (element, state): forward = 1 exp + 3 multiply-adds (decay*h + dt*u*B, C*h); the backward
# recomputes the chunk's states (1 exp + 3) and runs the reverse pass (about 9 multiply-adds).
WORK = {"fwd": (1, 3), "fwd+bwd": (2, 15)}


def make_inputs(batch, dim, seqlen, grad=False):
    g = torch.Generator().manual_seed(batch * dim + seqlen)
    t = {"u": torch.randn(batch, dim, seqlen, generator=g),
         "delta": 0.5 * torch.randn(batch, dim, seqlen, generator=g) - 1,
         "A": -(0.5 + 2 * torch.rand(dim, N, generator=g)),
         "B": torch.randn(batch, 1, N, seqlen, generator=g),
         "C": torch.randn(batch, 1, N, seqlen, generator=g),
         "D": torch.randn(dim, generator=g),
         "z": torch.randn(batch, dim, seqlen, generator=g),
         "delta_bias": 0.1 * torch.rand(dim, generator=g)}
    for v in t.values():
        v.requires_grad_(grad)
    return t


def ours(t):
    import mamba_ext
    return mamba_ext.selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
                                    delta_softplus=True)


def pytorch_loop(t):
    """The straightforward loop: one step per time step, vectorized over batch, channel and state."""
    u, A, B, C = t["u"], t["A"], t["B"][:, 0], t["C"][:, 0]
    dt = F.softplus(t["delta"] + t["delta_bias"][:, None])
    h = u.new_zeros(u.shape[0], u.shape[1], N)
    ys = []
    for i in range(u.shape[2]):
        dt_t, u_t = dt[:, :, i], u[:, :, i]
        h = torch.exp(dt_t[..., None] * A) * h + (dt_t * u_t)[..., None] * B[:, None, :, i]
        ys.append((h * C[:, None, :, i]).sum(-1))
    y = torch.stack(ys, dim=-1) + t["D"][:, None] * u
    return y * F.silu(t["z"])


IMPLS = {"ours": ours, "pytorch_loop": pytorch_loop}


def run_once(impl, t, mode):
    out = IMPLS[impl](t)
    if mode == "fwd+bwd":
        out.backward(torch.ones_like(out))


def median_ms(impl, shape, mode, reps):
    t = make_inputs(*shape, grad=mode == "fwd+bwd")
    ctx = torch.no_grad() if mode == "fwd" else torch.enable_grad()
    # Warm-up: at least 0.5 s of calls (one of the slow loop). Right after machine_rates the BLAS threads of
    # its matmul still spin on the 2 cores for a while: forwards at (1, 1536, 2048) measured 8.9 ms there
    # after three warm-up calls, against 5.9 ms in a process without the matmul.
    with ctx:
        warm_until = time.perf_counter() + 0.5
        while time.perf_counter() < warm_until:
            run_once(impl, t, mode)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            run_once(impl, t, mode)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def peak_mb(impl, shape, mode):
    """Peak resident memory of one call above the inputs' baseline, measured in a fresh process (MB)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--peak", impl, mode, ",".join(map(str, shape))]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])


def rss_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def print_peak(impl, mode, shape):
    """Child side of peak_mb: the process's resident high-water mark during one call, above its resident
    size before it (Linux: writing 5 to /proc/self/clear_refs resets the high-water mark)."""
    import mamba_ext  # noqa: F401
    t = make_inputs(*shape, grad=mode == "fwd+bwd")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = rss_kb("VmRSS")
    with torch.no_grad() if mode == "fwd" else torch.enable_grad():
        run_once(impl, t, mode)
    print((rss_kb("VmHWM") - base) / 1024)


def machine_rates():
    """Vector exp results/s (torch.exp on a cache-resident tensor, all threads) and multiply-adds/s
    (half the flop rate of a 1024^3 fp32 matmul), measured now on this machine."""
    x = torch.randn(1 << 16)
    y = torch.empty_like(x)
    for _ in range(10):
        torch.exp(x, out=y)
    reps = 2000
    start = time.perf_counter()
    for _ in range(reps):
        torch.exp(x, out=y)
    exp_rate = reps * x.numel() / (time.perf_counter() - start)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(10):
        torch.mm(a, b)
    fma_rate = 10 * 1024**3 / (time.perf_counter() - start)
    return exp_rate, fma_rate


def floor_ms(shape, mode, exp_rate, fma_rate):
    n_exp, n_fma = WORK[mode]
    states = shape[0] * shape[1] * shape[2] * N
    return 1e3 * states * (n_exp / exp_rate + n_fma / fma_rate)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="out", help="directory for the JSON results")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and no memory measurement")
    ap.add_argument("--peak", nargs=3, metavar=("IMPL", "MODE", "SHAPE"), help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args(argv)
    if args.peak:
        impl, mode, shape = args.peak
        return print_peak(impl, mode, tuple(int(v) for v in shape.split(",")))
    if args.device == "cuda":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_scan_cuda
        return bench_scan_cuda.main(rest + ["--out", args.out])
    import mamba_ext  # noqa: F401  (fail early if the library is missing)
    exp_rate, fma_rate = machine_rates()
    print(f"CPU: {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}; measured "
          f"exp {exp_rate / 1e9:.2f} G/s, multiply-add {fma_rate / 1e9:.1f} G/s")
    rows = []
    header = (f"{'shape':>16} {'mode':>8} {'ours ms':>9} {'loop ms':>9} {'speedup':>8} {'floor ms':>9} "
              f"{'floor/ours':>10} {'ours MB':>8} {'loop MB':>8}")
    print(header)
    for shape in SHAPES:
        for mode in ("fwd", "fwd+bwd"):
            ours_ms = median_ms("ours", shape, mode, reps=3 if args.quick else 9)
            loop_ms = median_ms("pytorch_loop", shape, mode, reps=1 if args.quick else 3)
            fl = floor_ms(shape, mode, exp_rate, fma_rate)
            mem = (None, None) if args.quick else (peak_mb("ours", shape, mode), peak_mb("pytorch_loop", shape, mode))
            row = dict(shape=shape, mode=mode, ours_ms=ours_ms, loop_ms=loop_ms, speedup=loop_ms / ours_ms,
                       floor_ms=fl, fraction_of_floor=fl / ours_ms, ours_peak_mb=mem[0], loop_peak_mb=mem[1])
            rows.append(row)
            mem_txt = " ".join(f"{m:8.0f}" if m is not None else f"{'-':>8}" for m in mem)
            print(f"{str(shape):>16} {mode:>8} {ours_ms:9.2f} {loop_ms:9.1f} {loop_ms / ours_ms:7.1f}x {fl:9.2f} "
                  f"{fl / ours_ms:10.2f} {mem_txt}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench_scan_cpu.json")
    with open(path, "w") as f:
        json.dump(dict(device="cpu", threads=torch.get_num_threads(), exp_per_s=exp_rate, fma_per_s=fma_rate,
                       rows=rows), f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
