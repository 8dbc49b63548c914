"""False-alarm rate and power of the regression rule, measured. Prints numbers; never asserts.

    python benchmarks/bench_false_alarm.py [--repeats 8] [--metric content_specific.all_anchors]

A baseline family (tests/data/tiny_induction.yaml, seeds 0..5) is compared with ``--repeats``
families of the same config and fresh, disjoint seeds (any regression flagged there is a
false alarm), and with destabilizing changes (power). The rule: worse than the baseline by
more than the tolerance AND the one-sided seed-label permutation test rejects at α (Holm
across layers). Trained seeds go to a store (default: a temporary folder) so reruns are
cheap with --store.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.analysis import AnalysisOptions, analyze_family
from harness.config import load_family
from harness.family import obtain_family
from harness.results import Measurement
from harness.verdict import compare

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = AnalysisOptions(n_boot=200, step0=False, importance=False, cross_layer=False,
                          kernels=("debiased",), prompt_lengths=(1.0,))
CHANGES = {
    "undertrained (60 steps)": {"train": {"steps": 60}},
    "lr x10": {"train": {"lr": 3.0e-2}},
    "init std x25": {"model": {"init_std": 0.5}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--metric", default="content_specific.all_anchors")
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--store", default=None)
    ap.add_argument("--splits", type=int, default=1000, help="random splits of the pooled seeds")
    args = ap.parse_args()
    cfg = load_family(ROOT / "tests/data/tiny_induction.yaml")
    M = len(cfg.seeds)
    store = args.store or tempfile.mkdtemp(prefix="seedstab-fa-")
    t0 = time.perf_counter()

    def measure(c):
        return analyze_family(obtain_family(c, store=store), options=OPTIONS)[args.metric]

    def flagged(base, cand) -> tuple[bool, list]:
        rows = compare(base, cand, tolerance=args.tolerance, alpha=args.alpha, generator=np.random.default_rng(0))
        return any(r.regressed for r in rows), rows

    base = measure(cfg)
    print(f"baseline {args.metric}: {np.round(base.value, 3)} (seeds {list(cfg.seeds)})")
    alarms = 0
    raw_rejections = 0
    for k in range(args.repeats):
        seeds = [1000 + k * M + i for i in range(M)]
        fresh = measure(cfg.replace(seeds=seeds))
        hit, rows = flagged(base, fresh)
        alarms += hit
        raw_rejections += any(r.p < args.alpha and r.delta * (1 if r.higher_is_better else -1) < 0 for r in rows)
        print(f"  fresh seeds {seeds[0]}..{seeds[-1]}: Δ {[round(r.delta, 3) for r in rows]} "
              f"p {[round(r.p, 3) for r in rows]} -> {'REGRESSED (false alarm)' if hit else 'pass'}")
    print(f"false alarms: {alarms} of {args.repeats} fresh-seed runs "
          f"(rate {alarms / args.repeats:.2f}; α = {args.alpha}, tolerance {args.tolerance}); "
          f"test alone (no tolerance) rejected in {raw_rejections} of {args.repeats}")
    for name, change in CHANGES.items():
        hit, rows = flagged(base, measure(cfg.replace(**change)))
        print(f"  {name}: Δ {[round(r.delta, 3) for r in rows]} -> {'REGRESSED (detected)' if hit else 'missed'}")
    pool_seeds = list(cfg.seeds) + [1000 + i for i in range(args.repeats * M)]
    pooled_rate(cfg.replace(seeds=pool_seeds), store=store, metric=args.metric, M=M, splits=args.splits,
                tolerance=args.tolerance, alpha=args.alpha)
    print(f"wall time {time.perf_counter() - t0:.0f} s, store {store}")


def pooled_rate(pool_cfg, *, store, metric: str, M: int, splits: int, tolerance: float, alpha: float) -> None:
    """Many baseline/candidate splits of one pool of seeds trained under the same config.

    A seed pair's similarity does not depend on which family the seeds are filed under, so
    one analysis of the pool gives every split's pairwise values as a sub-matrix. Splits share
    seeds, so they are not independent draws; the rate is still the quantity of interest."""
    pw = analyze_family(obtain_family(pool_cfg, store=store), options=OPTIONS)[metric].pairwise  # (N, N, L)
    N = pw.shape[0]
    rng = np.random.default_rng(1)
    alarms = rejections = 0
    for _ in range(splits):
        idx = rng.permutation(N)
        a, b = idx[:M], idx[M:2 * M]
        ma, mb = (Measurement(name=metric, value=np.nanmean(pw[i][:, i], axis=(0, 1)), lo=np.nan, hi=np.nan,
                              higher_is_better=True, pairwise=pw[i][:, i], n_seeds=M) for i in (a, b))
        rows = compare(ma, mb, tolerance=tolerance, alpha=alpha, generator=rng, n_perm=500)
        alarms += any(r.regressed for r in rows)
        rejections += any(r.p < alpha and r.delta < 0 for r in rows)
    lo, hi = _wilson(alarms, splits)
    print(f"pooled: {N} seeds, {splits} random {M}-vs-{M} splits: regression flagged in {alarms} "
          f"({alarms / splits:.3f}, 95% CI {lo:.3f}-{hi:.3f}; α = {alpha}, tolerance {tolerance}); "
          f"the one-sided test alone rejected in {rejections} ({rejections / splits:.3f})")


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


if __name__ == "__main__":
    main()
