#!/usr/bin/env python3
"""Calls each op once with a bad argument in a fresh process (argv[1] picks the call), to locate a crash
seen on torch 2.11 while raising argument errors: prints the error, or dies with a fault."""
import faulthandler
import sys

import torch

import mamba_ext

faulthandler.enable()
x2 = torch.randn(4, 8)
calls = {
    "conv_rank": lambda: mamba_ext.causal_conv1d(x2, torch.randn(4, 3)),
    "conv_width": lambda: mamba_ext.causal_conv1d(torch.randn(2, 4, 8), torch.randn(4, 1)),
    "conv_fwd_rank": lambda: torch.ops.mamba_ext.causal_conv1d_fwd(x2, torch.randn(4, 3), None, None, None, False),
    "scan_rank": lambda: mamba_ext.selective_scan(x2, x2, torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)),
    "ssu_rank": lambda: mamba_ext.selective_state_update(torch.randn(2, 4, 3), torch.randn(4), torch.randn(2, 4),
                                                         torch.randn(4, 3), torch.randn(2, 3), torch.randn(2, 3)),
}
try:
    calls[sys.argv[1]]()
    print(sys.argv[1], "no error?!")
except RuntimeError as e:
    print(sys.argv[1], "OK:", str(e).splitlines()[0][:120])
