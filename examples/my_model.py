"""A user's own model, tested through seedstab's model protocol: ``model.custom: my_model:build``.

The protocol: integer attributes ``n_layers`` and ``n_heads``; ``forward(tokens [B, T]) ->
logits [B, T, V]``; ``HookPoint`` modules at ``blocks.{l}.hook_resid_pre``,
``blocks.{l}.attn.hook_pattern`` [B, H, T, T], ``blocks.{l}.attn.hook_z`` [B, T, H, d_head],
``blocks.{l}.hook_resid_mid`` and ``blocks.{l}.hook_resid_post``; optionally
``query_weight(layer)`` for the query-norm metric. This one is a "parallel" block (attention
and MLP read the same normalised input, GPT-J style) — an architecture seedstab's own GPT
does not have.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.model import HookPoint


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_ctx: int) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)
        self.hook_pattern, self.hook_z = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, hs)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, H, T, T)
        pattern = self.hook_pattern(scores.masked_fill(~self.mask[:T, :T], float("-inf")).softmax(-1))
        z = self.hook_z((pattern @ v).transpose(1, 2))  # (B, T, H, hs)
        return self.out(z.reshape(B, T, D))


class ParallelBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, n_ctx: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, n_ctx)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        h = self.ln(x)
        x = self.hook_resid_mid(x + self.attn(h))
        return self.hook_resid_post(x + self.mlp(h))


class ParallelGPT(nn.Module):
    def __init__(self, n_layers: int, n_heads: int, d_model: int, vocab_size: int, n_ctx: int) -> None:
        super().__init__()
        self.n_layers, self.n_heads = n_layers, n_heads
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(n_ctx, d_model)
        self.blocks = nn.ModuleList([ParallelBlock(d_model, n_heads, n_ctx) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.unembed = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x))

    def query_weight(self, layer: int) -> torch.Tensor:
        return self.blocks[layer].attn.qkv.weight[: self.blocks[layer].attn.qkv.out_features // 3]


def build(cfg, *, vocab_size: int, n_ctx: int) -> nn.Module:
    """The factory seedstab calls (under a forked RNG seeded with the seed's init_seed)."""
    return ParallelGPT(cfg.n_layers, cfg.n_heads, cfg.d_model, vocab_size, n_ctx)
