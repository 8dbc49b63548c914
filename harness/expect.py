"""Absolute stability expectations, as assertions that fail with a table a person can read.

Suites state the paper's findings with these ("the least stable layer is mid-depth and above
a floor", "the residual stream is more stable than the heads"). Each check returns a short
text on success (for the report) and raises :class:`ExpectationFailed` with a table of the
numbers, their CIs and the seeds behind them otherwise.

Claims are judged on intervals and seed-level tests, never on point values alone:
:func:`mid_depth_minimum` (bootstrap probability of where the minimum lies, CI lower ends),
:func:`spread_increases` (interval of Δspread), :func:`non_inferior` (one-sided lower bounds),
:func:`not_worse` / :func:`improvement` (seed-level tests, refused with ValueError when their
smallest attainable p-value is not below alpha: a check that cannot fail is a defect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from harness import stats
from harness.results import Analysis, Measurement
from harness.stats import Comparison


class ExpectationFailed(AssertionError):
    """A stated expectation did not hold; the message holds the table."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    text: str


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:+.3f}" if x < 0 else f"{x:.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else _fmt(float(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def per_layer_table(*measurements: Measurement) -> str:
    L = len(np.atleast_1d(measurements[0].value))
    headers = ["layer"] + [f"{m.name} [CI]" for m in measurements]
    rows = []
    for l in range(L):
        row: list[object] = [str(l)]
        for m in measurements:
            v, lo, hi = (np.atleast_1d(x)[l] for x in (m.value, m.lo, m.hi))
            row.append(f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]")
        rows.append(row)
    return table(headers, rows)


def _raise(title: str, body: str, analysis: Analysis | None, hint: str = "") -> None:
    __tracebackhide__ = True
    seeds = f"\nseeds: {list(analysis.seeds)}  family: {analysis.family}  fingerprint: {analysis.fingerprint}" \
        if analysis is not None else ""
    raise ExpectationFailed(f"{title}\n\n{body}{seeds}" + (f"\n{hint}" if hint else ""))


def _seed_level(m: Measurement, *, what: str) -> tuple[np.ndarray, bool]:
    """(seed-level values, pairwise?) of a measurement an interval rule resamples."""
    if m.pairwise is not None:
        return np.asarray(m.pairwise, dtype=float), True
    if m.per_seed is not None and m.baselinable:
        return np.asarray(m.per_seed, dtype=float), False
    raise ValueError(f"{what}({m.name}): the measurement keeps no independent seed-level values, and this "
                     "check resamples seeds" + (f" ({m.baseline_note})" if m.baseline_note else ""))


def mid_depth_minimum(analysis: Analysis, metric: str, *, floor: float, edge_margin: int = 1,
                      confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Check:
    """The least stable layer is mid-depth and the metric stays above ``floor``, on intervals.

    Where the minimum lies is not a smooth statistic, so it is judged by the Multi-Bootstrap
    (:func:`harness.stats.bootstrap_argmin`: seeds resampled with replacement, family means
    over pairs of distinct original seeds): passes when the bootstrap probability that the
    argmin is not among the first/last ``edge_margin`` layers is >= ``confidence``. The floor
    is judged on the CI lower ends: every layer's (hence the minimum's, wherever it is) must
    exceed ``floor``. ``seed`` fixes the bootstrap, so the verdict is reproducible.
    """
    __tracebackhide__ = True
    m = analysis[metric]
    v, lo = np.atleast_1d(m.value), np.atleast_1d(m.lo)
    L = len(v)
    if L < 2 * edge_margin + 1:
        raise ValueError(f"{metric}: a mid-depth minimum needs at least {2 * edge_margin + 1} layers, got {L}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a probability strictly between 0 and 1, got {confidence!r}")
    x, pairwise = _seed_level(m, what="mid_depth_minimum")
    gen = np.random.default_rng(seed)
    try:
        counts = (stats.bootstrap_argmin(x, n_boot=n_boot, generator=gen) if pairwise else
                  stats.bootstrap_argmin_per_seed(x, n_boot=n_boot, generator=gen))
    except ValueError as e:
        raise ValueError(f"mid_depth_minimum({metric}): {e}") from None
    share = counts / n_boot  # [L]
    p_mid = float(share[edge_margin:L - edge_margin].sum())
    mid = p_mid >= confidence
    low = int(np.nanargmin(lo)) if np.isfinite(lo).any() else 0
    above = bool(np.all(lo > floor))
    argmin = int(np.argmax(counts))
    text = (f"{metric}: P(minimum mid-depth) = {p_mid:.3f} (bootstrap, {n_boot} seed resamples; most often "
            f"layer {argmin} of {L}), every CI lower end above {floor} (lowest {_fmt(lo[low])}, layer {low})")
    if not (mid and above):
        why = [] if mid else [f"the bootstrap puts the minimum mid-depth (layers {edge_margin}..{L - 1 - edge_margin}) "
                              f"with probability {p_mid:.3f} < {confidence}"]
        why += [] if above else [f"the CI lower end {_fmt(lo[low])} of layer {low} is not above the floor {floor}"]
        rows = [[str(l), f"{_fmt(v[l])} [{_fmt(lo[l])}, {_fmt(np.atleast_1d(m.hi)[l])}]", float(share[l])]
                for l in range(L)]
        _raise(f"expected a mid-depth minimum of {metric} above {floor}: " + "; ".join(why),
               table(["layer", f"{metric} [CI]", "P(argmin)"], rows), analysis)
    return Check("mid_depth_minimum", True, text)


def above(analysis: Analysis, metric: str, *, bound: float, layers: Sequence[int] | None = None,
          use_ci: bool = True, what: str = "") -> Check:
    """The metric (its CI's lower end when ``use_ci``) exceeds ``bound`` in the given layers."""
    __tracebackhide__ = True
    m = analysis[metric]
    v, lo = np.atleast_1d(m.value), np.atleast_1d(m.lo)
    idx = list(range(len(v))) if layers is None else list(layers)
    test = lo if use_ci else v
    bad = [l for l in idx if not test[l] > bound]
    if bad:
        side = "the CI's lower end" if use_ci else "the value"
        _raise(f"expected {what or metric} > {bound} ({side}) in layers {idx}; not so in layers {bad}",
               per_layer_table(m), analysis)
    return Check("above", True, f"{metric} > {bound} in layers {idx}")


def greater(analysis: Analysis, higher: str, lower: str, *, layers: Sequence[int] | None = None,
            margin: float = 0.0) -> Check:
    """``higher`` exceeds ``lower`` by more than ``margin`` in the given layers (family means)."""
    __tracebackhide__ = True
    a, b = analysis[higher], analysis[lower]
    va, vb = np.atleast_1d(a.value), np.atleast_1d(b.value)
    idx = list(range(len(va))) if layers is None else list(layers)
    bad = [l for l in idx if not va[l] - vb[l] > margin]
    if bad:
        _raise(f"expected {higher} > {lower} + {margin} in layers {idx}; not so in layers {bad}",
               per_layer_table(a, b), analysis)
    return Check("greater", True, f"{higher} > {lower} + {margin} in layers {idx}")


def improvement(comparison: Comparison, *, metric: str, delta: float, alpha: float,
                baseline: str, candidate: str) -> Check:
    """candidate − baseline > ``delta`` and the seed-level test rejects at α, for a scalar
    comparison (e.g. of the mean over layers, as suites/paper does). Per-layer comparisons
    are refused: one Δ and one p for many layers would need a rule for combining them. A
    comparison whose smallest attainable p (``Comparison.min_p``: its seeds, patterns and
    adjustment) is not below α is refused with ValueError naming the numbers and the seed
    count that would do: it could never pass."""
    __tracebackhide__ = True
    if np.ndim(comparison.delta) or np.ndim(comparison.p_value):
        raise ValueError(f"improvement({metric}): expected a scalar comparison, got delta of shape "
                         f"{np.shape(comparison.delta)}; compare the mean over layers (or one layer)")
    _require_power(comparison, alpha=alpha, what=f"improvement({metric})")
    d, p = float(comparison.delta), float(comparison.p_value)
    body = table(["metric", "Δ", "CI lo", "CI hi", "p", "method"],
                 [[metric, d, float(comparison.lo), float(comparison.hi), p, comparison.method]])
    if not (d > delta and p < alpha):
        _raise(f"expected {candidate} to beat {baseline} on {metric} by > {delta} with p < {alpha}", body, None)
    return Check("improvement", True, f"{candidate} − {baseline} on {metric}: {d:+.3f} (p={p:.3g})")


def _require_power(comparison: Comparison, *, alpha: float, what: str) -> None:
    """Refuse a comparison whose p-value can never go below alpha (a check that cannot fail)."""
    p_min = comparison.min_p
    if p_min < alpha:
        return
    n = comparison.n_seeds
    seeds = f"{n} paired seeds" if comparison.paired else f"{n[0]} and {n[1]} seeds (unpaired)"
    try:
        need = stats.seeds_needed(n if comparison.paired else n[0], paired=comparison.paired, alpha=alpha,
                                  n_perm=comparison.n_perm, alternative=comparison.alternative)
        fix = f"{need} seeds would reach it"
    except ValueError as e:
        fix = str(e)
    raise ValueError(f"{what}: with {seeds} ({comparison.n_perm} {'exact' if comparison.exact else 'random'} "
                     f"patterns, {comparison.alternative}, adjustment {comparison.adjustment}) the smallest "
                     f"attainable p-value is {p_min:.3g} >= alpha {alpha:g}: this check could never pass or "
                     f"fail on the test; {fix}")


def increasing(values: Sequence[float], labels: Sequence[str], *, what: str) -> Check:
    """values rise strictly in the given order, on point values only (a description, not a
    claim: for a depth spread use :func:`spread_increases`, which judges intervals)."""
    __tracebackhide__ = True
    v = np.asarray(values, dtype=float)
    if not np.all(np.diff(v) > 0):
        _raise(f"expected {what} to grow in the order {list(labels)}",
               table(["family", "value"], [[lab, x] for lab, x in zip(labels, v)]), None)
    return Check("increasing", True, f"{what}: " + " < ".join(f"{_fmt(x)}" for x in v))


def _spread(per_layer: np.ndarray) -> np.ndarray:
    return np.max(per_layer, axis=-1) - np.min(per_layer, axis=-1)


def spread_increases(analyses: Sequence[Analysis], metric: str, *, labels: Sequence[str] | None = None,
                     ci: float = 0.95) -> Check:
    """The depth spread (max − min over layers of ``metric``'s family means, as in
    ``<metric>.spread``) grows from each family to the next, judged on intervals.

    ``analyses`` in depth order; ``metric`` per layer with seed-level values (e.g.
    ``head_stability.all_anchors``). For each consecutive pair, Δspread = spread(next) −
    spread(this) with a t interval over the jackknife pseudo-values of the spread
    (:func:`harness.stats.function_difference`): paired when both families have the same
    seeds, Welch's interval otherwise. Passes when every lower end is above 0; each step is a
    claim of its own and all must hold (intersection–union), so no multiplicity correction.
    """
    __tracebackhide__ = True
    if len(analyses) < 2:
        raise ValueError(f"spread_increases({metric}): needs at least 2 families, got {len(analyses)}")
    labels = [a.family for a in analyses] if labels is None else list(labels)
    if len(labels) != len(analyses):
        raise ValueError(f"labels: {len(labels)} labels for {len(analyses)} families")
    seed_level = []
    for a in analyses:
        m = a[metric]
        if np.ndim(m.value) != 1 or np.size(m.value) < 2:
            raise ValueError(f"spread_increases({metric}): {a.family} has shape {np.shape(m.value)}; a "
                             "depth spread needs per-layer values over >= 2 layers")
        seed_level.append(_seed_level(m, what="spread_increases"))
    rows, ok = [], True
    for i in range(len(analyses) - 1):
        (xa, pa), (xb, pb) = seed_level[i], seed_level[i + 1]
        if pa != pb:
            raise ValueError(f"spread_increases({metric}): pairwise in one family, per-seed in the other")
        paired = tuple(analyses[i].seeds) == tuple(analyses[i + 1].seeds)
        try:
            est = stats.function_difference(xa, xb, _spread, pairwise=pa, paired=paired, ci=ci)
        except ValueError as e:
            raise ValueError(f"spread_increases({metric}) {labels[i]} -> {labels[i + 1]}: {e}") from None
        spread_a = float(_spread(np.atleast_1d(analyses[i][metric].value)))
        spread_b = float(_spread(np.atleast_1d(analyses[i + 1][metric].value)))
        ok &= bool(est.lo > 0)
        seeds = f"{len(analyses[i].seeds)}" if paired else f"{len(analyses[i].seeds)}/{len(analyses[i + 1].seeds)}"
        rows.append([f"{labels[i]} -> {labels[i + 1]}", spread_a, spread_b, float(est.value), float(est.lo),
                     float(est.hi), seeds, "paired" if paired else "Welch", "ok" if est.lo > 0 else "NOT SHOWN"])
    body = table(["step", "spread", "next", "Δ", "CI lo", "CI hi", "seeds", "interval", ""], rows)
    if not ok:
        _raise(f"expected the depth spread of {metric} to grow in the order {labels} (every step's {ci:.0%} "
               "CI of Δspread above 0)", body, None)
    return Check("spread_increases", True, f"{metric} spread: " + " < ".join(_fmt(r[1]) for r in rows)
                 + f" < {_fmt(rows[-1][2])} (every step's CI above 0)")


def _per_metric(x: float | Mapping[str, float], metric: str, *, what: str) -> float:
    if isinstance(x, Mapping):
        if metric not in x:
            raise ValueError(f"{what}: no entry for {metric!r} (has: {', '.join(sorted(x))})")
        x = x[metric]
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) or x < 0:
        raise ValueError(f"{what}: expected a finite number >= 0 for {metric}, got {x!r}")
    return float(x)


def non_inferior(reference: Analysis, candidate: Analysis, *, metrics: Sequence[str],
                 margin: float | Mapping[str, float], alpha: float,
                 layers: Sequence[int] | None = None) -> Check:
    """The candidate family is not worse than the reference by more than ``margin``, on intervals.

    For every metric and layer, Δ = candidate − reference in the metric's better direction
    (negated for lower-is-better metrics) over the seed-level units (``unit_values()``); the
    one-sided (1 − alpha) lower confidence bound of Δ (:func:`harness.stats.difference_lower_bound`:
    Student-t over the paired differences when both families have the same seeds, Welch
    otherwise) must be above −margin. Every row must pass (intersection–union test: the claim
    is the conjunction, so its error rate is at most alpha with no multiplicity correction).
    A two-sided 95% CI lower end is the alpha = 0.025 bound. Refuses (ValueError) fewer than 3
    seeds in a family, where a bound from the seeds' spread is not worth stating.
    """
    __tracebackhide__ = True
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha: expected a one-sided level strictly between 0 and 0.5, got {alpha!r}")
    for fam in (reference, candidate):
        if len(fam.seeds) < 3:
            raise ValueError(f"non_inferior: {fam.family} has {len(fam.seeds)} seeds; a one-sided bound over "
                             "seeds needs at least 3 (with fewer the check cannot mean anything)")
    paired = tuple(reference.seeds) == tuple(candidate.seeds)
    rows, ok = [], True
    for metric in metrics:
        mr, mc = reference[metric], candidate[metric]
        mg = _per_metric(margin, metric, what="margin")
        if np.shape(mr.value) != np.shape(mc.value):
            raise ValueError(f"non_inferior({metric}): shapes {np.shape(mr.value)} and {np.shape(mc.value)} differ")
        try:
            ur, uc = mr.unit_values(), mc.unit_values()
        except ValueError as e:
            raise ValueError(f"non_inferior({metric}): {e}") from None
        for u in (ur, uc):
            if u.shape[0] < 3:
                raise ValueError(f"non_inferior({metric}): {u.shape[0]} seed-level values; needs at least 3")
        sign = 1.0 if mc.higher_is_better else -1.0
        delta, lower = stats.difference_lower_bound(sign * ur, sign * uc, paired=paired, alpha=alpha)
        delta, lower = np.atleast_1d(delta), np.atleast_1d(lower)
        idx = range(delta.size) if layers is None or np.ndim(mr.value) == 0 else layers
        for l in idx:
            good = bool(lower[l] > -mg)
            ok &= good
            rows.append([metric, "-" if np.ndim(mr.value) == 0 else str(l), float(delta[l]), float(lower[l]),
                         -mg, f"{ur.shape[0]}" if paired else f"{ur.shape[0]}/{uc.shape[0]}",
                         "paired" if paired else "unpaired", "ok" if good else "NOT SHOWN"])
    body = table(["metric", "layer", "Δ (better +)", f"{1 - alpha:.1%} lower bound", "-margin", "seeds",
                  "", ""], rows)
    if not ok:
        _raise(f"expected {candidate.family} to be non-inferior to {reference.family} (every one-sided "
               f"{1 - alpha:.1%} lower bound of Δ above −margin)", body, candidate,
               hint=f"reference {reference.family}: seeds {list(reference.seeds)}")
    return Check("non_inferior", True, f"{candidate.family} vs {reference.family}: {len(rows)} rows, lowest bound "
                 f"{_fmt(min(r[3] for r in rows))} above −margin")


def not_worse(comparison: Mapping[str, Comparison], *, tolerance: float | Mapping[str, float], alpha: float,
              reference: str = "reference", candidate: str = "candidate") -> Check:
    """No row of a one-sided 'is the candidate worse?' comparison is flagged worse.

    ``comparison``: :func:`harness.analysis.compare_families` (or ``seedstab.compare``) with
    ``alternative="worse"`` (or "less" / "greater" for the worse side of Δ = candidate −
    reference), ``adjust="max-t"`` when more than one row is tested. A row is WORSE when it
    is worse by more than ``tolerance`` (absolute, in the metric's units) AND its max-T
    adjusted p < alpha; the joint max-T test keeps the false-alarm rate of the whole check at
    alpha. Refuses (ValueError) a two-sided comparison, unadjusted p-values over several
    rows, and a comparison whose smallest attainable p is not below alpha (it could never fail).
    """
    __tracebackhide__ = True
    if not comparison:
        raise ValueError("not_worse: empty comparison")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level strictly between 0 and 1, got {alpha!r}")
    n_rows = sum(int(np.size(c.delta)) for c in comparison.values())
    for metric, c in comparison.items():
        if c.alternative not in ("less", "greater"):
            raise ValueError(f"not_worse({metric}): the comparison is {c.alternative!r}; it needs the one-sided "
                             "test toward worse (compare with alternative='worse')")
        if n_rows > 1 and (c.adjustment != "max-t" or c.n_rows < n_rows):
            raise ValueError(f"not_worse({metric}): p-values adjusted by {c.adjustment!r} over {c.n_rows} row(s), but "
                             f"{n_rows} rows are checked; compare with adjust='max-t' over all of them at once")
        _require_power(c, alpha=alpha, what=f"not_worse({metric})")
    rows, bad = [], 0
    for metric, c in comparison.items():
        tol = _per_metric(tolerance, metric, what="tolerance")
        scalar = np.ndim(c.delta) == 0
        for l, (d, lo, hi, p) in enumerate(zip(*(np.atleast_1d(x) for x in (c.delta, c.lo, c.hi, c.p_value)))):
            worse_by = -d if c.alternative == "less" else d
            flag = worse_by > tol and p < alpha
            bad += flag
            rows.append([metric, "-" if scalar else str(l), float(d), float(lo), float(hi), float(p), tol,
                         "WORSE" if flag else ("worse, n.s." if worse_by > tol else "ok")])
    body = table(["metric", "layer", "Δ", "CI lo", "CI hi", "p (max-T)", "tolerance", ""], rows)
    if bad:
        _raise(f"{candidate} is worse than {reference} beyond the tolerance in {bad} of {len(rows)} rows "
               f"(worse by more than the tolerance and max-T adjusted p < {alpha})", body, None)
    return Check("not_worse", True, f"{candidate} vs {reference}: no row worse beyond the tolerance "
                 f"({len(rows)} rows, max-T adjusted)\n{body}")
