"""Detection and false-alarm rates of the gate on the smoke reference. Prints; never asserts.

    python benchmarks/bench_gate.py [--pool 48] [--checks 400] [--jobs 2] [--store DIR]

The reference is the smoke suite's ``adam`` family (suites/smoke/smoke.yaml, 6 seeds) and the
check is the suite's own ``adam`` check: its metrics, tolerances and alpha, decided by
``harness.verdict.decide``, the function every check goes through.

* **Null set** (nothing changed; any flag is a false alarm):
  - fresh seeds: ``--pool`` seeds of the unchanged config are trained once (the store keeps
    them). A pairwise metric's value for seed pair (a, m) does not depend on the other seeds
    of the family, so any 6-seed family drawn from the pool is measured by a sub-matrix of
    the pool's pairwise matrices (checked below against analysing one such family directly).
    ``--checks`` checks each draw two disjoint 6-seed families (reference, candidate) at
    random; the fully disjoint partitions of the pool are reported separately;
  - a key that does not change training (``train.log_every``, ``checkpoint_every``): same
    fingerprint, same store key, same weights;
  - the same run (the reference against itself).
* **Sabotage set** (each must be flagged), paired with the reference's seeds 0..5: an
  optimizer change, architecture changes in YAML, a user module with a bug, less training,
  and an edit to an optimizer's code behind an import path (the family spec unchanged).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "sabotage"))

from harness.analysis import AnalysisOptions, analyze_family  # noqa: E402
from harness.checks import load_checks  # noqa: E402
from harness.config import FamilyConfig, family_from_dict  # noqa: E402
from harness.family import obtain_family  # noqa: E402
from harness.results import Measurement  # noqa: E402
from harness.verdict import decide  # noqa: E402

OPTIONS = AnalysisOptions(step0=False, importance=False, cross_layer=False, kernels=("debiased",),
                          prompt_lengths=(1.0,))
SABOTAGE = [
    ("optimizer", "SGD instead of Adam (lr 0.3, momentum 0.9)",
     {"train": {"optimizer": "sgd", "lr": 0.3, "optimizer_kwargs": {"momentum": 0.9}}}),
    ("architecture (YAML)", "init std x25 (model.init_std 0.5)", {"model": {"init_std": 0.5}}),
    ("architecture (YAML)", "no LayerNorm (model.norm none)", {"model": {"norm": "none"}}),
    ("own module", "a user GPT whose queries are scaled by 1/8 (cold_attention:build)",
     {"model": {"custom": "cold_attention:build"}}),
    ("less training", "200 steps instead of 800", {"train": {"steps": 200}}),
]
NOISE_SCALES = (0.3, 3.0)  # a mild edit and a gross one
PLAIN_OPTIM = '''
import torch


class Adam(torch.optim.Adam):
    """A team's Adam, by import path."""
'''
NOISY_OPTIM = '''
import torch

SCALE = {scale}  # the noise's standard deviation, in units of the learning rate


