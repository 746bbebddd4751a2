"""Typed Python wrappers of the ``torch.ops.mamba_ext`` ops. Shapes use the (batch, dim, seqlen) notation."""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                   z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                   initial_state: Optional[Tensor] = None, return_last_state: bool = False,
                   seq_idx: Optional[Tensor] = None,
                   cu_seqlens: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Selective scan (S6), a drop-in for ``mamba_ssm``'s ``selective_scan_fn`` plus ``initial_state``.

    For batch b, channel d, state n, time t::

        dt  = delta[b,d,t] + delta_bias[d]; dt = softplus(dt) if delta_softplus
        h_t = exp(dt * A[d,n]) * h_{t-1} + dt * B[b,g(d),n,t] * u[b,d,t]     (h_{-1} = initial_state or 0)
        y_t = sum_n C[b,g(d),n,t] * h_t + D[d] * u[b,d,t];  out = y * silu(z) if z is given

    Args:
        u, delta: (batch, dim, seqlen), fp32/fp16/bf16 (fp64 on CPU).
        A: (dim, N) fp32, N <= 256.
        B, C: constant (dim, N) fp32, or input-dependent (batch, N, seqlen) or (batch, groups, N, seqlen) in
            u's dtype, with dim divisible by groups.
        D, delta_bias: (dim,) fp32.  z: (batch, dim, seqlen) like u.
        initial_state: (batch, dim, N) fp32, the state before the first step ((num_seqs, dim, N) with
            cu_seqlens).
        return_last_state: also return the state after the last step, (batch, dim, N) fp32 ((num_seqs, dim, N)
            with cu_seqlens).
        seq_idx: (batch, seqlen) int32 ids of sequences packed into one row. The state restarts from zero
            wherever the id changes, so no token sees another sequence; initial_state feeds the first
            sequence of each row and last_state is the state after the row's last sequence.
        cu_seqlens: (num_seqs + 1,) int32 or int64 on u's device, instead of seq_idx, with batch = 1: sequence
            i is the tokens [cu_seqlens[i], cu_seqlens[i + 1]) (cu_seqlens[0] = 0, cu_seqlens[-1] = seqlen,
            non-decreasing; empty sequences are allowed). Each sequence has its own states: initial_state is
            (num_seqs, dim, N), row i feeding sequence i, and last_state is (num_seqs, dim, N), row i the state
            after sequence i (an empty sequence returns its initial state, or zeros); both get gradients, on
            CPU and CUDA. The values are checked on CPU tensors only, so that CUDA calls do not synchronize.

    fp64 inputs take fp64 parameters and states. Every tensor input gets a gradient, including
    initial_state, and a gradient flowing into the returned last_state is propagated.

    Returns:
        out (batch, dim, seqlen) in u's dtype, or (out, last_state) when return_last_state.
    """
    out, last_state = torch.ops.mamba_ext.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                         initial_state, seq_idx, cu_seqlens)
    return (out, last_state) if return_last_state else out


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, activation: Optional[str] = None,
                  initial_states: Optional[Tensor] = None, return_final_states: bool = False,
                  seq_idx: Optional[Tensor] = None,
                  cu_seqlens: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    """Causal depthwise conv1d, a drop-in for ``causal_conv1d.causal_conv1d_fn`` (channel-first layout).

    Equals ``F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)[..., :seqlen]``, then SiLU
    when ``activation="silu"``; with ``initial_states`` the zero padding is replaced by those inputs.

    Args:
        x: (batch, dim, seqlen), fp32/fp16/bf16 (fp64 on CPU). Any batch/channel strides.
        weight: (dim, width), width 2..4 on CUDA (2..64 on CPU), any float dtype (accumulation is fp32).
        bias: (dim,) in weight's dtype.  activation: None or "silu" ("swish" is accepted as an alias).
        initial_states: (batch, dim, width - 1) like x: the inputs just before x[..., 0] ((num_seqs, dim,
            width - 1) with cu_seqlens).
        return_final_states: also return the last width - 1 inputs, (batch, dim, width - 1) like x, to carry
            into the next call (or into ``causal_conv1d_update``); (num_seqs, dim, width - 1) with cu_seqlens.
        seq_idx: (batch, seqlen) int32 ids of packed sequences: a token only sees inputs with its own id (the
            others count as zero padding). initial_states belong to each row's first sequence; final_states
            are zero where they reach back past the start of the row's last sequence.
        cu_seqlens: (num_seqs + 1,) int32 or int64 on x's device, instead of seq_idx, with batch = 1: sequence
            i is the tokens [cu_seqlens[i], cu_seqlens[i + 1]) (as in ``selective_scan``). Each sequence has its
            own states: initial_states is (num_seqs, dim, width - 1), the inputs before sequence i, and
            final_states is (num_seqs, dim, width - 1), the last width - 1 inputs of sequence i (reaching back
            into its initial states, or zeros, when it is shorter). Values are checked on CPU tensors only, so
            that CUDA calls do not synchronize.

    Every tensor input gets a gradient, and a gradient flowing into final_states is propagated. The backward
    is deterministic (no atomics).

    Returns:
        out (batch, dim, seqlen) like x, or (out, final_states) when return_final_states.
    """
    out, final_states = torch.ops.mamba_ext.causal_conv1d(x, weight, bias, activation, initial_states, seq_idx,
                                                          cu_seqlens)
    return (out, final_states) if return_final_states else out


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                         activation: Optional[str] = None, conv_state_indices: Optional[Tensor] = None) -> Tensor:
    """Decode step(s) of the causal conv; updates ``conv_state`` in place.

    Token i of x sees the window [conv_state[..., -(width - 1):], x[..., :i + 1]] (its last width inputs);
    afterwards conv_state holds the last state_len inputs.

    Args:
        x: (batch, dim) for one token or (batch, dim, seqlen) for a few.
        conv_state: (batch, dim, state_len) like x with state_len >= width - 1, or a pool (n_states, dim,
            state_len) when conv_state_indices is given.
        weight, bias, activation: as in ``causal_conv1d``.
        conv_state_indices: (batch,) int32, the pool row of each batch row; a negative index marks a padding
            row (its output is zeros and no state is touched).

    Returns:
        out shaped like x. Not differentiable.
    """
    return torch.ops.mamba_ext.causal_conv1d_update(x, conv_state, weight, bias, activation, conv_state_indices)


def selective_state_update(state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Optional[Tensor] = None, z: Optional[Tensor] = None, dt_bias: Optional[Tensor] = None,
                           dt_softplus: bool = False, state_batch_indices: Optional[Tensor] = None) -> Tensor:
    """One recurrent step of the selective scan for decoding; updates ``state`` in place.

    For batch b, channel d, state n (the same math as one time step of ``selective_scan``)::

        dt  = dt[b,d] + dt_bias[d]; dt = softplus(dt) if dt_softplus
        h   = exp(dt * A[d,n]) * h + dt * B[b,g(d),n] * x[b,d]
        out = (sum_n C[b,g(d),n] * h + D[d] * x[b,d]) * silu(z[b,d])

    Args:
        state: (batch, dim, N) fp32 (fp64 for fp64 x), contiguous along N; or a pool (n_states, dim, N) when
            state_batch_indices is given.
        x, dt, z: (batch, dim), fp32/fp16/bf16 (fp64 on CPU).
        A: (dim, N) fp32.  B, C: (batch, N) or (batch, groups, N) like x.  D, dt_bias: (dim,) fp32.
        state_batch_indices: (batch,) int32 pool rows; negative marks a padding row (output zeros, state
            untouched).

    ``selective_scan(..., return_last_state=True)`` over a prefix followed by one call per further token gives
    the same outputs and state as ``selective_scan`` over the whole sequence.

    Returns:
        out (batch, dim) like x. Not differentiable.
    """
    return torch.ops.mamba_ext.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus,
                                                      state_batch_indices)
