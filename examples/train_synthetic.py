"""Demo: train a tiny selective-SSM model on a synthetic task and watch its loss fall.

Task (delayed copy): read a stream of random tokens and output, at each position t, the token seen at
t - delay. A model must keep recent tokens in its state and select them again, which is what the selective
scan's input-dependent dt, B and C are for; chance level is log(vocab_size).

The model: embedding -> in_proj to (x, z) -> x_proj to (dt, B, C) -> mamba_ext.selective_scan -> out_proj ->
logits. Runs on CPU in well under a minute with the default config (configs/demo.json).

Usage: python examples/train_synthetic.py [--config configs/demo.json] [--device cpu|cuda]
"""
import argparse
import dataclasses
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import mamba_ext


@dataclasses.dataclass
class DemoConfig:
    vocab_size: int = 16
    d_model: int = 32
    d_state: int = 8
    expand: int = 2
    delay: int = 3
    seqlen: int = 64
    batch_size: int = 32
    steps: int = 300
    lr: float = 5e-3
    grad_clip: float = 1.0  # max gradient norm, as in the paper's training recipe (0 turns clipping off)
    seed: int = 0


class TinySelectiveSSM(nn.Module):
    def __init__(self, cfg: DemoConfig):
        super().__init__()
        d_inner, self.d_state = cfg.expand * cfg.d_model, cfg.d_state
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.in_proj = nn.Linear(cfg.d_model, 2 * d_inner)
        self.x_proj = nn.Linear(d_inner, 1 + 2 * cfg.d_state)  # a rank-1 dt, and B, C per step
        self.dt_proj = nn.Linear(1, d_inner)
        # S4D-real initialization: A[d, n] = -(n + 1), kept as log so A stays negative.
        self.A_log = nn.Parameter(torch.log(torch.arange(1, cfg.d_state + 1).float()).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, tokens):  # (batch, seqlen) -> logits (batch, seqlen, vocab)
        x, z = self.in_proj(self.embedding(tokens)).chunk(2, dim=-1)  # (batch, seqlen, d_inner) each
        dt, B, C = self.x_proj(x).split([1, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj(dt)
        y = mamba_ext.selective_scan(
            x.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), -torch.exp(self.A_log),
            B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), self.D, z.transpose(1, 2).contiguous(),
            delta_softplus=True)
        return self.head(self.out_proj(y.transpose(1, 2)))


def batch(cfg, gen, device):
    tokens = torch.randint(cfg.vocab_size, (cfg.batch_size, cfg.seqlen + cfg.delay), generator=gen)
    return tokens[:, cfg.delay:].to(device), tokens[:, :-cfg.delay].to(device)  # inputs, targets


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.path.join(here, "..", "configs", "demo.json"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    with open(args.config) as f:
        cfg = DemoConfig(**json.load(f))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = TinySelectiveSSM(cfg).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    print(f"delayed copy (delay {cfg.delay}, vocab {cfg.vocab_size}): chance loss {math.log(cfg.vocab_size):.3f}, "
          f"{sum(p.numel() for p in model.parameters())} parameters, mamba_ext CUDA kernels: {mamba_ext.has_cuda()}")
    first = last = None
    bar = tqdm(range(cfg.steps), desc="training", unit="step")
    for step in bar:
        inputs, targets = batch(cfg, gen, args.device)
        logits = model(inputs)
        # The first `delay` positions have no token to copy yet: score the rest.
        loss = F.cross_entropy(logits[:, cfg.delay:].reshape(-1, cfg.vocab_size), targets[:, cfg.delay:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
        bar.set_postfix(loss=f"{last:.3f}")
        if step % 50 == 0 or step == cfg.steps - 1:
            tqdm.write(f"step {step:4d}  loss {last:.3f}")
    print(f"loss fell from {first:.3f} to {last:.3f} (chance {math.log(cfg.vocab_size):.3f})")
    return first, last


if __name__ == "__main__":
    main()
