"""Multiple-comparison control, and whether a seed-level test can reject at all.

- several layers of one comparison: :func:`holm`, or the ``max_statistic`` option of the
  tests in :mod:`harness.stats_permutation` (max-T permutation);
- several metrics and layers at once: :func:`joint_paired` / :func:`joint_unpaired`, one
  max-T test over every row with the same sign patterns or label splits for all of them, so
  the smallest attainable p-value stays 1/2^M (paired) or 1/C(Ma+Mb, Mb) (unpaired) however
  many rows are tested;
- :func:`min_attainable_p` and :func:`seeds_needed` say whether a test can reject at all;
  :class:`~harness.stats_common.Underpowered` is raised by callers when it cannot.

All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.stats_common import (Alternative, JointTest, _check_alternative, _check_test,
                                  _per_seed)
from harness.stats_permutation import EXACT_LIMIT, _label_splits, _p_values, _sign_patterns

__all__ = ["holm", "min_attainable_p", "seeds_needed", "joint_paired", "joint_unpaired"]


# ----------------------------------------------------------------------------- one comparison


def holm(pvalues: Any) -> np.ndarray:
    """Holm step-down adjusted p-values, same shape as ``pvalues``, monotone, capped at 1.

    adj_(i) = max_{j <= i} min(1, (n - j + 1) p_(j)) over the ascending order p_(1) <= ...
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.reshape(-1)
    if flat.size == 0:
        raise ValueError("pvalues: empty; nothing to adjust")
    if not np.all(np.isfinite(flat)) or flat.min() < 0.0 or flat.max() > 1.0:
        raise ValueError(f"pvalues: expected finite values in [0, 1], got {flat.tolist()}")
    n = flat.size
    order = np.argsort(flat, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((n - np.arange(n)) * flat[order]))
    out = np.empty(n)
    out[order] = adj
    return out.reshape(p.shape)


# ----------------------------------------------------------------------------- power


def _check_count(n: Any, *, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name}: expected a positive number of seeds, got {n!r}")
    return int(n)


def min_attainable_p(n_a: int, n_b: int, *, paired: bool, n_perm: int = 10000,
                     alternative: str = "greater") -> float:
    """The smallest p-value a seed-level test can return with these seed counts, whatever
    the data (max-T over any number of rows leaves it unchanged).

    Paired (n_a == n_b == M): 1/2^M when the 2^M sign flips are enumerated (2^M <=
    EXACT_LIMIT), unpaired: 1/C(n_a + n_b, n_b) when the label splits are; otherwise
    1/(n_perm + 1), the Monte-Carlo floor. Two-sided exact tests double it where the
    patterns come in mirrored pairs (paired always, unpaired when n_a == n_b).
    """
    n_a, n_b = _check_count(n_a, name="n_a"), _check_count(n_b, name="n_b")
    _check_alternative(alternative)
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm: expected a positive int, got {n_perm!r}")
    if paired and n_a != n_b:
        raise ValueError(f"paired: a paired test needs the same seeds in both families, got "
                         f"{n_a} and {n_b}")
    n_patterns = 2 ** n_a if paired else math.comb(n_a + n_b, n_b)
    if n_patterns > EXACT_LIMIT:
        return 1.0 / (n_perm + 1)
    mirrored = alternative == "two-sided" and (paired or n_a == n_b)
    return min(1.0, (2.0 if mirrored else 1.0) / n_patterns)


def seeds_needed(n_a: int, *, paired: bool, alpha: float, n_perm: int = 10000,
                 alternative: str = "greater", min_seeds: int = 3) -> int:
    """The smallest candidate seed count (>= ``min_seeds``) whose test can reach p < alpha:
    paired, both families with that many seeds; unpaired, against ``n_a`` reference seeds.
    Raises ValueError when no seed count can (the Monte-Carlo floor 1/(n_perm + 1) is not
    below alpha); raise n_perm then."""
    n_a = _check_count(n_a, name="n_a")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level strictly between 0 and 1, got {alpha!r}")
    n = max(1, int(min_seeds))
    while True:
        p = min_attainable_p(n if paired else n_a, n, paired=paired, n_perm=n_perm,
                             alternative=alternative)
        if p < alpha:
            return n
        exact_left = (2 ** n if paired else math.comb(n_a + n, n)) > EXACT_LIMIT
        if exact_left:  # Monte-Carlo from here on: the floor no longer falls with more seeds
            raise ValueError(f"no seed count reaches alpha {alpha:g}: with Monte-Carlo patterns the "
                             f"smallest p-value is 1/(n_perm + 1) = {p:.3g}; raise n_perm")
        n += 1


# ----------------------------------------------------------------------------- joint tests


def _units(x: Any, *, name: str) -> np.ndarray:
    """Seed-level units [M, R] (finite, M >= 2)."""
    a = _per_seed(x, name=name)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected seed-level units [M, R] (rows of every metric and "
                         f"layer side by side), got shape {a.shape}")
    return a


def _orientation(orientation: Any, r: int) -> np.ndarray:
    if orientation is None:
        return np.ones(r)
    o = np.asarray(orientation, dtype=np.float64).reshape(-1)
    if o.shape != (r,) or not np.all(np.abs(o) == 1.0):
        raise ValueError(f"orientation: expected {r} entries of +1 or -1 (one per row), got "
                         f"{np.asarray(orientation).tolist()}")
    return o


