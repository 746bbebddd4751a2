"""Quick CUDA check of the selective scan against the pure-PyTorch reference (fp64), then rough timings.

Fresh random inputs each run, outputs compared by relative L2 error. Usage: python scripts/cuda_quick_check.py
"""
import math
import os
import sys
import time

import torch

import mamba_ext

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
from mamba_ext.reference import selective_scan_ref


def make_inputs(batch, dim, L, N, dtype, groups=1, var_B=True, var_C=True, z=True, D=True, bias=True, init=False,
                device=None):
    device = device or DEVICE
    g = torch.Generator(device="cpu").manual_seed(torch.seed() % 2**31)
    r = lambda *s: torch.randn(*s, generator=g)
    t = {}
    t["u"] = r(batch, dim, L).to(device, dtype)
    t["delta"] = (0.5 * r(batch, dim, L) - 1.0).to(device, dtype)
    t["A"] = (-(0.5 + torch.rand(dim, N, generator=g) * 2)).to(device)
    t["B"] = (r(batch, groups, N, L).to(device, dtype) if var_B else r(dim, N).to(device))
    t["C"] = (r(batch, groups, N, L).to(device, dtype) if var_C else r(dim, N).to(device))
    if groups == 1 and var_B:
        t["B"] = t["B"][:, 0]
    t["D"] = r(dim).to(device) if D else None
    t["z"] = r(batch, dim, L).to(device, dtype) if z else None
    t["delta_bias"] = (0.5 * r(dim)).to(device) if bias else None
    t["initial_state"] = r(batch, dim, N).to(device) if init else None
    return t


def run(fn, t, softplus=True):
    return fn(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"], softplus,
              t["initial_state"])


def ours(u, delta, A, B, C, D, z, bias, sp, init):
    return mamba_ext.selective_scan(u, delta, A, B, C, D, z, bias, sp, init, return_last_state=True)


def ref(u, delta, A, B, C, D, z, bias, sp, init):
    return selective_scan_ref(u, delta, A, B, C, D, z, bias, sp, init, return_last_state=True)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(name, batch, dim, L, N, dtype, grads=True, **kw):
    t = make_inputs(batch, dim, L, N, dtype, **kw)
    names = [k for k, v in t.items() if v is not None]
    leaves = {k: t[k].detach().clone().requires_grad_(grads) for k in names}
    t64 = {k: (t[k].detach().double().requires_grad_(grads) if t[k] is not None else None) for k in t}
    full = dict(t)
    full.update(leaves)
    out, last = run(ours, full)
    out_r, last_r = run(ref, t64)
    errs = {"out": rel(out, out_r), "last": rel(last, last_r)}
    if grads:
        dout = torch.randn_like(out_r)
        dlast = torch.randn_like(last_r)
        (out.double() * dout).sum().backward(retain_graph=False) if False else None
        torch.autograd.backward([out, last], [dout.to(out.dtype), dlast.float()])
        torch.autograd.backward([out_r, last_r], [dout, dlast])
        for k in names:
            errs["d" + k] = rel(leaves[k].grad, t64[k].grad)
    tol = 2e-5 if dtype == torch.float32 else (2e-2 if dtype == torch.bfloat16 else 4e-3)
    bad = {k: v for k, v in errs.items() if not (v < tol)}
    worst = max(errs.values())
    print(f"{'FAIL' if bad else 'ok  '} {name:38s} {str(dtype)[6:]:9s} worst={worst:.2e} "
          + (" ".join(f"{k}={v:.1e}" for k, v in bad.items())))
    return not bad


def determinism():
    t = make_inputs(2, 256, 300, 16, torch.bfloat16)
    gs = []
    for _ in range(2):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items() if v is not None}
        full = dict(t)
        full.update(leaves)
        out, last = run(ours, full)
        (out.float().square().sum() + last.sum()).backward()
        gs.append([leaves[k].grad for k in sorted(leaves)])
    same = all(torch.equal(a, b) for a, b in zip(*gs))
    print(("ok  " if same else "FAIL") + " deterministic backward bitwise identical")
    return same


def timing():
    print("\ntimings (bf16, N=16, B/C (batch,1,N,L), z, D, delta_bias, softplus), median of CUDA events")
    for batch, dim, L in [(8, 1536, 2048), (4, 4096, 2048), (1, 4096, 16384), (1, 1536, 131072), (16, 1536, 512)]:
        for dtype in (torch.bfloat16, torch.float32):
            sets = [make_inputs(batch, dim, L, 16, dtype) for _ in range(2)]
            for s in sets:
                for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"):
                    s[k].requires_grad_()

            def fwd(s):
                with torch.no_grad():
                    return run(ours, s)

            def fwdbwd(s):
                out, last = run(ours, s)
                out.backward(s["dout"])

            for s in sets:
                s["dout"] = torch.randn_like(s["u"])
            res = []
            for fn in (fwd, fwdbwd):
                for i in range(3):
                    fn(sets[i % 2])
                ts = []
                for i in range(10):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    fn(sets[i % 2])
                    b.record()
                    torch.cuda.synchronize()
                    ts.append(a.elapsed_time(b))
                res.append(sorted(ts)[len(ts) // 2])
            print(f"  ({batch},{dim},{L}) {str(dtype)[6:]:9s} fwd {res[0]:.3f} ms  fwd+bwd {res[1]:.3f} ms")
            del sets
            torch.cuda.empty_cache()


def main():
    torch.manual_seed(int(time.time()))
    assert DEVICE == "cpu" or mamba_ext.has_cuda(), "library built without CUDA"
    ok = True
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for L in (1, 31, 32, 33, 100, 257):
            ok &= check(f"small split L={L}", 2, 5, L, 16, dtype, init=True)
        ok &= check("no split (4,4096,70)", 4, 4096, 70, 16, dtype, init=True)
        ok &= check("no split aligned (4,4096,72)", 4, 4096, 72, 16, dtype, init=True)
        ok &= check("split aligned (2,5,200)", 2, 5, 200, 16, dtype, init=True)
    for N in (1, 4, 7, 33, 64, 128, 200, 256):
        ok &= check(f"N={N}", 2, 6, 45, N, torch.float32, init=True)
    ok &= check("N=256 no split", 8, 512, 40, 256, torch.float32)
    ok &= check("N=64 no split aligned", 8, 1024, 64, 64, torch.bfloat16)
    for vb, vc in ((False, True), (True, False), (False, False)):
        ok &= check(f"varB={vb} varC={vc}", 2, 8, 77, 16, torch.float32, var_B=vb, var_C=vc)
        ok &= check(f"varB={vb} varC={vc} nosplit", 4, 4096, 40, 16, torch.float32, var_B=vb, var_C=vc)
    ok &= check("groups=2", 2, 8, 77, 16, torch.float32, groups=2)
    ok &= check("groups=4 nosplit", 2, 4096, 40, 16, torch.float32, groups=4)
    ok &= check("groups=3 dim 48 (partial blocks)", 2, 48 * 3, 50, 16, torch.float32, groups=3)
    ok &= check("no z/D/bias", 2, 40, 64, 16, torch.float32, z=False, D=False, bias=False)
    ok &= check("long split L=5000", 1, 3, 5000, 16, torch.float32, init=True)
    ok &= determinism()
    print("ALL OK" if ok else "SOME FAILED")
    if DEVICE == "cuda" and os.environ.get("NO_TIMING", "0") != "1":
        timing()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
