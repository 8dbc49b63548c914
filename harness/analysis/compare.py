"""Two analysed families compared metric by metric: b − a with seed-level tests, max-T
adjusted jointly over every metric and layer."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from harness import stats
from harness.results import Analysis, Measurement


ADJUSTMENTS: tuple[str, ...] = ("max-t", "holm", "none")
COMPARE_ALTERNATIVES: tuple[str, ...] = stats.ALTERNATIVES + ("worse", "better")


def _direction(alternative: str, higher_is_better: bool) -> str:
    """'worse' / 'better' in a metric's own direction -> 'less' / 'greater' on Δ = b - a."""
    if alternative == "worse":
        return "less" if higher_is_better else "greater"
    if alternative == "better":
        return "greater" if higher_is_better else "less"
    return alternative


def _patterns(n_a: int, n_b: int, paired: bool) -> str:
    return f"2^{n_a} sign flips" if paired else f"C({n_a}+{n_b}, {n_b}) label splits"


def _check_power(a: Analysis, b: Analysis, *, n_a: int, n_b: int, paired: bool, rows: dict[str, int],
                 directions: dict[str, str], adjust: str, alpha: float, n_perm: int) -> None:
    """Raise stats.Underpowered when some row could never reach p < alpha."""
    total = sum(rows.values())
    for name, direction in directions.items():
        mult = rows[name] if adjust == "holm" else 1  # Holm multiplies the smallest p by the layers
        p_min = mult * stats.min_attainable_p(n_a, n_b, paired=paired, n_perm=n_perm, alternative=direction)
        if p_min < alpha:
            continue
        try:
            need = stats.seeds_needed(n_a, paired=paired, alpha=alpha / mult, n_perm=n_perm, alternative=direction)
            fix = (f"{need} paired seeds per family would reach it" if paired else
                   f"{need} seeds in {b.family} (against {n_a} in {a.family}) would reach it")
        except ValueError as e:
            fix = str(e)
        how = {"max-t": "max-T jointly over all rows", "holm": f"Holm across the {rows[name]} layers of {name}",
               "none": "no adjustment"}[adjust]
        raise stats.Underpowered(
            f"compare {a.family} vs {b.family}: {n_a} and {n_b} seeds ({'paired' if paired else 'unpaired'}), "
            f"{total} rows ({len(rows)} metrics x layers), {how}, alternative {direction!r}: the smallest "
            f"attainable p-value is {p_min:.3g} (1 / {_patterns(n_a, n_b, paired)}"
            f"{f' x {mult}' if mult > 1 else ''}) >= alpha {alpha:g}, so no row could ever be significant; "
            f"{fix}")


def _metric_comparison(ma: Measurement, mb: Measurement, *, paired: bool, kw: dict[str, Any]) -> stats.Comparison:
    """b - a for one metric, with its own (unadjusted) per-element p-values."""
    if ma.pairwise is not None and mb.pairwise is not None:
        return (stats.paired_difference(ma.pairwise, mb.pairwise, **kw) if paired else
                stats.permutation_difference(ma.pairwise, mb.pairwise, pairwise=True, **kw))
    if paired and ma.per_seed is not None and mb.per_seed is not None:
        return stats.paired_difference_per_seed(ma.per_seed, mb.per_seed, **kw)
    return stats.permutation_difference(ma.unit_values(), mb.unit_values(), **kw)


