"""What a check can detect, before and after it runs: its parameters, the smallest p-value
its test can reach, each row's minimal detectable effect at 80 % power, and the seed count
that would settle an inconclusive row. Normal theory with t quantiles; no I/O.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from harness import stats

if TYPE_CHECKING:
    from harness.verdict_types import Plan

__all__ = ["POWER", "check_parameters", "min_attainable_p"]

POWER = 0.8  # the power at which minimal detectable effects are quoted
_MAX_SEEDS = 200  # search bound for "seeds that would settle it"


def check_parameters(tolerance: float, alpha: float, n_perm: int = 2000) -> None:
    """Raise ValueError naming the parameter when tolerance, alpha or n_perm is unusable."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or \
            not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance: expected a finite number >= 0 (absolute, in the metric's "
                         f"units), got {tolerance!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level strictly between 0 and 1 (e.g. 0.05), "
                         f"got {alpha!r}")
    if isinstance(n_perm, bool) or not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise ValueError(f"n_perm: expected a positive int, got {n_perm!r}")


def min_attainable_p(n_reference: int, n_candidate: int, *, paired: bool,
                     n_perm: int = 2000) -> float:
    """The smallest p-value the check's one-sided max-T test can return, for any number of
    rows (see :func:`harness.stats.min_attainable_p`): paired on M seeds 1 / 2**M, unpaired
    1 / C(Ma + Mb, Mb) while the patterns are enumerated, else 1 / (n_perm + 1)."""
    return stats.min_attainable_p(n_reference, n_candidate, paired=paired, n_perm=n_perm,
                                  alternative="less")


def _seeds_needed(n_reference: int, *, paired: bool, alpha: float, n_perm: int) -> int | None:
    try:
        return stats.seeds_needed(max(n_reference, 1), paired=paired, alpha=alpha, n_perm=n_perm,
                                  alternative="less")
    except ValueError:
        return None


def _t(q: float, df: float) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(q, max(df, 1.0)))


def _detectable(se: float, df: float, *, alpha: float, n_rows: int, tolerance: float) -> float:
    """The effect a row of standard error ``se`` flags with 80 % power: significant at the
    Bonferroni level alpha / n_rows (a conservative stand-in for the max-T level) and beyond
    the tolerance, each with probability 0.8 (normal theory, t quantiles)."""
    t_pow = _t(POWER, df)
    return max((_t(1.0 - alpha / max(n_rows, 1), df) + t_pow) * se, tolerance + t_pow * se)


def _mde(sd: float, p: Plan, *, n_rows: int, tolerance: float) -> float:
    """Minimal detectable effect of a row whose reference units spread by ``sd``; the
    candidate is assumed to spread alike and, when paired, to be uncorrelated with the
    reference (conservative: real pairing helps). inf when the test cannot reach alpha."""
    if p.underpowered:
        return math.inf
    if p.paired:
        se, df = sd * math.sqrt(2.0 / p.n_candidate), p.n_candidate - 1
    else:
        se = sd * math.sqrt(1.0 / p.n_reference + 1.0 / p.n_candidate)
        df = p.n_reference + p.n_candidate - 2
    return _detectable(se, df, alpha=p.alpha, n_rows=n_rows, tolerance=tolerance)


def _settle(worse_by: float, sd: float, p: Plan, *, n_rows: int, tolerance: float) -> int | None:
    """Seeds per family (both families with that many: the reference's baseline rewritten
    with them too) at which an effect of ``worse_by`` with seed-level spread ``sd`` (paired:
    of the differences) would be flagged with 80 % power; None beyond 200."""
    for m in range(3, _MAX_SEEDS + 1):
        n_ref = m if p.paired else max(p.n_reference, m)
        if not min_attainable_p(n_ref, m, paired=p.paired, n_perm=p.n_perm) < p.alpha:
            continue
        if p.paired:
            se, df = sd / math.sqrt(m), m - 1
        else:
            se, df = sd * math.sqrt(1.0 / n_ref + 1.0 / m), n_ref + m - 2
        if worse_by >= _detectable(se, df, alpha=p.alpha, n_rows=n_rows, tolerance=tolerance):
            return m
    return None
