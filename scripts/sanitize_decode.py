#!/usr/bin/env python3
"""Small CUDA cases of causal_conv1d (fwd+bwd, with and without seq_idx / states), causal_conv1d_update and
selective_state_update, for compute-sanitizer (memcheck, racecheck): every kernel and code path runs once,
including partial chunks, unaligned rows (scalar path) and padding rows."""
import torch

import mamba_ext


def main():
    torch.manual_seed(0)
    dev = "cuda"
    for dtype, L, width in [(torch.bfloat16, 2060, 4), (torch.float32, 7, 2), (torch.float16, 2049, 3)]:
        for offset in (0, 1):  # 1: rows not 16-byte aligned -> scalar loads
            x = torch.randn(2, 5, L + offset, device=dev, dtype=dtype)[..., offset:].requires_grad_()
            w = torch.randn(5, width, device=dev, dtype=dtype, requires_grad=True)
            b = torch.randn(5, device=dev, dtype=dtype, requires_grad=True)
            init = torch.randn(2, 5, width - 1, device=dev, dtype=dtype, requires_grad=True)
            seq = torch.cumsum((torch.rand(2, L, device=dev) < 0.01).int(), 1).int()
            out, fin = mamba_ext.causal_conv1d(x, w, b, "silu", init, True, seq)
            (out.float().sum() + fin.float().sum()).backward()
    state = torch.randn(6, 5, 3, device=dev, dtype=torch.bfloat16)
    idx = torch.tensor([4, -1, 0], device=dev, dtype=torch.int32)
    mamba_ext.causal_conv1d_update(torch.randn(3, 5, 2, device=dev, dtype=torch.bfloat16), state,
                                   torch.randn(5, 4, device=dev), None, "silu", idx)
    for N in (16, 5, 64, 36):
        st = torch.randn(6, 8, N, device=dev)
        mamba_ext.selective_state_update(st, torch.randn(3, 8, device=dev), torch.rand(3, 8, device=dev),
                                         -torch.rand(8, N, device=dev), torch.randn(3, 2, N, device=dev),
                                         torch.randn(3, 2, N, device=dev), torch.randn(8, device=dev),
                                         torch.randn(3, 8, device=dev), None, True, idx)
    torch.cuda.synchronize()
    print("sanitize_decode: done")


if __name__ == "__main__":
    main()