def joint_paired(units_a: Any, units_b: Any, *, alternative: Alternative = "greater",
                 orientation: Any = None, n_perm: int = 10000,
                 generator: np.random.Generator) -> JointTest:
    """One sign-flip max-T test over every row of a paired comparison.

    units_a, units_b: [M, R] seed-level units (jackknife pseudo-values or per-seed values;
    seed k of a pairs with seed k of b), rows = every requested metric and layer side by
    side. Row r's statistic is o_r · mean_k (b - a)_kr, o = ``orientation`` (+1 / -1 per
    row, e.g. so that 'worse' is negative for every metric whatever its direction),
    standardised by sqrt(sum_k d_kr^2) (invariant under sign flips); the same sign patterns
    flip every row, and each row's p-value is the share of patterns whose maximum over rows
    reaches the row's statistic. That controls the family-wise error over all R rows and
    keeps the smallest attainable p at 1/2^M (exact) however many rows there are.
    Returns :class:`JointTest` with p_value [R].
    """
    _check_alternative(alternative)
    a, b = _units(units_a, name="units_a"), _units(units_b, name="units_b")
    if a.shape != b.shape:
        raise ValueError(f"units_b: shape {b.shape} differs from units_a {a.shape}; a paired "
                         "test needs the same seeds and rows in both families")
    _check_test(n_boot=1, ci=0.95, generator=generator, alternative=alternative,
                ci_method="jackknife-t", n_perm=n_perm)
    m, r = a.shape
    d = (b - a) * _orientation(orientation, r)  # (M, R)
    signs, exact = _sign_patterns(m, n_perm, generator)  # (N, M)
    null = signs @ d / m  # (N, R)
    p = _p_values(null, d.mean(axis=0), alternative=alternative, max_statistic=True,
                  scale=np.sqrt((d * d).sum(axis=0)), exact=exact)
    return JointTest(p_value=np.asarray(p, dtype=np.float64), n_perm=int(signs.shape[0]), exact=exact,
                     n_rows=r, method=f"joint sign-flip max-T over {r} rows")


def _welch_t(s1: np.ndarray, s2: np.ndarray, n: int, t1: np.ndarray, t2: np.ndarray,
             m: int) -> np.ndarray:
    """Welch's t of (mean b - mean a) from sums (s1 of b, t1 of a) and sums of squares (s2,
    t2) over n (b) and m (a) seeds; 0 where both sides have no spread."""
    mean_b, mean_a = s1 / n, t1 / m
    var_b = np.maximum(s2 - n * mean_b ** 2, 0.0) / (n - 1)
    var_a = np.maximum(t2 - m * mean_a ** 2, 0.0) / (m - 1)
    se = np.sqrt(var_b / n + var_a / m)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, (mean_b - mean_a) / np.where(se > 0, se, 1.0), 0.0)


def joint_unpaired(units_a: Any, units_b: Any, *, alternative: Alternative = "greater",
                   orientation: Any = None, n_perm: int = 10000,
                   generator: np.random.Generator) -> JointTest:
    """One seed-label permutation max-T test over every row of an unpaired comparison.

    units_a [Ma, R], units_b [Mb, R]: seed-level units of two families with different
    seeds (Ma, Mb >= 2). Row r's statistic is Welch's t of o_r · (mean b - mean a),
    recomputed for every relabelling (studentising each permutation keeps the test valid
    when the families differ in size and spread, where a raw difference in means is not);
    the same label splits are applied to every row (all C(Ma+Mb, Mb) when that is <=
    EXACT_LIMIT), so the smallest attainable p stays 1/C(Ma+Mb, Mb) however many rows.
    Returns :class:`JointTest` with p_value [R].
    """
    _check_alternative(alternative)
    a, b = _units(units_a, name="units_a"), _units(units_b, name="units_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"units_b: {b.shape[1]} rows but units_a has {a.shape[1]}; both families "
                         "must report the same metrics and layers")
    _check_test(n_boot=1, ci=0.95, generator=generator, alternative=alternative,
                ci_method="jackknife-t", n_perm=n_perm)
    ma, mb, r = a.shape[0], b.shape[0], a.shape[1]
    o = _orientation(orientation, r)
    pooled = np.concatenate([a, b], axis=0) * o  # (Ma+Mb, R)
    sq = pooled * pooled
    masks, exact = _label_splits(ma, mb, n_perm, generator)  # (N, Ma+Mb), True = family b
    fm = masks.astype(np.float64)
    s1, s2 = fm @ pooled, fm @ sq  # (N, R) sums over the seeds labelled b
    tot1, tot2 = pooled.sum(axis=0), sq.sum(axis=0)  # (R,)
    null = _welch_t(s1, s2, mb, tot1 - s1, tot2 - s2, ma)  # (N, R)
    observed = _welch_t(pooled[ma:].sum(0), sq[ma:].sum(0), mb, pooled[:ma].sum(0), sq[:ma].sum(0), ma)
    p = _p_values(null, observed, alternative=alternative, max_statistic=True,
                  scale=np.ones(r), exact=exact)
    return JointTest(p_value=np.asarray(p, dtype=np.float64), n_perm=int(masks.shape[0]), exact=exact,
                     n_rows=r, method=f"joint seed-label permutation max-T (Welch t) over {r} rows")
