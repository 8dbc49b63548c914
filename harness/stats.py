"""Family statistics where the seed is the unit.

Inputs are pairwise seed matrices X [M, M, ...] (X[a, m] = seed a measured against seed m;
the diagonal is ignored whatever it holds) or per-seed values [M, ...]. Pairs share seeds,
so a family mean over pairs is a U-statistic and pairs are never treated as independent:

- confidence intervals resample whole seeds with replacement and recompute the mean over
  pairs of *distinct original seeds* in the resample (MultiBERTs' Multi-Bootstrap): a seed
  drawn k times contributes weight k to its row, and a seed paired with a copy of itself
  contributes nothing. Optionally prompts are resampled too. Percentile intervals.
- paired families (same seeds, e.g. Adam vs AdamW with seed k = same init and data order):
  paired bootstrap plus a sign-flip test on per-seed jackknife pseudo-values;
- unpaired families: seed-label permutation test on per-seed pseudo-values (pairwise input)
  or on per-seed values;

Why pseudo-values and not row means: the row means d_k = mean_{m != k} X[k, m] of one family
all contain the mean of the other seeds' effects, so they are positively correlated and
their spread understates the variance of the family mean (about 4x for a symmetric metric:
the mean of a degree-2 U-statistic moves by 2 x the mean seed effect). Sign-flipping or
permuting row means rejected a true null 31-36% of the time at alpha = 0.05 (8 seeds,
simulated families). Jackknife pseudo-values ps_k = M T - (M - 1) T_(-k) average to the same
family mean T and behave like independent per-seed values (~ T + 2 h1(k)); the same
simulation rejected 4% (paired) and 3-6% (unpaired).

- several layers at once: ``holm`` or the ``max_statistic`` option (max-T permutation);
  several metrics and layers at once: :func:`joint_paired` / :func:`joint_unpaired`, one
  max-T test over every row with the same sign patterns or label splits for all of them, so
  the smallest attainable p-value stays 1/2^M (paired) or 1/C(Ma+Mb, Mb) (unpaired) however
  many rows are tested. :func:`min_attainable_p` and :func:`seeds_needed` say whether a test
  can reject at all; :class:`Underpowered` is raised by callers when it cannot.
- functions of family means (a depth spread) and their differences between families:
  :func:`function_pseudovalues`, :func:`function_difference`; one-sided bounds for
  non-inferiority: :func:`difference_lower_bound`; where the minimum over layers lies:
  :func:`bootstrap_argmin` (the Multi-Bootstrap, since the position of a minimum is not smooth).

All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "Estimate",
    "Comparison",
    "family_mean",
    "seed_contributions",
    "seed_pseudovalues",
    "seed_bootstrap",
    "seed_bootstrap_per_seed",
    "seed_jackknife_t",
    "seed_t_per_seed",
    "jackknife_t_function",
    "paired_difference",
    "paired_difference_per_seed",
    "permutation_difference",
    "holm",
    "Underpowered",
    "JointTest",
    "min_attainable_p",
    "seeds_needed",
    "joint_paired",
    "joint_unpaired",
    "difference_interval",
    "function_pseudovalues",
    "function_difference",
    "difference_lower_bound",
    "bootstrap_argmin",
    "bootstrap_argmin_per_seed",
]

Alternative = Literal["greater", "less", "two-sided"]
ALTERNATIVES: tuple[str, ...] = ("greater", "less", "two-sided")
EXACT_LIMIT = 4096  # enumerate sign flips / label permutations exactly up to this many
CI_METHODS: tuple[str, ...] = ("jackknife-t", "multi-bootstrap")
_MAX_REDRAWS = 1000


# ----------------------------------------------------------------------------- results


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _scalar_or_array(x: np.ndarray) -> float | np.ndarray:
    return float(x) if x.ndim == 0 else x


@dataclass(frozen=True, eq=False)
class Estimate:
    """A family statistic with a seed-level CI (``method`` says which; ``n_boot`` is 0 for the
    t intervals).

    value, lo, hi: floats for a scalar statistic, float64 arrays of the statistic's shape
    (e.g. [L] per layer) otherwise. ``n_prompts`` is set when prompts were resampled too.
    """

    value: float | np.ndarray
    lo: float | np.ndarray
    hi: float | np.ndarray
    n_seeds: int
    n_boot: int
    ci: float
    method: str
    n_prompts: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (arrays become nested lists)."""
        return {k: _jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class Comparison:
    """Difference between two families: delta = statistic(b) - statistic(a).

    lo, hi: percentile bootstrap CI of delta; p_value: from the sign-flip (paired) or
    label-permutation (unpaired) test for ``alternative``; per element when delta is an
    array, adjusted for the elements jointly when ``max_statistic`` was requested
    (``method`` says so). ``n_perm`` is the number of sign/label patterns used; ``exact``
    whether they were all enumerated. ``adjustment``: how ``p_value`` was corrected for
    multiplicity: ``"none"``, ``"holm"`` (across this comparison's elements) or ``"max-t"``
    (jointly over ``n_rows`` rows, which may span several metrics).
    """

    delta: float | np.ndarray
    lo: float | np.ndarray
    hi: float | np.ndarray
    p_value: float | np.ndarray
    n_seeds: int | tuple[int, int]
    alternative: str
    method: str
    ci: float
    n_boot: int
    n_perm: int
    exact: bool
    adjustment: str = "none"
    n_rows: int = 1

    @property
    def paired(self) -> bool:
        return not isinstance(self.n_seeds, tuple)

    @property
    def min_p(self) -> float:
        """The smallest p-value this test could have returned with its seeds, patterns and
        adjustment, whatever the data: 1/2^M (paired) or 1/C(Ma+Mb, Mb) (unpaired) when
        exact (twice that two-sided where the patterns are symmetric), 1/(n_perm + 1) for
        Monte-Carlo patterns; Holm multiplies it by the number of elements, max-T leaves it."""
        if self.exact:
            p = 1.0 / self.n_perm
            if self.alternative == "two-sided" and (self.paired or self.n_seeds[0] == self.n_seeds[1]):
                p *= 2.0  # flipping every sign (swapping the labels) gives the same |statistic|
        else:
            p = 1.0 / (self.n_perm + 1)
        if self.adjustment == "holm":
            p *= max(1, int(np.size(self.p_value)))
        return min(1.0, p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (arrays become nested lists)."""
        return {k: _jsonable(getattr(self, k)) for k in self.__dataclass_fields__}


class Underpowered(ValueError):
    """A test that cannot reject at the requested alpha with these seeds (its smallest
    attainable p-value is not below alpha), so a check built on it could never fail; the
    message names the seed counts, the rows, that p-value and the seed count that would do."""


@dataclass(frozen=True, eq=False)
class JointTest:
    """Max-T adjusted p-values [R] of one joint test over R rows (:func:`joint_paired`,
    :func:`joint_unpaired`); ``n_perm`` patterns, ``exact`` when all were enumerated."""

    p_value: np.ndarray
    n_perm: int
    exact: bool
    n_rows: int
    method: str


# ----------------------------------------------------------------------------- validation


def _pairwise(x: Any, *, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim < 2 or a.shape[0] != a.shape[1]:
        raise ValueError(
            f"{name}: expected a pairwise seed matrix of shape [M, M, ...], got "
            f"{tuple(a.shape)}; per-seed values [M, ...] go to the *_per_seed functions"
        )
    m = a.shape[0]
    if m < 2:
        raise ValueError(f"{name}: a family needs at least 2 seeds, got M={m}")
    off = a[~np.eye(m, dtype=bool)]  # (M*(M-1), ...)
    if not np.isfinite(off).all():
        bad = np.argwhere(~np.isfinite(a) & ~np.eye(m, dtype=bool).reshape(
            (m, m) + (1,) * (a.ndim - 2)))[0]
        where = f" at element {tuple(int(i) for i in bad[2:])} (e.g. the layer)" if a.ndim > 2 else ""
        raise ValueError(
            f"{name}: off-diagonal entry {tuple(int(i) for i in bad)} (seed pair "
            f"({int(bad[0])}, {int(bad[1])}){where}) is NaN or inf; every distinct seed pair "
            "needs a value (only the diagonal may be NaN)"
        )
    a = a.copy()
    a[np.arange(m), np.arange(m)] = 0.0  # never read: weights on the diagonal are 0
    return a


def _per_seed(x: Any, *, name: str, min_seeds: int = 2) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim < 1:
        raise ValueError(f"{name}: expected per-seed values [M, ...], got a scalar")
    if a.shape[0] < min_seeds:
        raise ValueError(f"{name}: need at least {min_seeds} seeds, got M={a.shape[0]}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf; every seed needs a value")
    return a


def _check_ci(ci: float) -> None:
    if not (isinstance(ci, (float, int)) and 0.0 < ci < 1.0):
        raise ValueError(f"ci: expected a coverage level strictly between 0 and 1 (e.g. 0.95), "
                         f"got {ci!r}")


def _check_common(*, n_boot: int, ci: float, generator: Any) -> None:
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise ValueError(f"n_boot: expected a positive int, got {n_boot!r}")
    _check_ci(ci)
    if not isinstance(generator, np.random.Generator):
        raise TypeError(
            "generator: expected a numpy.random.Generator, e.g. np.random.default_rng(0) "
            f"(randomness is passed explicitly), got {type(generator).__name__}"
        )


def _check_ci_method(ci_method: str) -> None:
    if ci_method not in CI_METHODS:
        raise ValueError(f"ci_method: expected one of {CI_METHODS}, got {ci_method!r}")


def _check_test(*, n_boot: int, ci: float, generator: Any, alternative: str, ci_method: str,
                n_perm: int) -> None:
    """The arguments every two-family comparison takes."""
    _check_common(n_boot=n_boot, ci=ci, generator=generator)
    _check_alternative(alternative)
    _check_ci_method(ci_method)
    if not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm: expected a positive int, got {n_perm!r}")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative: expected one of {ALTERNATIVES}, got {alternative!r}")


def _prompt_axis(prompt_axis: int | None, *, ndim: int, first: int, name: str) -> int | None:
    """Normalise prompt_axis; it must point past the seed axes (index >= first)."""
    if prompt_axis is None:
        return None
    ax = prompt_axis + ndim if prompt_axis < 0 else prompt_axis
    if not first <= ax < ndim:
        raise ValueError(
            f"prompt_axis: {prompt_axis} is not a non-seed axis of {name} with {ndim} dims "
            f"(valid: {first}..{ndim - 1})"
        )
    return ax


def _percentile_ci(boot: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """boot [B, ...] -> (lo [...], hi [...])."""
    alpha = 1.0 - ci
    lo, hi = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
    return lo, hi


# ----------------------------------------------------------------------------- point values


def family_mean(pairwise: Any) -> np.ndarray:
    """Mean over distinct seed pairs a != m: pairwise [M, M, ...] -> float64 [...].

    The diagonal is ignored (it may hold NaN or anything else); off-diagonal NaN raises.
    """
    x = _pairwise(pairwise, name="pairwise")  # (M, M, ...), zero diagonal
    m = x.shape[0]
    return np.asarray(x.sum(axis=(0, 1)) / (m * (m - 1)), dtype=np.float64)


def seed_contributions(pairwise: Any) -> np.ndarray:
    """Per-seed row means over m != a, pairwise [M, M, ...] -> float64 [M, ...].

    Their mean equals ``family_mean``; good for showing which seed is the outlier. Do not
    feed them to a permutation or sign-flip test (they are correlated through the shared
    seeds, and the test becomes anti-conservative); use ``seed_pseudovalues``.
    """
    x = _pairwise(pairwise, name="pairwise")
    return x.sum(axis=1) / (x.shape[0] - 1)  # (M, ...)


def _pseudovalues(x: np.ndarray) -> np.ndarray:
    """x [M, M, ...] with zero diagonal -> jackknife pseudo-values [M, ...]."""
    m = x.shape[0]
    total = x.sum(axis=(0, 1))  # (...)
    t = total / (m * (m - 1))
    t_minus = (total - x.sum(axis=1) - x.sum(axis=0)) / ((m - 1) * (m - 2))  # (M, ...)
    return m * t - (m - 1) * t_minus


def seed_pseudovalues(pairwise: Any) -> np.ndarray:
    """Jackknife pseudo-values of the family mean, pairwise [M, M, ...] -> [M, ...], M >= 3.

    ps_k = M T - (M - 1) T_(-k), T the family mean over distinct pairs and T_(-k) the same
    without seed k (row and column k). mean_k ps_k = T exactly; ps_k ~ T + 2 h1(k), with
    h1 the seed's Hoeffding projection, so they are close to independent across seeds and
    are what the seed-level tests flip and permute.
    """
    x = _pairwise(pairwise, name="pairwise")
    _min_seeds_for_test(x.shape[0], name="pairwise")
    return _pseudovalues(x)


def _min_seeds_for_test(m: int, *, name: str) -> None:
    if m < 3:
        raise ValueError(
            f"{name}: a seed-level test on a pairwise metric needs at least 3 seeds (with 2 "
            f"there is a single pair and nothing to compare it with), got M={m}"
        )


# ----------------------------------------------------------------------------- resampling


def _seed_counts(m: int, n_boot: int, generator: np.random.Generator, *,
                 min_distinct: int) -> np.ndarray:
    """Counts [B, M] of each original seed in B resamples of size M with replacement.

    Resamples with fewer than ``min_distinct`` distinct seeds (no distinct pair at all)
    are redrawn; for M >= 5 that almost never happens (P = M^(1-M)).
    """
    counts = np.zeros((n_boot, m), dtype=np.float64)  # (B, M)
    todo = np.arange(n_boot)
    for _ in range(_MAX_REDRAWS):
        draws = generator.integers(0, m, size=(todo.size, m))  # (b, M)
        c = np.zeros((todo.size, m))
        np.add.at(c, (np.arange(todo.size)[:, None], draws), 1.0)
        counts[todo] = c
        ok = (c > 0).sum(axis=1) >= min_distinct
        todo = todo[~ok]
        if todo.size == 0:
            return counts
    raise RuntimeError(f"could not draw resamples with {min_distinct} distinct seeds out of M={m}")


def _prompt_counts(p: int, n_boot: int, generator: np.random.Generator) -> np.ndarray:
    draws = generator.integers(0, p, size=(n_boot, p))  # (B, P)
    c = np.zeros((n_boot, p))
    np.add.at(c, (np.arange(n_boot)[:, None], draws), 1.0)
    return c  # (B, P)


def _boot_pairwise(x: np.ndarray, counts: np.ndarray, prompt_counts: np.ndarray | None,
                   prompt_axis: int | None) -> np.ndarray:
    """Multi-Bootstrap family means: x [M, M, ...] (zero diagonal) -> [B, ...].

    Pair (a, m) of original seeds, a != m, gets weight c_a c_m (the number of position
    pairs in the resample holding these two seeds); same-original-seed pairs get 0.
    """
    m = x.shape[0]
    w = counts[:, :, None] * counts[:, None, :]  # (B, M, M)
    w[:, np.arange(m), np.arange(m)] = 0.0
    if prompt_axis is not None:
        x = np.moveaxis(x, prompt_axis, 2)  # (M, M, P, ...)
        rest = x.shape[3:]
        xf = x.reshape(m, m, x.shape[2], -1)  # (M, M, P, R)
        y = np.einsum("bam,ampr->bpr", w, xf)  # (B, P, R)
        y = np.einsum("bp,bpr->br", prompt_counts, y) / x.shape[2]  # (B, R)
        out = y.reshape((counts.shape[0],) + rest)
    else:
        rest = x.shape[2:]
        out = np.einsum("bam,amr->br", w, x.reshape(m, m, -1)).reshape(
            (counts.shape[0],) + rest)  # (B, ...)
    return out / w.sum(axis=(1, 2)).reshape((-1,) + (1,) * len(rest))


def _boot_per_seed(v: np.ndarray, counts: np.ndarray, prompt_counts: np.ndarray | None,
                   prompt_axis: int | None) -> np.ndarray:
    """Bootstrap means of per-seed values v [M, ...] -> [B, ...]."""
    if prompt_axis is not None:
        v = np.moveaxis(v, prompt_axis, 1)  # (M, P, ...)
        rest = v.shape[2:]
        vf = v.reshape(v.shape[0], v.shape[1], -1)  # (M, P, R)
        y = np.einsum("bm,mpr,bp->br", counts, vf, prompt_counts, optimize=True) / v.shape[1]
        out = y.reshape((counts.shape[0],) + rest)
    else:
        out = np.einsum("bm,mr->br", counts, v.reshape(v.shape[0], -1)).reshape(
            (counts.shape[0],) + v.shape[1:])
    return out / counts.sum(axis=1).reshape((-1,) + (1,) * (out.ndim - 1))


def seed_bootstrap(
    pairwise: Any,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    generator: np.random.Generator,
    prompt_axis: int | None = None,
) -> Estimate:
    """Family mean over distinct seed pairs with a Multi-Bootstrap percentile CI.

    pairwise: [M, M, ...]. Each replicate resamples M seeds with replacement and averages
    over pairs of distinct *original* seeds (weights c_a c_m, diagonal never used); with
    ``prompt_axis`` (an axis >= 2) prompts are resampled too and that axis is averaged out.
    Returns an Estimate whose value/lo/hi have the shape of pairwise[0, 0] (minus the prompt
    axis). Small families undercover (measured on simulated families for a nominal 0.95: 0.76 at
    M = 4, 0.85 at M = 6, 0.86-0.92 at M = 10); :func:`seed_jackknife_t` covers at the nominal rate.
    """
    x = _pairwise(pairwise, name="pairwise")
    _check_common(n_boot=n_boot, ci=ci, generator=generator)
    ax = _prompt_axis(prompt_axis, ndim=x.ndim, first=2, name="pairwise")
    m = x.shape[0]
    value = x.sum(axis=(0, 1)) / (m * (m - 1))  # (...)
    pc = None
    if ax is not None:
        value = value.mean(axis=ax - 2)
        pc = _prompt_counts(x.shape[ax], n_boot, generator)
    counts = _seed_counts(m, n_boot, generator, min_distinct=2)
    boot = _boot_pairwise(x, counts, pc, ax)  # (B, ...)
    lo, hi = _percentile_ci(boot, ci)
    return Estimate(
        value=_scalar_or_array(np.asarray(value)), lo=_scalar_or_array(lo),
        hi=_scalar_or_array(hi), n_seeds=m, n_boot=n_boot, ci=float(ci),
        method="multi-bootstrap (seeds" + (", prompts)" if ax is not None else ")"),
        n_prompts=None if ax is None else int(x.shape[ax]),
    )


def seed_bootstrap_per_seed(
    values: Any,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    generator: np.random.Generator,
    prompt_axis: int | None = None,
) -> Estimate:
    """Mean over seeds of per-seed values [M, ...] with a seed-bootstrap percentile CI.

    ``prompt_axis`` (an axis >= 1) resamples prompts too and averages that axis out.
    """
    v = _per_seed(values, name="values")
    _check_common(n_boot=n_boot, ci=ci, generator=generator)
    ax = _prompt_axis(prompt_axis, ndim=v.ndim, first=1, name="values")
    value = v.mean(axis=0)
    pc = None
    if ax is not None:
        value = value.mean(axis=ax - 1)
        pc = _prompt_counts(v.shape[ax], n_boot, generator)
    counts = _seed_counts(v.shape[0], n_boot, generator, min_distinct=1)
    boot = _boot_per_seed(v, counts, pc, ax)
    lo, hi = _percentile_ci(boot, ci)
    return Estimate(
        value=_scalar_or_array(np.asarray(value)), lo=_scalar_or_array(lo),
        hi=_scalar_or_array(hi), n_seeds=v.shape[0], n_boot=n_boot, ci=float(ci),
        method="seed bootstrap (seeds" + (", prompts)" if ax is not None else ")"),
        n_prompts=None if ax is None else int(v.shape[ax]),
    )


def _t_interval(units: np.ndarray, value: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """value ± t_{M-1} · sd(units) / sqrt(M) over the seed axis of units [M, ...]."""
    from scipy.stats import t as student_t

    m = units.shape[0]
    half = student_t.ppf(0.5 + ci / 2.0, m - 1) * units.std(axis=0, ddof=1) / math.sqrt(m)
    return value - half, value + half


def _welch_interval(va: np.ndarray, vb: np.ndarray, delta: np.ndarray,
                    ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t interval for mean(vb) - mean(va), seed-level values [Ma, ...] / [Mb, ...]."""
    from scipy.stats import t as student_t

    ma, mb = va.shape[0], vb.shape[0]
    sa, sb = va.var(axis=0, ddof=1) / ma, vb.var(axis=0, ddof=1) / mb
    se2 = sa + sb
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(se2 > 0, se2 ** 2 / (sa ** 2 / (ma - 1) + sb ** 2 / (mb - 1)), 1.0)
    half = np.where(se2 > 0, student_t.ppf(0.5 + ci / 2.0, np.maximum(df, 1.0)) * np.sqrt(se2), 0.0)
    return delta - half, delta + half


def difference_interval(units_a: Any, units_b: Any, *, paired: bool,
                        ci: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mean(b) - mean(a) per row of seed-level units [Ma, R] / [Mb, R], with its t interval:
    over the per-seed differences when ``paired`` (Ma == Mb, seed k with seed k), else
    Welch's. Returns (delta, lo, hi), each [R]."""
    _check_ci(ci)
    a = _per_seed(units_a, name="units_a")
    b = _per_seed(units_b, name="units_b")
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"units_b: shape {b.shape} differs from units_a {a.shape}; a paired "
                             "interval needs the same seeds and rows")
        d = b - a
        delta = d.mean(axis=0)
        lo, hi = _t_interval(d, delta, ci)
    else:
        delta = b.mean(axis=0) - a.mean(axis=0)
        lo, hi = _welch_interval(a, b, delta, ci)
    return delta, lo, hi


def seed_jackknife_t(pairwise: Any, *, ci: float = 0.95) -> Estimate:
    """Family mean over distinct seed pairs with a jackknife-t CI (the default in analyses).

    The interval is T ± t_{M-1} · sd(ps) / sqrt(M) over the seeds' jackknife pseudo-values
    ps (:func:`seed_pseudovalues`), the same units the seed-level tests use. Measured on
    simulated families (tests/test_stats.py): coverage 0.95-0.96 for a nominal 0.95 at
    M = 4, 6 and 10 seeds, where the percentile Multi-Bootstrap gives 0.76, 0.85 and 0.88-0.92.
    """
    x = _pairwise(pairwise, name="pairwise")
    _check_ci(ci)
    _min_seeds_for_test(x.shape[0], name="pairwise")
    ps = _pseudovalues(x)  # (M, ...)
    value = ps.mean(axis=0)  # == family_mean(x)
    lo, hi = _t_interval(ps, value, ci)
    return Estimate(value=_scalar_or_array(value), lo=_scalar_or_array(lo), hi=_scalar_or_array(hi),
                    n_seeds=x.shape[0], n_boot=0, ci=float(ci), method="jackknife-t (seed pseudo-values)")


def seed_t_per_seed(values: Any, *, ci: float = 0.95) -> Estimate:
    """Mean of per-seed values [M, ...] with a Student-t CI over the seeds (M >= 2)."""
    v = _per_seed(values, name="values")
    _check_ci(ci)
    value = v.mean(axis=0)
    lo, hi = _t_interval(v, value, ci)
    return Estimate(value=_scalar_or_array(value), lo=_scalar_or_array(lo), hi=_scalar_or_array(hi),
                    n_seeds=v.shape[0], n_boot=0, ci=float(ci), method="t over seeds")


def jackknife_t_function(pairwise: Any, fn: Any, *, ci: float = 0.95) -> Estimate:
    """A smooth function of the family means (a depth trend, a spread) with a jackknife-t CI.

    T = fn(family_mean(x)); T_(-k) = fn(family mean without seed k); pseudo-values
    ps_k = M T - (M - 1) T_(-k); interval T ± t_{M-1} · sd(ps) / sqrt(M). For a linear fn
    this is exactly :func:`seed_jackknife_t` applied through fn. Not for non-smooth
    statistics such as the position of a minimum (use the Multi-Bootstrap there).
    """
    _check_ci(ci)
    full, ps = function_pseudovalues(pairwise, fn)
    lo, hi = _t_interval(ps, full, ci)
    return Estimate(value=_scalar_or_array(full), lo=_scalar_or_array(lo), hi=_scalar_or_array(hi),
                    n_seeds=ps.shape[0], n_boot=0, ci=float(ci),
                    method="jackknife-t of a function of family means")


def function_pseudovalues(values: Any, fn: Any, *, pairwise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Jackknife pseudo-values of a function of the family means.

    values: pairwise [M, M, ...] (``pairwise=True``, M >= 3) or per-seed [M, ...] (M >= 2).
    Returns (T, ps): T = fn(family mean) with fn's output shape [...], and ps [M, ...] with
    ps_k = M T - (M - 1) T_(-k), T_(-k) = fn(family mean without seed k). The ps are the
    seed-level units of T (close to independent across seeds); their spread gives T's
    jackknife standard error sd(ps) / sqrt(M).
    """
    if pairwise:
        x = _pairwise(values, name="pairwise")
        m = x.shape[0]
        _min_seeds_for_test(m, name="pairwise")
        total = x.sum(axis=(0, 1))  # the diagonal is zeroed by _pairwise
        full = np.asarray(fn(total / (m * (m - 1))), dtype=np.float64)
        minus = np.stack([np.asarray(fn((total - x[k].sum(axis=0) - x[:, k].sum(axis=0))
                                        / ((m - 1) * (m - 2))), dtype=np.float64) for k in range(m)])
    else:
        v = _per_seed(values, name="values")
        m = v.shape[0]
        total = v.sum(axis=0)
        full = np.asarray(fn(total / m), dtype=np.float64)
        minus = np.stack([np.asarray(fn((total - v[k]) / (m - 1)), dtype=np.float64) for k in range(m)])
    return full, m * full - (m - 1) * minus  # (...), (M, ...)


# ----------------------------------------------------------------------------- tests


def _p_values(null: np.ndarray, observed: np.ndarray, *, alternative: str,
              max_statistic: bool, scale: np.ndarray, exact: bool) -> np.ndarray:
    """p-values from a null distribution null [N, ...] of the statistic (observed [...]).

    With ``max_statistic`` the statistic is standardised by ``scale`` (invariant under the
    null's relabellings) and compared with the maximum over elements of each null draw,
    which controls the family-wise error over the elements. Monte-Carlo p-values use the
    (1 + count) / (1 + N) form so that they are never 0.
    """
    if alternative == "greater":
        s_null, s_obs = null, observed
    elif alternative == "less":
        s_null, s_obs = -null, -observed
    else:
        s_null, s_obs = np.abs(null), np.abs(observed)
    safe = np.where(scale > 0, scale, 1.0)
    s_null, s_obs = s_null / safe, s_obs / safe
    tol = 1e-12 * np.maximum(1.0, np.abs(s_obs))  # relabellings equal to the observed one
    if max_statistic and s_obs.ndim > 0:
        mx = s_null.reshape(s_null.shape[0], -1).max(axis=1)  # (N,)
        hits = (mx.reshape((-1,) + (1,) * s_obs.ndim) >= s_obs - tol).sum(axis=0)
    else:
        hits = (s_null >= s_obs - tol).sum(axis=0)
    n = null.shape[0]
    return hits / n if exact else (hits + 1.0) / (n + 1.0)


def _sign_patterns(m: int, n_perm: int, generator: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Sign vectors [N, M]: all 2^M when that is <= EXACT_LIMIT, else n_perm random ones."""
    if 2 ** m <= EXACT_LIMIT:
        bits = (np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1  # (2^M, M)
        return 1.0 - 2.0 * bits, True
    return 1.0 - 2.0 * generator.integers(0, 2, size=(n_perm, m)), False


def paired_difference(
    pairwise_a: Any,
    pairwise_b: Any,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    generator: np.random.Generator,
    alternative: Alternative = "two-sided",
    n_perm: int = 10000,
    max_statistic: bool = False,
    ci_method: str = "jackknife-t",
) -> Comparison:
    """Paired comparison of two families on the same seeds (seed k of a pairs with seed k of b).

    pairwise_a, pairwise_b: [M, M, ...]. delta = family_mean(b) - family_mean(a) [...].
    CI (``ci_method``): jackknife-t over the pseudo-values d_k below (default), or the
    Multi-Bootstrap of the paired difference b - a (the same seed resample in both).
    p-value: sign-flip test on per-seed contributions d_k = jackknife pseudo-values of the
    family mean of b - a (``seed_pseudovalues``; mean_k d_k = delta), statistic
    mean_k s_k d_k; all 2^M flips when 2^M <= 4096, else ``n_perm`` random ones. Row means
    would be anti-conservative (module docstring). The test is approximate (pseudo-values
    are nearly, not exactly, independent); measured size 0.04 at alpha 0.05 for 8 seeds.
    With M <= 5 the exact two-sided p-value cannot go below 2/2^M > 0.05.
    ``alternative='greater'`` tests b > a. ``max_statistic`` (vector-valued delta, e.g. per
    layer): max-T adjusted p-values over the elements, each standardised by
    sqrt(sum_k d_k^2), which controls the family-wise error over the elements.
    """
    a = _pairwise(pairwise_a, name="pairwise_a")
    b = _pairwise(pairwise_b, name="pairwise_b")
    if a.shape != b.shape:
        raise ValueError(
            f"pairwise_b: shape {b.shape} differs from pairwise_a {a.shape}; a paired "
            "comparison needs the same seeds (and layers) in both families"
        )
    _check_test(n_boot=n_boot, ci=ci, generator=generator, alternative=alternative, ci_method=ci_method,
                n_perm=n_perm)
    m = a.shape[0]
    _min_seeds_for_test(m, name="pairwise_a")
    diff = b - a  # (M, M, ...), zero diagonal
    d = _pseudovalues(diff)  # (M, ...) per-seed contributions
    delta = diff.sum(axis=(0, 1)) / (m * (m - 1))  # (...) == family_mean(b) - family_mean(a)

    if ci_method == "jackknife-t":
        lo, hi = _t_interval(d, delta, ci)
        n_boot = 0
    else:
        counts = _seed_counts(m, n_boot, generator, min_distinct=2)
        boot = _boot_pairwise(diff, counts, None, None)  # (B, ...)
        lo, hi = _percentile_ci(boot, ci)
    return _sign_flip(d, delta, lo, hi, n_perm=n_perm, generator=generator, alternative=alternative,
                      max_statistic=max_statistic, n_boot=n_boot, ci=ci,
                      method=f"paired {ci_method} CI; sign-flip test on seed pseudo-values")


def paired_difference_per_seed(
    values_a: Any,
    values_b: Any,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    generator: np.random.Generator,
    alternative: Alternative = "two-sided",
    n_perm: int = 10000,
    max_statistic: bool = False,
    ci_method: str = "jackknife-t",
) -> Comparison:
    """Paired comparison of per-seed values [M, ...] (seed k of a pairs with seed k of b).

    delta = mean_k (b_k - a_k); CI: t over the d_k (``ci_method="jackknife-t"``, the default)
    or a seed bootstrap of that mean (``"multi-bootstrap"``); p-value: sign-flip test on
    d_k = b_k - a_k (exact over all 2^M flips when 2^M <= 4096), as in
    :func:`paired_difference` but with the per-seed differences themselves as the units.
    """
    a = _per_seed(values_a, name="values_a")
    b = _per_seed(values_b, name="values_b")
    if a.shape != b.shape:
        raise ValueError(
            f"values_b: shape {b.shape} differs from values_a {a.shape}; a paired "
            "comparison needs the same seeds (and layers) in both families"
        )
    _check_test(n_boot=n_boot, ci=ci, generator=generator, alternative=alternative, ci_method=ci_method,
                n_perm=n_perm)
    d = b - a  # (M, ...)
    m = d.shape[0]
    delta = d.mean(axis=0)  # (...)
    if ci_method == "jackknife-t":
        lo, hi = _t_interval(d, delta, ci)
        n_boot, ci_name = 0, "t"
    else:
        counts = _seed_counts(m, n_boot, generator, min_distinct=1)
        boot = _boot_per_seed(d, counts, None, None)  # (B, ...)
        lo, hi = _percentile_ci(boot, ci)
        ci_name = "seed-bootstrap"
    return _sign_flip(d, delta, lo, hi, n_perm=n_perm, generator=generator, alternative=alternative,
                      max_statistic=max_statistic, n_boot=n_boot, ci=ci,
                      method=f"paired {ci_name} CI; sign-flip test on per-seed differences")


def _sign_flip(d: np.ndarray, delta: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, n_perm: int,
               generator: np.random.Generator, alternative: str, max_statistic: bool, n_boot: int,
               ci: float, method: str) -> Comparison:
    """The sign-flip test of mean_k d_k (d [M, ...], the seed-level units) -> Comparison."""
    m = d.shape[0]
    signs, exact = _sign_patterns(m, n_perm, generator)  # (N, M)
    null = np.einsum("nm,mr->nr", signs, d.reshape(m, -1)).reshape(
        (signs.shape[0],) + d.shape[1:]) / m  # (N, ...)
    scale = np.sqrt((d * d).sum(axis=0))  # (...) invariant under sign flips
    p = _p_values(null, delta, alternative=alternative, max_statistic=max_statistic,
                  scale=scale, exact=exact)
    joint = max_statistic and delta.ndim > 0
    if joint:
        method += " (max-T adjusted)"
    return Comparison(
        delta=_scalar_or_array(np.asarray(delta)), lo=_scalar_or_array(lo),
        hi=_scalar_or_array(hi), p_value=_scalar_or_array(np.asarray(p, dtype=np.float64)),
        n_seeds=m, alternative=alternative, method=method, ci=float(ci), n_boot=n_boot,
        n_perm=int(signs.shape[0]), exact=exact, adjustment="max-t" if joint else "none",
        n_rows=int(np.size(delta)) if joint else 1,
    )


def _label_splits(ma: int, mb: int, n_perm: int,
                  generator: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Membership masks [N, Ma + Mb] (True = family b): every split if C(Ma+Mb, Mb) is small."""
    n = ma + mb
    if math.comb(n, mb) <= EXACT_LIMIT:
        masks = np.zeros((math.comb(n, mb), n), dtype=bool)
        for i, idx in enumerate(itertools.combinations(range(n), mb)):
            masks[i, list(idx)] = True
        return masks, True
    perm = np.argsort(generator.random((n_perm, n)), axis=1)  # (N, n) random permutations
    masks = perm < mb
    return masks, False


def permutation_difference(
    values_a: Any,
    values_b: Any,
    *,
    pairwise: bool = False,
    n_boot: int = 1000,
    ci: float = 0.95,
    generator: np.random.Generator,
    alternative: Alternative = "two-sided",
    n_perm: int = 10000,
    max_statistic: bool = False,
    ci_method: str = "jackknife-t",
) -> Comparison:
    """Unpaired comparison of two families with different seeds.

    values_a [Ma, ...], values_b [Mb, ...]: per-seed values that are independent across
    seeds (e.g. a seed's perplexity). For a pairwise metric pass the pairwise matrices
    [Ma, Ma, ...] / [Mb, Mb, ...] with ``pairwise=True``: they are reduced to jackknife
    pseudo-values for the test (row means would be anti-conservative: a true null was
    rejected 34% of the time at alpha 0.05) and Multi-Bootstrapped for the CI.
    delta = mean(b) - mean(a) (= family_mean(b) - family_mean(a) for pairwise input).
    p-value: seed-label permutation test of the difference in means; every split when
    C(Ma+Mb, Mb) <= 4096, else ``n_perm`` random ones. CI (``ci_method``): Welch's t interval
    over the seed-level values (pseudo-values for pairwise input; default), or a percentile
    bootstrap resampling seeds within each family independently (``"multi-bootstrap"``).
    ``max_statistic``: max-T adjusted p-values over
    the elements of a vector-valued delta, each standardised by the pooled spread.
    """
    if pairwise:
        xa = _pairwise(values_a, name="values_a")
        xb = _pairwise(values_b, name="values_b")
        _min_seeds_for_test(xa.shape[0], name="values_a")
        _min_seeds_for_test(xb.shape[0], name="values_b")
        va = _pseudovalues(xa)  # (Ma, ...)
        vb = _pseudovalues(xb)  # (Mb, ...)
    else:
        va = _per_seed(values_a, name="values_a")
        vb = _per_seed(values_b, name="values_b")
    if va.shape[1:] != vb.shape[1:]:
        raise ValueError(
            f"values_b: per-seed shape {vb.shape[1:]} differs from values_a {va.shape[1:]}; "
            "both families must report the same layers/heads"
        )
    _check_test(n_boot=n_boot, ci=ci, generator=generator, alternative=alternative, ci_method=ci_method,
                n_perm=n_perm)
    ma, mb = va.shape[0], vb.shape[0]
    delta = vb.mean(axis=0) - va.mean(axis=0)  # (...)

    if ci_method == "jackknife-t":
        lo, hi = _welch_interval(va, vb, delta, ci)
        n_boot = 0
    elif pairwise:
        ca = _seed_counts(ma, n_boot, generator, min_distinct=2)
        cb = _seed_counts(mb, n_boot, generator, min_distinct=2)
        boot = _boot_pairwise(xb, cb, None, None) - _boot_pairwise(xa, ca, None, None)
    else:
        ca = _seed_counts(ma, n_boot, generator, min_distinct=1)
        cb = _seed_counts(mb, n_boot, generator, min_distinct=1)
        boot = _boot_per_seed(vb, cb, None, None) - _boot_per_seed(va, ca, None, None)
    if ci_method != "jackknife-t":
        lo, hi = _percentile_ci(boot, ci)

    pooled = np.concatenate([va, vb], axis=0)  # (Ma+Mb, ...)
    flat = pooled.reshape(ma + mb, -1)  # (n, R)
    masks, exact = _label_splits(ma, mb, n_perm, generator)  # (N, n)
    null = (masks @ flat) / mb - (~masks @ flat) / ma  # (N, R)
    null = null.reshape((masks.shape[0],) + delta.shape)
    scale = pooled.std(axis=0)  # (...) invariant under relabelling
    p = _p_values(null, delta, alternative=alternative, max_statistic=max_statistic,
                  scale=scale, exact=exact)
    method = ("Welch t CI" if ci_method == "jackknife-t" else
              "seed bootstrap CI" + (" (multi-bootstrap)" if pairwise else "")) + \
        "; seed-label permutation test" + (" on seed pseudo-values" if pairwise else "")
    joint = max_statistic and delta.ndim > 0
    if joint:
        method += " (max-T adjusted)"
    return Comparison(
        delta=_scalar_or_array(np.asarray(delta)), lo=_scalar_or_array(lo),
        hi=_scalar_or_array(hi), p_value=_scalar_or_array(np.asarray(p, dtype=np.float64)),
        n_seeds=(ma, mb), alternative=alternative, method=method, ci=float(ci),
        n_boot=n_boot, n_perm=int(masks.shape[0]), exact=exact,
        adjustment="max-t" if joint else "none", n_rows=int(np.size(delta)) if joint else 1,
    )


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


# ----------------------------------------------------------------------------- intervals


def function_difference(values_a: Any, values_b: Any, fn: Any, *, pairwise: bool = True,
                        paired: bool = False, ci: float = 0.95) -> Estimate:
    """fn(family means of b) - fn(family means of a) with a t interval over the jackknife
    pseudo-values of fn (:func:`function_pseudovalues`; e.g. the depth spread of two
    families of different depth: fn reduces each to a scalar, so their layer counts may
    differ). ``paired`` (same seeds): t over ps_b - ps_a with M - 1 degrees of freedom;
    else Welch's interval. n_seeds: M (paired) or Ma + Mb."""
    _check_ci(ci)
    ta, psa = function_pseudovalues(values_a, fn, pairwise=pairwise)
    tb, psb = function_pseudovalues(values_b, fn, pairwise=pairwise)
    if ta.shape != tb.shape:
        raise ValueError(f"fn gives shape {ta.shape} for values_a but {tb.shape} for values_b")
    delta = tb - ta
    if paired:
        if psa.shape != psb.shape:
            raise ValueError(f"paired: values_a has {psa.shape[0]} seeds and values_b {psb.shape[0]}; "
                             "a paired difference needs the same seeds")
        lo, hi = _t_interval(psb - psa, delta, ci)
        method, n = "paired jackknife-t of a function of family means", psa.shape[0]
    else:
        lo, hi = _welch_interval(psa, psb, delta, ci)
        method, n = "Welch t over jackknife pseudo-values of a function of family means", \
            psa.shape[0] + psb.shape[0]
    return Estimate(value=_scalar_or_array(delta), lo=_scalar_or_array(np.asarray(lo)),
                    hi=_scalar_or_array(np.asarray(hi)), n_seeds=n, n_boot=0, ci=float(ci), method=method)


def difference_lower_bound(units_a: Any, units_b: Any, *, paired: bool,
                           alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided (1 - alpha) lower confidence bound of mean(b) - mean(a) over seed-level units
    [Ma, ...] / [Mb, ...] (pseudo-values or per-seed values). Paired (same seeds): Student-t
    over b_k - a_k; unpaired: Welch. Returns (delta [...], lower [...])."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha: expected a one-sided level strictly between 0 and 0.5 (e.g. "
                         f"0.05), got {alpha!r}")
    a, b = _per_seed(units_a, name="units_a"), _per_seed(units_b, name="units_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"units_b: per-seed shape {b.shape[1:]} differs from units_a {a.shape[1:]}")
    delta = b.mean(axis=0) - a.mean(axis=0)
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired: units_a has {a.shape[0]} seeds and units_b {b.shape[0]}; a "
                             "paired bound needs the same seeds")
        lower, _ = _t_interval(b - a, delta, 1.0 - 2.0 * alpha)
    else:
        lower, _ = _welch_interval(a, b, delta, 1.0 - 2.0 * alpha)
    return np.asarray(delta, dtype=np.float64), np.asarray(lower, dtype=np.float64)


# ----------------------------------------------------------------------------- position of a minimum


def bootstrap_argmin(pairwise: Any, *, n_boot: int = 2000,
                     generator: np.random.Generator) -> np.ndarray:
    """How often each layer is the minimum: pairwise [M, M, L] -> int64 counts [L] summing to
    n_boot. Each replicate resamples seeds with replacement and recomputes the per-layer
    family means over pairs of distinct original seeds (the Multi-Bootstrap); the argmin
    of those means is counted. The position of a minimum is not a smooth statistic, so no
    jackknife here; counts / n_boot is the bootstrap probability of each layer."""
    x = _pairwise(pairwise, name="pairwise")
    if x.ndim != 3:
        raise ValueError(f"pairwise: expected [M, M, L] (one value per layer), got {x.shape}")
    _check_common(n_boot=n_boot, ci=0.95, generator=generator)
    counts = _seed_counts(x.shape[0], n_boot, generator, min_distinct=2)
    boot = _boot_pairwise(x, counts, None, None)  # (B, L)
    return np.bincount(boot.argmin(axis=1), minlength=x.shape[2]).astype(np.int64)


def bootstrap_argmin_per_seed(values: Any, *, n_boot: int = 2000,
                              generator: np.random.Generator) -> np.ndarray:
    """:func:`bootstrap_argmin` for per-seed values [M, L] (a seed bootstrap of the mean)."""
    v = _per_seed(values, name="values")
    if v.ndim != 2:
        raise ValueError(f"values: expected [M, L] (one value per layer), got {v.shape}")
    _check_common(n_boot=n_boot, ci=0.95, generator=generator)
    counts = _seed_counts(v.shape[0], n_boot, generator, min_distinct=1)
    boot = _boot_per_seed(v, counts, None, None)  # (B, L)
    return np.bincount(boot.argmin(axis=1), minlength=v.shape[1]).astype(np.int64)
