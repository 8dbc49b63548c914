"""Run the probe set through every seed of a family and keep what the metrics read.

The probe prompts all have the same length and attention is causal with no padding, so
running them as one batch computes exactly what running each alone computes (up to float
summation order); they are batched for speed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from harness.model import capture

STREAMS = ("pre", "mid", "post")


@dataclass(frozen=True)
class FamilyCapture:
    """Activations of M seeds on P probe prompts of T tokens (float32, CPU)."""

    seeds: tuple[int, ...]
    tokens: torch.Tensor  # int64 [P, T]
    patterns: torch.Tensor  # [M, L, P, H, T, T] post-softmax
    z: torch.Tensor  # [M, L, P, T, H, d_head]
    resid: dict[str, torch.Tensor]  # 'pre' | 'mid' | 'post' -> [M, L, P, T, d_model]

    @property
    def shape(self) -> dict[str, int]:
        M, L, P, H, T, _ = self.patterns.shape
        return {"seeds": M, "layers": L, "prompts": P, "heads": H, "tokens": T}


@torch.no_grad()
def capture_model(model: nn.Module, tokens: torch.Tensor, *, batch_size: int = 64
                  ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """One model's patterns [L, P, H, T, T], z [L, P, T, H, dh], resid {s: [L, P, T, d]}."""
    L = model.n_layers
    names = []
    for l in range(L):
        names += [f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.attn.hook_z"]
        names += [f"blocks.{l}.hook_resid_{s}" for s in STREAMS]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with capture(model, names) as acts:
            for i in range(0, tokens.shape[0], batch_size):
                model(tokens[i:i + batch_size].to(device))
    finally:
        model.train(was_training)

    def stack(name: str) -> torch.Tensor:
        return torch.cat(acts[name], dim=0).float().cpu()  # (P, ...)

    patterns = torch.stack([stack(f"blocks.{l}.attn.hook_pattern") for l in range(L)])  # (L, P, H, T, T)
    z = torch.stack([stack(f"blocks.{l}.attn.hook_z") for l in range(L)])  # (L, P, T, H, dh)
    resid = {s: torch.stack([stack(f"blocks.{l}.hook_resid_{s}") for l in range(L)]) for s in STREAMS}
    return patterns, z, resid


def capture_family(models: Sequence[nn.Module], tokens: torch.Tensor, *, seeds: Sequence[int],
                   batch_size: int = 64) -> FamilyCapture:
    """Capture every model on the same probe ``tokens`` [P, T]."""
    if len(models) != len(seeds):
        raise ValueError(f"{len(models)} models but {len(seeds)} seeds")
    per = [capture_model(m, tokens, batch_size=batch_size) for m in models]
    return FamilyCapture(
        seeds=tuple(seeds), tokens=tokens.cpu(),
        patterns=torch.stack([p[0] for p in per]),  # (M, L, P, H, T, T)
        z=torch.stack([p[1] for p in per]),  # (M, L, P, T, H, dh)
        resid={s: torch.stack([p[2][s] for p in per]) for s in STREAMS},  # (M, L, P, T, d)
    )


def finite_capture(cap: FamilyCapture) -> tuple[FamilyCapture, tuple[int, ...]]:
    """(capture with every non-finite seed replaced by a finite placeholder, their indices).

    A seed whose activations hold NaN or inf (it diverged) would make every metric function
    raise or return garbage; its placeholder (uniform causal attention, fixed Gaussian z and
    residuals) lets the others be computed, and the aggregator sets every value that
    involves the seed to NaN, so nothing of the placeholder survives into a measurement.
    """
    def finite(k: int) -> bool:
        return bool(torch.isfinite(cap.patterns[k]).all() and torch.isfinite(cap.z[k]).all()
                    and all(torch.isfinite(r[k]).all() for r in cap.resid.values()))

    bad = tuple(k for k in range(cap.shape["seeds"]) if not finite(k))
    if not bad:
        return cap, bad
    gen = torch.Generator().manual_seed(0)
    patterns, z = cap.patterns.clone(), cap.z.clone()
    resid = {s: r.clone() for s, r in cap.resid.items()}
    T = cap.shape["tokens"]
    causal = torch.tril(torch.ones(T, T))
    uniform = causal / causal.sum(dim=-1, keepdim=True)  # [T, T]
    for k in bad:
        patterns[k] = uniform.expand_as(patterns[k])
        z[k] = torch.randn(z[k].shape, generator=gen)
        for r in resid.values():
            r[k] = torch.randn(r[k].shape, generator=gen)
    return dataclasses.replace(cap, patterns=patterns, z=z, resid=resid), bad

