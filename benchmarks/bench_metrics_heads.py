"""Timing of the head-stability and circuit metrics on a paper-sized family.

Not a test. Random causal softmax patterns M=8 seeds, L=8 layers, P=100 prompts, H=8
heads, T=64 tokens (0.84 GB float32). Prints the median of ``--repeats`` runs per metric.

    PYTHONPATH=. python3 benchmarks/bench_metrics_heads.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from harness.metrics import circuits as cm
from harness.metrics import heads as hm


def make_patterns(
    M: int, L: int, P: int, H: int, T: int, *, generator: torch.Generator
) -> torch.Tensor:
    """Causal softmax of Gaussian logits: [M, L, P, H, T, T] float32, built in place."""
    x = torch.randn(M, L, P, H, T, T, generator=generator)  # [M, L, P, H, T, T]
    x.mul_(2.0).masked_fill_(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return x.softmax(dim=-1)  # [M, L, P, H, T, T]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    M, L, P, H, T = 8, 8, args.prompts, 8, 64
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    pat = make_patterns(M, L, P, H, T, generator=g)
    tokens = torch.randint(0, 50, (P, T), generator=g)  # [P, T]
    print(f"patterns {tuple(pat.shape)} {pat.numel() * 4 / 2**30:.2f} GiB, "
          f"made in {time.perf_counter() - t0:.1f} s; threads={args.threads}, "
          f"median of {args.repeats}")

    r = args.repeats
    rows: list[tuple[str, float]] = []
    t, C = timed(lambda: hm.similarity(pat), r)
    rows.append(("similarity (raw)", t))
    t, C_null = timed(lambda: hm.similarity(pat, prompt_shift=1), r)
    rows.append(("similarity (shuffled-prompt null)", t))
    for method in ("anchor", "all_anchors", "hungarian"):
        t, s = timed(lambda: hm.head_stability(C, method=method), r)
        rows.append((f"head_stability {method}", t))
    t, cl = timed(lambda: hm.cross_layer_stability(pat), r)
    rows.append(("cross_layer_stability (raw)", t))
    t, _ = timed(lambda: hm.cross_layer_stability(pat, prompt_shift=1), r)
    rows.append(("cross_layer_stability (null)", t))
    t, _ = timed(lambda: hm.distinctness(pat), r)
    rows.append(("distinctness", t))
    t, _ = timed(lambda: hm.uniform_similarity(pat), r)
    rows.append(("uniform_similarity", t))
    t, _ = timed(lambda: hm.attention_entropy(pat), r)
    rows.append(("attention_entropy", t))
    t, _ = timed(lambda: cm.previous_token_score(pat), r)
    rows.append(("previous_token_score", t))
    t, scores = timed(lambda: cm.induction_score(pat, tokens), r)
    rows.append(("induction_score", t))
    t, _ = timed(lambda: cm.induction_head_similarity(pat, scores), r)
    rows.append(("induction_head_similarity", t))
    for name, sec in rows:
        print(f"{name:36s} {sec:8.3f} s")
    print(f"{'total':36s} {sum(s for _, s in rows):8.3f} s")
    raw = hm.head_stability(C, method="all_anchors")
    null = hm.head_stability(C_null, method="all_anchors")
    print("sanity: raw per_layer", raw.per_layer.round(3), "null", null.per_layer.round(3),
          f"cross-layer same-layer fraction {cl.same_layer_fraction:.3f}")


if __name__ == "__main__":
    main()