class Adam(torch.optim.Adam):
    """A team's Adam, by import path, after a 'small refactor' that adds noise to every update."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        g = torch.Generator().manual_seed(len(self.state) + int(sum(s["step"] for s in self.state.values())))
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(torch.randn(p.shape, generator=g) * SCALE * group["lr"])
        return loss
'''


def _train_one(args: tuple[dict, str, int, str]) -> int:
    raw, source, seed, store = args
    if str(Path(source).parent) not in sys.path:
        sys.path.insert(0, str(Path(source).parent))
    cfg = family_from_dict(raw, source=source, base_dir=Path(source).parent)
    obtain_family(cfg, store=store, seeds=(seed,))
    return seed


def train(cfg: FamilyConfig, store: str, jobs: int) -> None:
    """Every seed of ``cfg`` into the store, ``jobs`` processes (each fresh: user code edits
    on disk are what it imports)."""
    raw = cfg.to_dict()
    raw.pop("source")
    todo = [(raw, cfg.source, s, store) for s in cfg.seeds]
    if jobs <= 1:
        for t in todo:
            _train_one(t)
        return
    with mp.get_context("spawn").Pool(jobs) as pool:
        for _ in pool.imap_unordered(_train_one, todo):
            pass


def measure(cfg: FamilyConfig, store: str, jobs: int) -> dict[str, Measurement]:
    train(cfg, store, jobs)
    return dict(analyze_family(obtain_family(cfg, store=store), options=OPTIONS).measurements)


def subset(m: Measurement, idx: np.ndarray) -> Measurement:
    if m.pairwise is not None:
        return Measurement(m.name, m.value, m.lo, m.hi, m.higher_is_better,
                           pairwise=np.asarray(m.pairwise)[np.ix_(idx, idx)], n_seeds=len(idx))
    return Measurement(m.name, m.value, m.lo, m.hi, m.higher_is_better,
                       per_seed=np.asarray(m.per_seed)[idx], n_seeds=len(idx))


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    z, p = 1.96, k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, c - h), min(1.0, c + h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=48, help="fresh seeds of the unchanged config")
    ap.add_argument("--checks", type=int, default=400, help="null checks drawn from the pool")
    ap.add_argument("--jobs", type=int, default=2, help="training processes")
    ap.add_argument("--store", default=None, help="seed store (default: a temporary folder)")
    ap.add_argument("--skip-sabotage", action="store_true")
    args = ap.parse_args()
    store = args.store or tempfile.mkdtemp(prefix="seedstab-gate-")
    check = load_checks(ROOT / "suites/smoke/smoke.yaml")["adam"]
    ref_cfg, M = check.reference, len(check.reference.seeds)
    metrics, tol, alpha = list(check.metrics), dict(check.tolerance), check.alpha
    keys = [ref_cfg.seed_key(s) for s in ref_cfg.seeds]
    print(f"reference: {ref_cfg.source}::{ref_cfg.name}, {M} seeds; check metrics {metrics}; "
          f"tolerance {tol}; alpha {alpha}; store {store}")
    t0 = time.perf_counter()

    def gate(ref: dict, cand: dict, ref_keys: list[str], cand_keys: list[str], seed: int = 0):
        return decide(ref, cand, metrics=metrics, tolerance=tol, alpha=alpha, reference_keys=ref_keys,
                      candidate_keys=cand_keys, generator=np.random.default_rng(seed))

    # ---------------------------------------------------------------- null set
    pool_cfg = ref_cfg.replace(seeds=list(range(args.pool)))
    pool = measure(pool_cfg, store, args.jobs)
    print(f"pool: {args.pool} seeds trained/loaded and analysed in {time.perf_counter() - t0:.0f} s")
    direct = analyze_family(obtain_family(ref_cfg.replace(seeds=[7, 3, 11, 20, 5, 30]), store=store),
                            options=OPTIONS)
    idx = np.array([7, 3, 11, 20, 5, 30])
    worst = max(float(np.nanmax(np.abs(np.asarray(subset(pool[m], idx).pairwise) - direct[m].pairwise)))
                for m in metrics)
    print(f"sub-matrix of the pool vs analysing that family directly: max |diff| = {worst:.2e}")
    rng = np.random.default_rng(2026)
    counts = {"pass": 0, "regressed": 0, "inconclusive": 0, "other": 0}
    t1 = time.perf_counter()
    for i in range(args.checks):
        perm = rng.permutation(args.pool)
        r, c = np.sort(perm[:M]), np.sort(perm[M:2 * M])
        v = gate({m: subset(pool[m], r) for m in metrics}, {m: subset(pool[m], c) for m in metrics},
                 [f"s{j}" for j in r], [f"s{j}" for j in c], seed=i)
        counts[v.status if v.status in counts else "other"] += 1
    n = args.checks
    fa = counts["regressed"]
    lo, hi = wilson(fa, n)
    print(f"\nnull, fresh seeds, {n} checks drawn from {args.pool} seeds ({time.perf_counter() - t1:.1f} s):")
    print(f"  REGRESSED (false alarms) {fa}/{n} = {fa / n:.3f} (Wilson 95% {lo:.3f}-{hi:.3f}; checks "
          "share seeds, so the effective n is smaller)")
    print(f"  INCONCLUSIVE {counts['inconclusive']}/{n} = {counts['inconclusive'] / n:.3f}; "
          f"PASS {counts['pass']}/{n}; other {counts['other']}")
    disjoint = [gate({m: subset(pool[m], np.arange(k, k + M)) for m in metrics},
                     {m: subset(pool[m], np.arange(k + M, k + 2 * M)) for m in metrics},
                     [f"s{j}" for j in range(k, k + M)], [f"s{j}" for j in range(k + M, k + 2 * M)]).status
                for k in range(0, args.pool - 2 * M + 1, 2 * M)]
    print(f"  fully disjoint partitions of the pool: {len(disjoint)} checks: " +
          ", ".join(f"{s} {disjoint.count(s)}" for s in sorted(set(disjoint))))
    ref = {m: subset(pool[m], np.arange(M)) for m in metrics}
    same = gate(ref, ref, keys, keys)
    quiet_cfg = ref_cfg.replace(train={"log_every": 5, "checkpoint_every": 100})
    quiet = {m: v for m, v in measure(quiet_cfg, store, args.jobs).items() if m in metrics}
    print(f"  the same run: {same.status.upper()}; a key that does not change training "
          f"(log_every 5, checkpoint_every 100): {gate(ref, quiet, keys, keys).status.upper()}")
    if args.skip_sabotage:
        return

    # ---------------------------------------------------------------- sabotage set
    rows = []
    for kind, what, change in SABOTAGE:
        t = time.perf_counter()
        cand = measure(ref_cfg.replace(**change), store, args.jobs)
        rows.append((kind, what, gate(ref, cand, keys, keys), time.perf_counter() - t))
    with tempfile.TemporaryDirectory(prefix="seedstab-edit-") as d:
        spec = Path(d) / "team.yaml"
        spec.write_text("# the family is built in code; its folder holds team_optim.py\n")
        sys.path.insert(0, d)
        (Path(d) / "team_optim.py").write_text(PLAIN_OPTIM)
        base = ref_cfg.to_dict()
        base.pop("source")
        base["train"]["optimizer"] = "team_optim:Adam"
        mine = family_from_dict(base, source=str(spec), base_dir=Path(d))
        t = time.perf_counter()
        before = measure(mine, store, args.jobs)
        for scale in NOISE_SCALES:
            (Path(d) / "team_optim.py").write_text(NOISY_OPTIM.format(scale=scale))
            after = measure(mine, store, args.jobs)
            rows.append(("code edit behind an import path",
                         f"team_optim:Adam edited to add noise of {scale} x lr to every update",
                         gate({m: before[m] for m in metrics}, after, keys, keys), time.perf_counter() - t))
            t = time.perf_counter()
    print("\nsabotage (paired with the reference's seeds):")
    print(f"  {'kind':<32} {'change':<62} {'verdict':<13} {'rows flagged':>12} {'worst Δ':>8} {'min p':>7}")
    for kind, what, v, dt in rows:
        worst = max(v.rows, key=lambda r: r.worse_by) if v.rows else None
        flagged = sum(r.regressed for r in v.rows)
        print(f"  {kind:<32} {what:<62} {v.status.upper():<13} {flagged:>5} of {len(v.rows):<4} "
              f"{(-worst.worse_by if worst else float('nan')):>+8.3f} {min((r.p for r in v.rows), default=1):>7.3f}")
    detected = sum(v.status == "regressed" for _, _, v, _ in rows)
    print(f"  flagged REGRESSED: {detected} of {len(rows)}; INCONCLUSIVE: "
          f"{sum(v.status == 'inconclusive' for _, _, v, _ in rows)}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; store {store}")


if __name__ == "__main__":
    main()
