"""Shared pytest fixtures: the device list (CUDA skipped cleanly without a GPU or a CUDA build) and seeding."""
import itertools
import os

import pytest
import torch

import mamba_ext


def cuda_ready() -> bool:
    return torch.cuda.is_available() and mamba_ext.has_cuda()


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not cuda_ready(), reason="needs a GPU and the CUDA build"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def fresh_seed(request):
    # A fresh seed per test and per run, so every run draws new inputs; pytest shows it if the test fails.
    seed = int(os.environ.get("MAMBA_EXT_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"seed {seed} (rerun with MAMBA_EXT_SEED={seed})")
    torch.manual_seed(seed)
    yield seed


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| in float64 (0 for two empty tensors)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.isfinite(a).all(), "non-finite values"
    if e.numel() == 0:
        return 0.0
    return ((a - e).norm() / e.norm().clamp_min(1e-30)).item()


def forward_and_grads(fn, kw, grad_seed):
    """Runs fn(**kw) and backpropagates fixed random cotangents (drawn from grad_seed) from every output.

    Returns (outputs, {name: gradient}) for every floating-point tensor in kw that requires grad.
    """
    result = fn(**kw)
    outs = result if isinstance(result, tuple) else (result,)
    gen = torch.Generator().manual_seed(grad_seed)
    cotangents = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o) for o in outs]
    names, inputs = zip(*[(k, v) for k, v in kw.items()
                          if isinstance(v, torch.Tensor) and v.is_floating_point() and v.requires_grad])
    grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(outs, cotangents)), inputs)
    return outs, dict(zip(names, grads))


def cu_of(lengths, device, dtype=torch.int32):
    """cu_seqlens of packed sequences of these lengths: (len(lengths) + 1,) cumulative offsets from 0."""
    return torch.tensor([0] + list(itertools.accumulate(lengths)), dtype=dtype, device=device)
