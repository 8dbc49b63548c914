"""What an analysis computes and how its intervals are made."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisOptions:
    n_boot: int = 1000
    ci: float = 0.95
    # "jackknife-t" (default: nominal coverage at 4-10 seeds) or "multi-bootstrap" (the
    # percentile Multi-Bootstrap; undercovers small families, see harness.stats)
    ci_method: str = "jackknife-t"
    seed: int = 0  # the bootstrap's generator
    null_shift: int = 1  # shuffled-prompt null: prompt p against prompt p + shift
    kernels: tuple[str, ...] = ("linear", "debiased", "rbf")
    step0: bool = True
    importance: bool = True
    cross_layer: bool = True
    prompt_lengths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # fractions of the probe length
