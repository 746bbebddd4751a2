"""Typed Python wrappers of the ``torch.ops.mamba_ext`` ops. Shapes use the (batch, dim, seqlen) notation."""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor] = None,
                   z: Optional[Tensor] = None, delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                   initial_state: Optional[Tensor] = None,
                   return_last_state: bool = False) -> Union[Tensor, Tuple[Tensor, Tensor]]:
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
        initial_state: (batch, dim, N) fp32, the state before the first step.
        return_last_state: also return the state after the last step, (batch, dim, N) fp32.

    fp64 inputs take fp64 parameters and states. Every tensor input gets a gradient, including
    initial_state, and a gradient flowing into the returned last_state is propagated.

    Returns:
        out (batch, dim, seqlen) in u's dtype, or (out, last_state) when return_last_state.
    """
    out, last_state = torch.ops.mamba_ext.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                                         initial_state)
    return (out, last_state) if return_last_state else out
