"""mamba_ext: Mamba selective-scan ops, blocks and language model as a PyTorch C++/CUDA extension.

Importing the package loads the compiled library, which registers the ops under ``torch.ops.mamba_ext``.
"""
import glob
import os

import torch


def _load_library():
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "_C*.so")) + glob.glob(os.path.join(here, "_C*.pyd")))
    if not found:
        raise ImportError(
            "mamba_ext: compiled library _C not found next to the package; build it with "
            "`pip install --no-build-isolation -e .` (see README)")
    torch.ops.load_library(found[0])


_load_library()

from mamba_ext import ops as _ops  # noqa: E402  (registers fake kernels and Python wrappers)
from mamba_ext.ops import selective_scan  # noqa: E402
from mamba_ext.ops import causal_conv1d, causal_conv1d_update, selective_state_update  # noqa: E402


def has_cuda() -> bool:
    """True when the CUDA kernels were compiled into the library (independent of whether a GPU is visible)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("mamba_ext::selective_scan_fwd", "CUDA")


__all__ = ["selective_scan", "causal_conv1d", "causal_conv1d_update", "selective_state_update", "has_cuda"]
