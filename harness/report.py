"""``seedstab analyze``: analyze families, compare them, write report.json and plots, print a table.

This is an edge module (it prints, like the CLI): the library functions it calls log.
``format_table`` and ``format_comparisons`` are plain string builders others can reuse.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from harness.results import Analysis

# The metrics compared between families: raw and content-specific head stability, the
# residual and head-output CKA behind the gap, and the gap itself.
MAIN_METRICS = ("head_stability.all_anchors", "content_specific.all_anchors", "resid_cka.debiased.mid",
                "head_cka.debiased", "gap.cka")
MIN_SEEDS = 3


def analyze_command(families: Sequence[Any], *, out: Path, store: Path, device: str | None = None,
                    n_boot: int = 1000, ci_method: str = "jackknife-t", progress: str | bool = "auto",
                    pack: int | None = None, executor: Any = None) -> int:
    """Train or load each family (``FamilyConfig``), analyze it, compare every family after
    the first with the first, write ``out/report.json`` and the PNGs, print a table.

    Returns 0. Bad input (fewer than 3 seeds or 2 probe prompts, bad ``n_boot``) raises
    ValueError before anything is trained; comparisons that cannot be made (different layer
    counts, too few seeds for a test) are recorded as skipped with the reason.
    """
    from harness import plots
    from harness.analysis import AnalysisOptions, compare_families, probe_tokens
    from harness.analysis_cache import analyze_cached
    from harness.tracking_payload import jsonable
    from harness.capture import capture_family
    from harness.family import obtain_family
    from harness.store import Store

    families = list(families)
    if not families:
        raise ValueError("analyze: no families given; pass a family file, a suite file or FILE::FAMILY")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"--n-boot: expected a positive integer, got {n_boot!r}")
    for cfg in families:  # fail before training anything
        _check_analyzable(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store_ = Store(store)
    options = AnalysisOptions(n_boot=n_boot, ci_method=ci_method)

    analyses: dict[str, Analysis] = {}
    written: list[Path] = []
    notes: list[str] = []
    for cfg in families:
        key = _unique(cfg.name, analyses)
        fam = obtain_family(cfg, store=store_, device=device, progress=progress, pack=pack, executor=executor)
        say = ((lambda msg, _n=key: print(f"{_n}: {msg}", file=sys.stderr, flush=True))
               if progress not in (False, "off") else None)
        try:
            analysis = analyze_cached(fam, options=options, cache_dir=Path(store) / "analyses", progress=say)
        except ValueError as e:  # say which family; the message itself names the problem
            raise ValueError(f"{cfg.source}: {cfg.name}: analysis failed: {e}") from e
        analyses[key] = analysis
        # analyze_family keeps its capture to itself; the patterns are cheap to recapture.
        cap = capture_family(fam.models, probe_tokens(cfg), seeds=[s.seed for s in fam.seeds])
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
        written.append(plots.plot_resid_vs_heads(analysis, out / f"{stem}.resid_vs_heads.png"))
        written.append(plots.plot_head_heatmap(analysis, out / f"{stem}.heatmap.png"))
        written.append(plots.plot_importance(analysis, out / f"{stem}.importance.png"))
        try:
            path, _ = plots.plot_meta_sne(cap.patterns, out / f"{stem}.meta_sne.png",
                                          seeds=cap.seeds)
            written.append(path)
        except ValueError as e:  # e.g. a 1-layer, 1-head, 2-seed family has too few points
            notes.append(f"{key}: meta-SNE skipped: {e}")
        del cap
    written.insert(0, plots.plot_layer_stability(list(analyses.values()), out / "layer_stability.png"))

    comparisons: dict[str, dict[str, Any]] = {}
    names = list(analyses)
    for other in names[1:]:
        a, b = analyses[names[0]], analyses[other]
        entry: dict[str, Any] = {"a": names[0], "b": other, "delta": "b - a"}
        try:
            result = compare_families(a, b, metrics=MAIN_METRICS, n_boot=n_boot, ci_method=ci_method)
        except ValueError as e:  # different layer counts, or too few seeds for a test
            entry.update(status="skipped", reason=str(e))
        else:
            entry.update(status="compared", paired=tuple(a.seeds) == tuple(b.seeds),
                         metrics={k: c.to_dict() for k, c in result.items()})
        comparisons[f"{other} vs {names[0]}"] = entry

    report = {"families": {k: a.to_dict() for k, a in analyses.items()}, "comparisons": comparisons,
              "plots": [p.name for p in written]}
    report_path = out / "report.json"
    report_path.write_text(json.dumps(jsonable(report), indent=1, allow_nan=False) + "\n")

    for a in analyses.values():
        print(format_table(a))
        print()
    if comparisons:
        print(format_comparisons(comparisons))
        print()
    for note in notes:
        print(note)
    print("wrote:")
    for p in [report_path, *written]:
        print(f"  {p}")
    return 0


def _check_analyzable(cfg: Any) -> None:
    # 3, not 2: stability is a mean over seed pairs, and its CI, the seed-1-anchor measure
    # (M - 1 units) and the comparisons all resample seeds; with 2 there is one pair.
    if len(cfg.seeds) < MIN_SEEDS:
        raise ValueError(f"{cfg.source}: {cfg.name}: seeds: analyze needs at least {MIN_SEEDS} seeds "
                         f"(stability is a mean over seed pairs and its CI resamples seeds), got "
                         f"{len(cfg.seeds)}; list more seeds in the spec")
    if cfg.probe.n_prompts < 2:
        raise ValueError(f"{cfg.source}: {cfg.name}: probe.n_prompts: at least 2 prompts are needed for "
                         f"the shuffled-prompt null, got {cfg.probe.n_prompts}")


def _unique(name: str, taken: Mapping[str, Any]) -> str:
    key, k = name, 2
    while key in taken:
        key, k = f"{name}#{k}", k + 1
    return key


# ------------------------------------------------------------------------------ tables


def _num(v: Any, fmt: str = ".3f") -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return format(f, fmt) if math.isfinite(f) else "nan"


def _cell(analysis: Analysis, name: str, l: int, *, ci: bool = False) -> str:
    m = analysis.measurements.get(name)
    if m is None or np.ndim(m.value) != 1 or l >= len(m.value):
        return "-"
    s = _num(m.value[l])
    if ci:
        s += f" [{_num(m.lo[l])}, {_num(m.hi[l])}]"
    return s


def format_table(analysis: Analysis) -> str:
    """Per layer: raw head stability [CI], shuffled-prompt null, content-specific [CI],
    resid_mid CKA, head-output CKA and their gap (debiased CKA)."""
    a = analysis
    raw = a.measurements.get("head_stability.all_anchors")
    L = a.info.get("n_layers") or (len(raw.value) if raw is not None else 0)
    ci = raw.ci if raw is not None else 0.95
    head = (f"{a.family}  fingerprint {a.fingerprint}  {a.device_class}  seeds {list(a.seeds)}  "
            f"({ci:.0%} CI over seeds, {a.info.get('ci_method', 'multi-bootstrap')})")
    cols = [("layer", 5), ("head stability [CI]", 24), ("null", 6), ("content-specific [CI]", 25),
            ("resid CKA", 9), ("head CKA", 8), ("gap", 7)]
    lines = [head, "  ".join(f"{c:>{w}}" for c, w in cols)]
    for l in range(L):
        row = [str(l), _cell(a, "head_stability.all_anchors", l, ci=True),
               _cell(a, "head_stability_null.all_anchors", l),
               _cell(a, "content_specific.all_anchors", l, ci=True),
               _cell(a, "resid_cka.debiased.mid", l), _cell(a, "head_cka.debiased", l),
               _cell(a, "gap.cka", l)]
        lines.append("  ".join(f"{v:>{w}}" for v, (_, w) in zip(row, cols)))
    lines.append("null: shuffled-prompt control; content-specific = raw - null; resid CKA: resid_mid, "
                 "head CKA: hook_z (both debiased); gap = resid CKA - head CKA")
    return "\n".join(lines)


def format_comparisons(comparisons: Mapping[str, Mapping[str, Any]]) -> str:
    """The ``comparisons`` section of report.json as text: delta [CI], p and method per
    metric and layer, or the reason a comparison was skipped."""
    lines = []
    for key, entry in comparisons.items():
        if entry.get("status") != "compared":
            lines.append(f"{key}: skipped: {entry.get('reason', 'no reason recorded')}")
            continue
        lines.append(f"{key} ({'paired' if entry.get('paired') else 'unpaired'}; delta = b - a)")
        for name, c in entry["metrics"].items():
            lines.append(f"  {name}  ({c.get('method', '')})")
            delta, lo, hi, p = (np.atleast_1d(np.asarray(c[k], dtype=float))
                                for k in ("delta", "lo", "hi", "p_value"))
            for l in range(delta.shape[0]):
                lines.append(f"    layer {l}: {_num(delta[l], '+.3f')} "
                             f"[{_num(lo[l], '+.3f')}, {_num(hi[l], '+.3f')}]  p={_num(p[l])}")
    return "\n".join(lines)