def compare_families(a: Analysis, b: Analysis, *, metrics: Sequence[str], n_boot: int = 1000,
                     alternative: str = "two-sided", seed: int = 0, adjust: str = "max-t",
                     ci_method: str = "jackknife-t", alpha: float | None = None,
                     n_perm: int = 10000) -> dict[str, stats.Comparison]:
    """b − a for each metric, one Comparison per metric (delta, CI, p per layer).

    Paired when the two families have the same seeds (seed k of each shares init and data
    order), else unpaired. Seed-level units: ``Measurement.unit_values()`` (jackknife
    pseudo-values for pairwise metrics, per-seed values otherwise); a measurement that is
    not baselinable (``head_stability.anchor``) is refused.

    ``alternative``: "greater" / "less" / "two-sided" on Δ, or "worse" / "better" in each
    metric's own direction (``higher_is_better``), so metrics of either direction can be
    tested together; each Comparison's ``alternative`` says the direction used on its Δ.

    ``adjust``: "max-t" (default): one joint max-T test over every row (every layer of
    every metric): the same sign flips (paired) or label splits (unpaired) for all rows,
    each row standardised, rows oriented by the alternative (stats.joint_paired /
    joint_unpaired). It controls the family-wise error over all rows, and its smallest
    attainable p stays 1/2^M or 1/C(Ma+Mb, Mb) however many rows are tested. "holm":
    Holm across each metric's layers only (not across metrics); "none": raw p-values.

    ``alpha``: when given, raise :class:`harness.stats.Underpowered` if no row could ever
    reach p < alpha with these seeds and this adjustment (such a check could never fail);
    the message names the seed counts, the rows, that p-value and the seed count that would do.
    CIs: ``ci_method`` as in :class:`AnalysisOptions`, per metric, not adjusted.
    """
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"adjust: expected one of {ADJUSTMENTS}, got {adjust!r}")
    if alternative not in COMPARE_ALTERNATIVES:
        raise ValueError(f"alternative: expected one of {COMPARE_ALTERNATIVES}, got {alternative!r}")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not 0.0 < alpha < 1.0):
        raise ValueError(f"alpha: expected a level strictly between 0 and 1 (e.g. 0.05), got {alpha!r}")
    if not metrics:
        raise ValueError("metrics: name at least one measurement to compare")
    gen = np.random.default_rng(seed)
    paired = tuple(a.seeds) == tuple(b.seeds)
    units_a, units_b, directions, rows = {}, {}, {}, {}
    for name in metrics:
        ma, mb = a[name], b[name]
        if np.shape(ma.value) != np.shape(mb.value):
            raise ValueError(f"cannot compare {name} of {a.family} and {b.family} layer by layer: shapes "
                             f"{np.shape(ma.value)} and {np.shape(mb.value)} differ (different layer counts?)")
        if ma.higher_is_better != mb.higher_is_better:
            raise ValueError(f"{name}: higher_is_better is {ma.higher_is_better} in {a.family} but "
                             f"{mb.higher_is_better} in {b.family}; the metric's definition differs")
        try:
            ua, ub = ma.unit_values(), mb.unit_values()
        except ValueError as e:
            raise ValueError(f"cannot compare {name}: {e}") from None
        units_a[name], units_b[name] = ua.reshape(ua.shape[0], -1), ub.reshape(ub.shape[0], -1)  # [M, rows]
        directions[name] = _direction(alternative, ma.higher_is_better)
        rows[name] = units_a[name].shape[1]
    n_a = {u.shape[0] for u in units_a.values()}
    n_b = {u.shape[0] for u in units_b.values()}
    if len(n_a) > 1 or len(n_b) > 1:
        raise ValueError(f"metrics {list(metrics)} have different numbers of seed-level values "
                         f"({sorted(n_a)} in {a.family}, {sorted(n_b)} in {b.family}); compare them separately")
    n_a, n_b = n_a.pop(), n_b.pop()
    if alpha is not None:
        _check_power(a, b, n_a=n_a, n_b=n_b, paired=paired, rows=rows, directions=directions,
                     adjust=adjust, alpha=alpha, n_perm=n_perm)
    out = {}
    for name in metrics:
        kw = dict(n_boot=n_boot, generator=gen, alternative=directions[name], ci_method=ci_method, n_perm=n_perm)
        try:
            c = _metric_comparison(a[name], b[name], paired=paired, kw=kw)
        except ValueError as e:
            raise ValueError(f"cannot compare {name} of {a.family} and {b.family}: {e}") from None
        if adjust == "holm" and np.size(c.p_value) > 1:
            c = dataclasses.replace(c, p_value=stats.holm(c.p_value), adjustment="holm",
                                    method=c.method + " (Holm across layers)")
        out[name] = c
    if adjust == "max-t":
        out = _joint_max_t(out, units_a, units_b, directions, paired=paired, n_perm=n_perm, generator=gen)
    return out


def _joint_max_t(out: dict[str, stats.Comparison], units_a: dict[str, np.ndarray], units_b: dict[str, np.ndarray],
                 directions: dict[str, str], *, paired: bool, n_perm: int,
                 generator: np.random.Generator) -> dict[str, stats.Comparison]:
    """Replace every Comparison's p-values by those of one joint max-T test over all rows."""
    names = list(out)
    two_sided = {directions[n] == "two-sided" for n in names}
    alternative = "two-sided" if two_sided == {True} else "greater"
    orient = np.concatenate([np.full(units_a[n].shape[1], -1.0 if directions[n] == "less" else 1.0) for n in names])
    ua = np.concatenate([units_a[n] for n in names], axis=1)  # [Ma, R]
    ub = np.concatenate([units_b[n] for n in names], axis=1)  # [Mb, R]
    joint = (stats.joint_paired if paired else stats.joint_unpaired)(
        ua, ub, alternative=alternative, orientation=orient, n_perm=n_perm, generator=generator)
    R, start, result = ua.shape[1], 0, {}
    for n in names:
        c, k = out[n], units_a[n].shape[1]
        p = joint.p_value[start:start + k].reshape(np.shape(c.p_value))
        start += k
        result[n] = dataclasses.replace(
            c, p_value=float(p) if p.ndim == 0 else p, adjustment="max-t", n_rows=R, n_perm=joint.n_perm,
            exact=joint.exact, method=c.method + f" (max-T jointly over {R} rows of {len(names)} metrics)")
    return result
