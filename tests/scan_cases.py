"""Random inputs for selective-scan tests: every option is a field, so tests can sweep their combinations."""
import itertools
from dataclasses import dataclass, replace

import torch

BC_KINDS = ("constant", "variable", "grouped")


@dataclass(frozen=True)
class ScanCase:
    batch: int = 2
    dim: int = 4
    seqlen: int = 7
    dstate: int = 4
    bc: str = "variable"  # constant (dim, N) | variable (batch, N, seqlen) | grouped (batch, 2, N, seqlen)
    has_D: bool = True
    has_z: bool = True
    has_delta_bias: bool = True
    delta_softplus: bool = True
    has_initial_state: bool = True
    return_last_state: bool = True

    def with_(self, **kw):
        return replace(self, **kw)

    def id(self):
        flags = [k for k in ("has_D", "has_z", "has_delta_bias", "delta_softplus", "has_initial_state",
                             "return_last_state") if getattr(self, k)]
        return f"{self.bc}-" + ("+".join(f.replace("has_", "") for f in flags) or "plain")


def all_option_cases(**base):
    """Every combination of B/C kind and the six boolean options (3 x 2^6 = 192 cases)."""
    flags = ("has_D", "has_z", "has_delta_bias", "delta_softplus", "has_initial_state", "return_last_state")
    for bc in BC_KINDS:
        for values in itertools.product((False, True), repeat=len(flags)):
            yield ScanCase(bc=bc, **dict(zip(flags, values)), **base)


def make_inputs(case: ScanCase, dtype=torch.float32, device="cpu", requires_grad=False):
    """Kwargs for mamba_ext.selective_scan. Values keep the recurrence stable (dt > 0, A < 0) but are random."""
    b, d, L, N = case.batch, case.dim, case.seqlen, case.dstate
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    opts = dict(device=device, dtype=dtype)
    sopts = dict(device=device, dtype=state_dtype)
    if case.delta_softplus:
        delta = torch.randn(b, d, L, **opts) * 0.5 - 1.0
    else:
        delta = torch.rand(b, d, L, **opts) * 0.3 + 0.02
    groups = 2 if case.bc == "grouped" else 1
    if case.bc == "constant":
        B, C = torch.randn(d, N, **sopts), torch.randn(d, N, **sopts)
    elif case.bc == "variable":
        B, C = torch.randn(b, N, L, **opts), torch.randn(b, N, L, **opts)
    else:
        B, C = torch.randn(b, groups, N, L, **opts), torch.randn(b, groups, N, L, **opts)
    kw = dict(
        u=torch.randn(b, d, L, **opts), delta=delta, A=-(torch.rand(d, N, **sopts) * 1.5 + 0.5), B=B, C=C,
        D=torch.randn(d, **sopts) if case.has_D else None,
        z=torch.randn(b, d, L, **opts) if case.has_z else None,
        delta_bias=torch.rand(d, **sopts) * 0.1 if case.has_delta_bias else None,
        delta_softplus=case.delta_softplus,
        initial_state=torch.randn(b, d, N, **sopts) if case.has_initial_state else None,
        return_last_state=case.return_last_state)
    if requires_grad:
        for v in kw.values():
            if isinstance(v, torch.Tensor):
                v.requires_grad_(True)
    return kw


def tensor_args(kw):
    """Names and tensors of the differentiable inputs present in kw."""
    return [(k, v) for k, v in kw.items() if isinstance(v, torch.Tensor)]


def cast_inputs(kw, dtype, device="cpu"):
    """A copy of kw with every tensor detached, moved and cast (states and params to the matching state dtype)."""
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().to(device=device, dtype=dtype).requires_grad_(v.requires_grad)
        out[k] = v
    return out
