"""What every seed-level statistic shares: the result types, the names of the options, and
the checks of their inputs.

Inputs are pairwise seed matrices X [M, M, ...] (X[a, m] = seed a measured against seed m;
the diagonal is ignored whatever it holds) or per-seed values [M, ...]. :class:`Estimate` is
a family statistic with its interval, :class:`Comparison` a difference between two families
with its test, :class:`JointTest` one max-T test over many rows; :class:`Underpowered` is
raised by callers for a test that could never reject. The ``_check_*`` helpers raise the
errors that name the parameter at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Estimate", "Comparison", "Underpowered", "JointTest", "Alternative", "ALTERNATIVES",
           "CI_METHODS"]

Alternative = Literal["greater", "less", "two-sided"]
ALTERNATIVES: tuple[str, ...] = ("greater", "less", "two-sided")
CI_METHODS: tuple[str, ...] = ("jackknife-t", "multi-bootstrap")


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


def _min_seeds_for_test(m: int, *, name: str) -> None:
    if m < 3:
        raise ValueError(
            f"{name}: a seed-level test on a pairwise metric needs at least 3 seeds (with 2 "
            f"there is a single pair and nothing to compare it with), got M={m}"
        )
