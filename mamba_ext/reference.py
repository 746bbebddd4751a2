"""Pure-PyTorch references, independent of the compiled kernels: the oracle every kernel is tested against.

Written for clarity, not speed: one step per time step, computed in the dtype given (tests pass fp32 or fp64).
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _expand_BC(X: Tensor, dim: int, seqlen: int) -> Tensor:
    """Constant (dim, N) or input-dependent (batch, [groups,] N, seqlen) -> (batch or 1, dim, N, seqlen)."""
    if X.dim() == 2:
        return X[None, :, :, None].expand(1, dim, X.shape[1], seqlen)
    if X.dim() == 3:
        X = X.unsqueeze(1)
    return X.repeat_interleave(dim // X.shape[1], dim=1)


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                       z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None,
                       delta_softplus: bool = False, initial_state: Optional[Tensor] = None,
                       return_last_state: bool = False):
    """Reference selective scan; same arguments and shapes as ``mamba_ext.selective_scan``.

    Computes in the promoted dtype of its inputs (cast them to fp32 or fp64 first) and returns that dtype.
    """
    batch, dim, seqlen = u.shape
    dt = delta + delta_bias[:, None] if delta_bias is not None else delta
    if delta_softplus:
        dt = F.softplus(dt)  # threshold 20, as in the kernels
    Bx = _expand_BC(B, dim, seqlen)
    Cx = _expand_BC(C, dim, seqlen)
    h = initial_state if initial_state is not None else u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(seqlen):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        ys.append((h * Cx[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + D[:, None] * u
    out = y * F.silu(z) if z is not None else y
    return (out, h) if return_last_state else out
