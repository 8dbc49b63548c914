"""A user module with a bug: seedstab's own GPT whose queries are scaled by 1/8 on the way
into every attention layer (a misplaced scale), so attention stays close to uniform.

Used by benchmarks/bench_gate.py as the "your own module" sabotage: raw head stability of
near-uniform attention is high, so only the content-specific metric and CKA can catch it.
``model.custom: cold_attention:build``.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.model import GPT, init_weights

SCALE = 0.125


def build(cfg, *, vocab_size: int, n_ctx: int) -> nn.Module:
    """seedstab's GPT, initialised from the seed seedstab set (torch.initial_seed()), with
    every block's query projection scaled by SCALE."""
    model = GPT(cfg, vocab_size=vocab_size, n_ctx=n_ctx)
    init_weights(model, std=cfg.init_std, generator=torch.Generator().manual_seed(torch.initial_seed()))
    for block in model.blocks:
        block.attn.W_Q.register_forward_hook(lambda module, args, out: out * SCALE)
    return model
