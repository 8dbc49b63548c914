"""The paper tier in one command: train every family packed, analyse it, write its
baselines, and print the wall times and a table of the paper's findings.

    python benchmarks/gpu_tier.py [--store DIR] [--baselines-dir baselines] [--device auto] [--pack auto]
    python benchmarks/gpu_tier.py --small       # a shrunken tier on the CPU, in minutes

The full tier is ``suites/paper/paper.yaml`` (6 families, 8 seeds, 3000 steps, on CUDA); its
baselines land in ``<baselines-dir>/<device class>/paper/`` through ``seedstab check
--update-baselines`` (the gate's own code path). ``--small`` writes a copy of the suite with
3 seeds, 1 / 2 / 3 layers, d_model 16 and 30 steps into ``--work`` and runs that on the CPU
(packed, so the packed path is exercised); its findings mean nothing, its plumbing is real.

Findings (each with its interval):
  1. depth: layer-stability spread grows with depth (head_stability.spread, l2 < l4 < l8);
  2. the least stable layer is not the first (head_stability.all_anchors per layer, 8 layers);
  3. AdamW is more stable than Adam (paired Δ of head_stability.all_anchors, mean over layers);
  4. every layer clears the suite's stability floor.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "suites" / "paper" / "paper.yaml"
DEPTHS = ("l2", "l4", "l8")
SMALL_LAYERS = {"l2": 1, "l4": 2, "l8": 3}


def small_suite(work: Path) -> Path:
    """A copy of the paper suite shrunk to run on the CPU in minutes."""
    raw = yaml.safe_load(PAPER.read_text())
    d = raw["defaults"]
    d["seeds"] = [0, 1, 2]
    d["model"].update(n_heads=2, d_model=16)
    d["data"].update(vocab_size=32, seq_len=32, synthetic={"span_min": 4, "span_max": 8})
    d["train"].update(steps=30, batch_size=8, device="cpu", checkpoint_every=1000, threads=1)
    d["probe"] = {"n_prompts": 8, "seed": 1234}
    for name, fam in raw["families"].items():
        if "extends" not in fam:
            fam["model"] = {"n_layers": SMALL_LAYERS[name.split("_")[1]]}
    path = work / "paper_small.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _ci(value, lo, hi) -> str:
    return f"{float(value):.4g} [{float(lo):.4g}, {float(hi):.4g}]"


def findings(suite, analyses: dict) -> list[tuple[str, bool, str]]:
    """``(finding, holds, evidence)`` rows."""
    from harness.analysis import compare_families

    rows = []
    spreads = [analyses[f"adam_{d}"]["head_stability.spread"] for d in DEPTHS]
    vals = [float(m.value) for m in spreads]
    rows.append(("spread grows with depth (adam l2 < l4 < l8)", vals[0] < vals[1] < vals[2],
                 "; ".join(f"{d} {_ci(m.value, m.lo, m.hi)}" for d, m in zip(DEPTHS, spreads))))
    per_layer = analyses["adam_l8"]["head_stability.all_anchors"]
    v = np.asarray(per_layer.value)
    low = int(np.nanargmin(v))
    rows.append((f"least stable layer is not layer 0 (adam l8: layer {low})", low != 0,
                 f"layer 0 {_ci(v[0], per_layer.lo[0], per_layer.hi[0])}, layer {low} "
                 f"{_ci(v[low], per_layer.lo[low], per_layer.hi[low])}"))
    for d in DEPTHS:
        c = compare_families(analyses[f"adam_{d}"], analyses[f"adamw_{d}"],
                             metrics=["head_stability.all_anchors"], n_boot=1000, adjust="none")
        c = c["head_stability.all_anchors"]
        delta = np.atleast_1d(c.delta)
        above = int(np.sum(np.atleast_1d(c.lo) > 0))
        rows.append((f"AdamW more stable than Adam ({d}, paired)", float(np.nanmean(delta)) > 0,
                     f"mean Δ over layers {float(np.nanmean(delta)):+.4g}; per layer "
                     + ", ".join(_ci(v, l, h) for v, l, h in zip(delta, np.atleast_1d(c.lo), np.atleast_1d(c.hi)))
                     + f"; {above} of {delta.size} intervals above 0"))
    floor = suite.expectations.get("stability_floor")
    if floor is not None:
        worst = min(float(np.nanmin(a["head_stability.all_anchors"].value)) for a in analyses.values())
        rows.append((f"every layer of every family above the floor {floor}", worst >= floor,
                     f"lowest layer value {worst:.3f}"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a shrunken tier on the CPU (minutes)")
    ap.add_argument("--store", default=None, help="seed store (default: a temporary folder)")
    ap.add_argument("--baselines-dir", default=None,
                    help="where baselines go (default: ./baselines; with --small, under --work)")
    ap.add_argument("--work", default=None, help="folder for --small's suite and baselines (default: temporary)")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: the suite's)")
    ap.add_argument("--pack", default="auto", help="auto or a chunk size (default auto; --small: every seed)")
    args = ap.parse_args(argv)
    from harness.analysis import AnalysisOptions, analyze_family
    from harness.config import load_suite
    from harness.family import obtain_family

    tmp = tempfile.TemporaryDirectory()
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    path = small_suite(work) if args.small else PAPER
    store = args.store or str(work / "store")
    baselines = args.baselines_dir or (str(work / "baselines") if args.small else "baselines")
    suite = load_suite(path)
    pack = None if args.pack == "auto" else int(args.pack)
    if args.small and pack is None:  # packed on the CPU too, so the packed path runs
        pack = max(len(cfg.seeds) for cfg in suite.families.values())
    options = (AnalysisOptions(n_boot=200, step0=False, importance=False, cross_layer=False,
                               kernels=("debiased",), prompt_lengths=(1.0,))
               if args.small else AnalysisOptions())
    analyses, walls = {}, {}
    for name, cfg in suite.families.items():
        t = time.perf_counter()
        fam = obtain_family(cfg, store=store, device=args.device, pack=pack, progress="lines")
        walls[name] = (time.perf_counter() - t, fam.trained_now, fam.seeds[0].log.get("pack"), fam.device_class)
        analyses[name] = analyze_family(fam, options=options)
    print(f"{suite.name}: {path}")
    print(f"{'family':<10} {'wall s':>8} {'trained':>8} {'pack':>5}  device")
    for name, (wall, n, k, dev) in walls.items():
        print(f"{name:<10} {wall:8.1f} {n:8d} {k!s:>5}  {dev}")
    print()
    rows = findings(suite, analyses)
    width = max(len(r[0]) for r in rows)
    for finding, holds, evidence in rows:
        print(f"{'HOLDS' if holds else 'FAILS':<6} {finding:<{width}}  {evidence}")
    print()
    # baselines through the gate's own code path, from the analyses above (nothing re-analysed)
    from harness.checks import load_checks
    from harness.gate import baseline_metrics, run_check

    checks = list(load_checks(suite).values())
    updated: set = set()
    failed = 0
    for c in checks:
        out = run_check(c, analyze=lambda cfg: analyses[cfg.name], baselines_dir=Path(baselines),
                        device_class=walls[c.candidate.name][3], options=options, update=True,
                        baseline_metrics=baseline_metrics(c, checks), already_updated=updated,
                        update_command=f"python benchmarks/gpu_tier.py{' --small' if args.small else ''}")
        failed += out.verdict.failed
        print(f"check {c.name}: {out.verdict.status}")
    print(f"baselines written under {baselines}: {len(updated)} file(s)")
    rc = 0
    tmp.cleanup()
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
