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
                       return_last_state: bool = False, seq_idx: Optional[Tensor] = None):
    """Reference selective scan; same arguments and shapes as ``mamba_ext.selective_scan``.

    Computes in the promoted dtype of its inputs (cast them to fp32 or fp64 first) and returns that dtype.
    """
    batch, dim, seqlen = u.shape
    dt = delta + delta_bias[:, None] if delta_bias is not None else delta
    if delta_softplus:
        dt = F.softplus(dt)  # threshold 20, as in the kernels
    Bx = _expand_BC(B, dim, seqlen)
    Cx = _expand_BC(C, dim, seqlen)
    decay = torch.exp(dt[..., None] * A[:, None, :])  # (batch, dim, seqlen, N)
    drive = (dt * u)[..., None] * Bx.transpose(-1, -2)  # (batch, dim, seqlen, N)
    h = initial_state if initial_state is not None else u.new_zeros(batch, dim, A.shape[1])
    states = []
    for t in range(seqlen):
        if seq_idx is not None and t > 0:  # a new packed sequence starts from a zero state
            h = h * (seq_idx[:, t] == seq_idx[:, t - 1]).to(h.dtype)[:, None, None]
        h = decay[:, :, t] * h + drive[:, :, t]
        states.append(h)
    if states:
        y = torch.einsum("bdtn,bdnt->bdt", torch.stack(states, dim=2), Cx.expand(batch, -1, -1, -1))
    else:
        y = u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + D[:, None] * u
    out = y * F.silu(z) if z is not None else y
    return (out, h) if return_last_state else out


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, activation: Optional[str] = None,
                      initial_states: Optional[Tensor] = None, return_final_states: bool = False,
                      seq_idx: Optional[Tensor] = None):
    """Reference causal depthwise conv1d; same arguments and shapes as ``mamba_ext.causal_conv1d``.

    Without seq_idx this is F.conv1d on [initial_states (or zeros), x]. With seq_idx, every tap that reaches
    an input of another sequence (the initial states count as the row's first sequence) is masked to zero.
    """
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    init = initial_states if initial_states is not None else x.new_zeros(batch, dim, width - 1)
    xe = torch.cat([init.to(x.dtype), x], dim=-1)  # (batch, dim, width - 1 + seqlen)
    if seqlen == 0:
        out = x.new_zeros(batch, dim, 0)
    elif seq_idx is None and dim > 0:
        out = F.conv1d(xe, weight.unsqueeze(1).to(x.dtype), None, groups=dim)
    else:
        # Tap k of output t reads xe[t + k], at time position t + k - (width - 1); mask other sequences.
        windows = xe.unfold(-1, width, 1)  # (batch, dim, seqlen, width)
        if seq_idx is not None:
            pos = torch.arange(seqlen, device=x.device)[:, None] + torch.arange(width, device=x.device)
            seq_e = torch.cat([seq_idx[:, :1].expand(batch, width - 1), seq_idx], dim=1)  # ids of xe
            windows = windows * (seq_e[:, pos] == seq_idx[:, :, None])[:, None].to(x.dtype)
        out = (windows * weight.to(x.dtype)[None, :, None, :]).sum(-1)
    if bias is not None:
        out = out + bias.to(x.dtype)[:, None]
    if activation in ("silu", "swish"):
        out = F.silu(out)
    if not return_final_states:
        return out
    final = xe[..., seqlen:]
    if seq_idx is not None and seqlen > 0:
        seq_e = torch.cat([seq_idx[:, :1].expand(batch, width - 1), seq_idx], dim=1)
        final = final * (seq_e[:, seqlen:] == seq_idx[:, -1:])[:, None].to(x.dtype)
    return out, final


def causal_conv1d_update_ref(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                             activation: Optional[str] = None, conv_state_indices: Optional[Tensor] = None) -> Tensor:
    """Reference of ``mamba_ext.causal_conv1d_update``: updates conv_state in place and returns out like x."""
    width, state_len = weight.shape[1], conv_state.shape[-1]
    x3 = x.unsqueeze(-1) if x.dim() == 2 else x
    out = torch.zeros_like(x3)
    rows = conv_state_indices.tolist() if conv_state_indices is not None else list(range(x3.shape[0]))
    for b, s in enumerate(rows):
        if s < 0:
            continue  # padding row: zeros out, state untouched
        seq = torch.cat([conv_state[s], x3[b]], dim=-1)  # (dim, state_len + seqlen)
        for i in range(x3.shape[-1]):
            window = seq[:, state_len + i - (width - 1):state_len + i + 1]
            y = (window * weight).sum(-1)
            if bias is not None:
                y = y + bias
            out[b, :, i] = F.silu(y) if activation in ("silu", "swish") else y
        conv_state[s] = seq[:, -state_len:]
    return out.squeeze(-1) if x.dim() == 2 else out


def selective_state_update_ref(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                               D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                               dt_bias: Optional[Tensor] = None, dt_softplus: bool = False,
                               state_batch_indices: Optional[Tensor] = None) -> Tensor:
    """Reference of ``mamba_ext.selective_state_update``: updates state in place, returns out (batch, dim)."""
    batch, dim = x.shape
    rows = state_batch_indices.tolist() if state_batch_indices is not None else list(range(batch))
    B3 = B.unsqueeze(1) if B.dim() == 2 else B
    C3 = C.unsqueeze(1) if C.dim() == 2 else C
    Bx = B3.repeat_interleave(dim // B3.shape[1], dim=1)  # (batch, dim, N)
    Cx = C3.repeat_interleave(dim // C3.shape[1], dim=1)
    out = torch.zeros_like(x)
    for b, s in enumerate(rows):
        if s < 0:
            continue
        d = dt[b] + dt_bias if dt_bias is not None else dt[b]
        if dt_softplus:
            d = F.softplus(d)
        h = torch.exp(d[:, None] * A) * state[s] + (d * x[b])[:, None] * Bx[b]
        y = (h * Cx[b]).sum(-1)
        if D is not None:
            y = y + D * x[b]
        out[b] = y * F.silu(z[b]) if z is not None else y
        state[s] = h.to(state.dtype)
    return out
