"""The gate policy: is the candidate family *worse* than its reference? A pure function.

A **check** compares a candidate family (the change) with a reference family (its per-seed
values, usually read from a stored baseline) on a set of metrics. Each scalar metric gives
one *row*, each per-layer metric one row per layer. The rule, for every row at once:

1. the candidate is worse than the reference, in the metric's direction, by more than the
   row's tolerance (absolute, in the metric's units);
2. a one-sided seed-level test rejects "not worse" at ``alpha`` **for the whole check**: one
   max-statistic test over every row of every metric (the same sign flips or label splits for
   all rows, each row standardised, the maximum over rows compared with its null), so the
   probability that a check flags anything when nothing changed is at most ``alpha``, not
   ``alpha`` per row. Unlike Bonferroni or Holm this keeps the smallest attainable p-value
   at ``1 / 2**M`` for M paired seeds (``1 / C(Ma + Mb, Mb)`` unpaired), whatever the number
   of rows.

The seed-level units are :meth:`Measurement.unit_values` (per-seed values, or the seeds'
jackknife pseudo-values of a pairwise family mean). When the two sides share seeds (the
same init and data order) the test is paired: per-seed differences, sign flips. Otherwise
the seed labels are permuted. Both are exact when the patterns are few (<= 4096).

Verdicts (:data:`STATUSES`): ``pass``; ``regressed`` (some row meets 1 and 2);
``inconclusive`` (no row regressed, but some row is worse than its tolerance without a
significant test: the report says how many seeds would settle it); ``underpowered`` (the
smallest attainable p is not below alpha, so the check could never fail; decided before
anything trains, see :func:`plan`); ``stale``, ``missing``, ``invalid`` (the reference
cannot be used, decided by the caller); ``updated`` (a baseline was rewritten). None passes
silently: :attr:`Verdict.failed` says whether the status fails the test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from harness.results import Measurement
from harness import stats
from harness.stats import paired_difference_per_seed, permutation_difference

__all__ = ["Row", "Plan", "Verdict", "Status", "STATUSES", "FAILING", "InconclusivePolicy",
           "check_parameters", "min_attainable_p", "seeds_needed", "plan", "decide",
           "format_report", "format_table"]

Status = Literal["pass", "regressed", "inconclusive", "underpowered", "stale", "missing",
                 "invalid", "updated"]
STATUSES: tuple[str, ...] = ("pass", "regressed", "inconclusive", "underpowered", "stale",
                             "missing", "invalid", "updated")
FAILING: frozenset[str] = frozenset({"regressed", "underpowered", "stale", "missing", "invalid"})
InconclusivePolicy = Literal["fail", "pass"]
POWER = 0.8  # the power at which minimal detectable effects are quoted
_MAX_SEEDS = 200  # search bound for "seeds that would settle it"


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Row:
    """One tested value: a scalar metric (``layer`` None) or one layer of a per-layer one.

    ``delta = candidate - reference``; ``lo``, ``hi``: its per-row CI (t over the seed-level
    units, not adjusted); ``p``: one-sided p-value for "candidate worse", max-T adjusted over
    every row of the check; ``mde``: the minimal detectable effect at 80 % power (how much
    worse the candidate must be for the check to flag it four times in five), computed from
    the reference's seed-to-seed spread.
    """

    metric: str
    layer: int | None
    reference: float
    candidate: float
    delta: float
    lo: float
    hi: float
    p: float
    tolerance: float
    alpha: float
    mde: float
    regressed: bool
    higher_is_better: bool = True

    @property
    def worse_by(self) -> float:
        """How much worse the candidate is, in the metric's direction (negative: better)."""
        return -self.delta if self.higher_is_better else self.delta

    @property
    def beyond_tolerance(self) -> bool:
        return self.worse_by > self.tolerance

    @property
    def flag(self) -> str:
        if self.regressed:
            return "REGRESSED"
        if self.beyond_tolerance:
            return "worse, n.s."  # beyond tolerance, but the seeds do not show it
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["flag"] = self.flag
        return d


@dataclass(frozen=True)
class Plan:
    """What a check can detect, decided from the reference and the candidate's seeds alone
    (before anything trains).

    ``paired``: whether the test pairs seeds (``seeds`` lists the seed keys it pairs, or the
    reference's and the candidate's seed keys when unpaired); ``n_rows``: rows over which the
    max-T test controls the error; ``min_p``: the smallest p-value the test can return;
    ``mde``: per row label ``(metric, layer)``, the minimal detectable effect at 80 % power;
    ``seeds_needed``: when underpowered, the candidate seed count that would work.
    """

    paired: bool
    n_reference: int
    n_candidate: int
    n_rows: int
    alpha: float
    min_p: float
    mde: Mapping[tuple[str, int | None], float]
    seeds_needed: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def underpowered(self) -> bool:
        return not self.min_p < self.alpha

    @property
    def design(self) -> str:
        if self.paired:
            return (f"paired on {self.n_candidate} shared seeds (sign-flip test on per-seed "
                    "differences)")
        return (f"unpaired, {self.n_reference} reference vs {self.n_candidate} candidate seeds "
                "(seed-label permutation test)")

    def refusal(self) -> str:
        """Why an underpowered check is refused, and the way out."""
        out = (f"this check could never fail: {self.design}, the smallest attainable p-value "
               f"is {self.min_p:.3g}, not below alpha {self.alpha:g}")
        if self.seeds_needed is not None:
            out += (f"; give the candidate at least {self.seeds_needed} seeds"
                    + (" (the same seeds as the reference, to stay paired)" if self.paired else ""))
        return out


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check. ``reasons``: why it is stale, invalid, missing or
    underpowered; ``notes``: what the reader should know (pairing, reductions, seeds that
    would settle an inconclusive row); ``seeds_to_settle``: for an inconclusive verdict, the
    seed count per family at which the observed effect would be detected at 80 % power."""

    status: Status
    rows: tuple[Row, ...] = ()
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    baseline_path: str | None = None
    written: tuple[str, ...] = ()
    design: str = ""
    seeds_to_settle: int | None = None
    inconclusive_policy: InconclusivePolicy = "fail"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        for name in ("rows", "reasons", "notes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "written", tuple(str(w) for w in self.written))

    @property
    def failed(self) -> bool:
        """Whether this verdict fails the test (an inconclusive one per its policy)."""
        return self.status in FAILING or (self.status == "inconclusive"
                                          and self.inconclusive_policy == "fail")

    @property
    def regressed_rows(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.regressed)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "failed": self.failed, "rows": [r.to_dict() for r in self.rows],
                "reasons": list(self.reasons), "notes": list(self.notes),
                "baseline_path": self.baseline_path, "written": list(self.written),
                "design": self.design, "seeds_to_settle": self.seeds_to_settle,
                "inconclusive_policy": self.inconclusive_policy}


# ----------------------------------------------------------------------------- power


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


def seeds_needed(n_reference: int, *, paired: bool, alpha: float, n_perm: int = 2000) -> int | None:
    """The smallest candidate seed count whose test can reach ``alpha`` (paired: the shared
    seed count, which the reference must have too); None if none can."""
    try:
        return stats.seeds_needed(n_reference, paired=paired, alpha=alpha, n_perm=n_perm,
                                  alternative="less")
    except ValueError:
        return None


def _t(q: float, df: float) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(q, max(df, 1.0)))


def _mde(sd: float, *, n_reference: int, n_candidate: int, paired: bool, alpha: float,
         n_rows: int, tolerance: float, min_p: float) -> float:
    """Minimal detectable effect at 80 % power for one row whose seed-level units spread by
    ``sd`` (the reference's). Normal-theory approximation with t quantiles: the row must be
    significant at the Bonferroni level alpha / n_rows (a conservative stand-in for the max-T
    level) and beyond the tolerance, each with probability 0.8. Paired: the candidate is
    assumed to spread like the reference and to be uncorrelated with it (conservative: real
    pairing helps). inf when the test cannot reach alpha at all."""
    if not min_p < alpha:
        return math.inf
    if paired:
        se, df = sd * math.sqrt(2.0 / n_candidate), n_candidate - 1
    else:
        se = sd * math.sqrt(1.0 / n_reference + 1.0 / n_candidate)
        df = n_reference + n_candidate - 2
    t_pow = _t(POWER, df)
    return max((_t(1.0 - alpha / max(n_rows, 1), df) + t_pow) * se, tolerance + t_pow * se)


# ----------------------------------------------------------------------------- units


@dataclass(frozen=True)
class _Units:
    """One metric's seed-level units on both sides, oriented so that higher is better:
    ref [Mr, R], cand [Mc, R] (R = 1 for a scalar, L per layer)."""

    metric: str
    layers: tuple[int | None, ...]
    ref: np.ndarray
    cand: np.ndarray
    higher_is_better: bool
    note: str | None = None


def _pairing(reference_keys: Sequence[str], candidate_keys: Sequence[str]
             ) -> tuple[bool, list[int], list[int], list[str]]:
    """Pair on the seeds both sides share (at least 3); returns (paired, reference indices,
    candidate indices, notes). Shared seeds are never treated as independent when there are
    enough of them to pair: if the paired test cannot reach alpha the check is underpowered."""
    ref, cand = list(reference_keys), list(candidate_keys)
    for side, keys in (("reference", ref), ("candidate", cand)):
        if len(set(keys)) != len(keys):
            raise ValueError(f"{side} seed keys repeat: {keys}")
    shared = [k for k in ref if k in cand]
    notes: list[str] = []
    if len(shared) >= 3:
        if len(shared) < max(len(ref), len(cand)):
            left = sorted(set(ref) ^ set(cand))
            notes.append(f"paired on the {len(shared)} seeds both sides share; {left} "
                         "are left out of the test")
        return True, [ref.index(k) for k in shared], [cand.index(k) for k in shared], notes
    if shared:
        notes.append(f"seeds {shared} are on both sides but too few to pair; the test treats "
                     "the two sides as independent")
    return False, list(range(len(ref))), list(range(len(cand))), notes


def _subset(m: Measurement, idx: list[int]) -> Measurement:
    """``m`` restricted to the seeds at ``idx`` (in that order)."""
    if m.per_seed is not None:
        return Measurement(m.name, m.value, m.lo, m.hi, m.higher_is_better,
                           per_seed=np.asarray(m.per_seed)[idx], n_seeds=len(idx), ci=m.ci)
    if m.pairwise is not None:
        pw = np.asarray(m.pairwise)[np.ix_(idx, idx)]
        return Measurement(m.name, m.value, m.lo, m.hi, m.higher_is_better, pairwise=pw,
                           n_seeds=len(idx), ci=m.ci)
    return m


def _layer_mean(m: Measurement) -> Measurement:
    """A per-layer measurement reduced to its mean over layers (seed-level values too)."""
    v = float(np.mean(m.value))
    kw: dict[str, Any] = {}
    if m.per_seed is not None:
        kw["per_seed"] = np.asarray(m.per_seed, dtype=float).mean(axis=-1)
    if m.pairwise is not None:
        kw["pairwise"] = np.asarray(m.pairwise, dtype=float).mean(axis=-1)
    return Measurement(m.name, np.asarray(v), np.asarray(np.nan), np.asarray(np.nan),
                       m.higher_is_better, n_seeds=m.n_seeds, ci=m.ci, **kw)


def _units(name: str, ref: Measurement, cand: Measurement) -> _Units:
    """Both sides' seed-level units of one metric; ValueError naming the metric when they
    cannot be compared."""
    if ref.higher_is_better != cand.higher_is_better:
        raise ValueError(f"{name}: higher_is_better is {ref.higher_is_better} in the reference "
                         f"but {cand.higher_is_better} in the candidate; the metric's definition "
                         "changed, rewrite the reference's baseline")
    shape_r, shape_c = np.shape(ref.value), np.shape(cand.value)
    if len(shape_r) > 1 or len(shape_c) > 1:
        raise ValueError(f"{name}: shape {shape_c}; a check tests scalars and per-layer [L] "
                         "values, reduce per-head values to layers first")
    note = None
    if shape_r != shape_c:
        if len(shape_r) == 1 and len(shape_c) == 1:
            note = (f"{name}: the reference has {shape_r[0]} layers and the candidate "
                    f"{shape_c[0]}; compared on the mean over layers")
            ref, cand = _layer_mean(ref), _layer_mean(cand)
        else:
            raise ValueError(f"{name}: the reference has shape {shape_r} per seed and the "
                             f"candidate {shape_c}; they cannot be compared")
    layers_of = tuple(range(np.size(ref.value))) if np.ndim(ref.value) == 1 else (None,)
    for side, m in (("reference", ref), ("candidate", cand)):
        bad = _undefined_layers(m, layers_of)
        if bad:
            where = "" if bad == [None] else f" in layer(s) {bad}"
            raise ValueError(f"{name}: the {side} has undefined (NaN) seed values{where}: a "
                             "degenerate family (a dead layer, a diverged seed); look at the "
                             "family's analysis before trusting any number of it")
    try:
        ur, uc = ref.unit_values(), cand.unit_values()
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    sign = 1.0 if ref.higher_is_better else -1.0
    ur = sign * np.asarray(ur, dtype=float).reshape(ur.shape[0], -1)  # (Mr, R)
    uc = sign * np.asarray(uc, dtype=float).reshape(uc.shape[0], -1)  # (Mc, R)
    layers: tuple[int | None, ...] = tuple(range(ur.shape[1])) if np.ndim(ref.value) == 1 else (None,)
    return _Units(name, layers, ur, uc, ref.higher_is_better, note)


def _undefined_layers(m: Measurement, layers: tuple[int | None, ...]) -> list[int | None]:
    """The layers (None: a scalar) whose seed-level values hold NaN or inf (off the
    diagonal, for a pairwise statistic)."""
    if m.per_seed is not None:
        v = np.asarray(m.per_seed, dtype=float).reshape(np.shape(m.per_seed)[0], -1)  # (M, R)
    elif m.pairwise is not None:
        pw = np.asarray(m.pairwise, dtype=float)
        M = pw.shape[0]
        v = pw[~np.eye(M, dtype=bool)].reshape(M * (M - 1), -1)  # (pairs, R)
    else:
        return []
    if v.shape[1] != len(layers):
        return []  # a shape problem, reported by the caller
    return [layers[i] for i in range(v.shape[1]) if not np.isfinite(v[:, i]).all()]


def _select(reference: Mapping[str, Measurement], candidate: Mapping[str, Measurement],
            metrics: Sequence[str]) -> list[tuple[str, Measurement, Measurement]]:
    out = []
    for name in metrics:
        if name not in reference:
            raise KeyError(f"{name}: not in the reference (it has: {', '.join(sorted(reference))})")
        if name not in candidate:
            raise KeyError(f"{name}: not in the candidate (it has: {', '.join(sorted(candidate))})")
        out.append((name, reference[name], candidate[name]))
    return out


# ----------------------------------------------------------------------------- the policy


def _tolerance(tolerance: float | Mapping[str, float], name: str) -> float:
    t = tolerance.get(name, tolerance.get("default")) if isinstance(tolerance, Mapping) else tolerance
    if t is None:
        raise ValueError(f"tolerance: no entry for metric {name!r} and no 'default'")
    return t  # checked by check_parameters before use


def plan(reference: Mapping[str, Measurement], *, metrics: Sequence[str],
         reference_keys: Sequence[str], candidate_keys: Sequence[str], alpha: float,
         tolerance: float | Mapping[str, float] = 0.0, n_perm: int = 2000) -> Plan:
    """What the check of ``metrics`` can detect, from the reference's measurements and both
    sides' seed keys alone: pairing, the smallest attainable p, each row's minimal detectable
    effect, and (underpowered) the seed count that would work."""
    check_parameters(0.0, alpha, n_perm)
    paired, ir, ic, notes = _pairing(reference_keys, candidate_keys)
    n_ref, n_cand = len(ir), len(ic)
    min_p = min_attainable_p(n_ref, n_cand, paired=paired, n_perm=n_perm)
    rows: list[tuple[str, int | None, float, float]] = []
    for name in metrics:
        if name not in reference:
            raise KeyError(f"{name}: not in the reference (it has: {', '.join(sorted(reference))})")
        m = _subset(reference[name], ir)
        u = np.asarray(m.unit_values(), dtype=float).reshape(n_ref, -1)  # (M, R)
        layers = range(u.shape[1]) if np.ndim(m.value) == 1 else [None]
        for i, layer in enumerate(layers):
            rows.append((name, layer, float(np.std(u[:, i], ddof=1)), _tolerance(tolerance, name)))
    mde = {(name, layer): _mde(sd, n_reference=n_ref, n_candidate=n_cand, paired=paired,
                               alpha=alpha, n_rows=len(rows), tolerance=tol, min_p=min_p)
           for name, layer, sd, tol in rows}
    need = None
    if not min_p < alpha:
        need = seeds_needed(len(reference_keys), paired=paired, alpha=alpha, n_perm=n_perm)
    return Plan(paired=paired, n_reference=n_ref, n_candidate=n_cand, n_rows=len(rows), alpha=alpha,
                min_p=min_p, mde=mde, seeds_needed=need, notes=tuple(notes))


def _settle(worse_by: float, sd: float, *, paired: bool, alpha: float, n_rows: int,
            tolerance: float, n_reference: int, n_perm: int) -> int | None:
    """Seeds per family (the reference keeps ``n_reference`` when unpaired) at which an
    effect of ``worse_by`` with seed-level spread ``sd`` would be flagged with 80 % power."""
    for m in range(3, _MAX_SEEDS + 1):
        n_ref = m if paired else max(n_reference, m)
        min_p = min_attainable_p(n_ref, m, paired=paired, n_perm=n_perm)
        if paired:  # sd is the spread of the observed differences here
            se, df = sd / math.sqrt(m), m - 1
        else:
            se, df = sd * math.sqrt(1.0 / n_ref + 1.0 / m), n_ref + m - 2
        if not min_p < alpha:
            continue
        t_pow = _t(POWER, df)
        if worse_by >= max((_t(1.0 - alpha / n_rows, df) + t_pow) * se, tolerance + t_pow * se):
            return m
    return None


def decide(reference: Mapping[str, Measurement], candidate: Mapping[str, Measurement], *,
           metrics: Sequence[str], tolerance: float | Mapping[str, float], alpha: float,
           reference_keys: Sequence[str], candidate_keys: Sequence[str],
           generator: np.random.Generator, n_perm: int = 2000,
           inconclusive: InconclusivePolicy = "fail") -> Verdict:
    """The verdict of one check (see the module docstring for the rule).

    ``reference`` / ``candidate``: metric name -> Measurement with seed-level values;
    ``reference_keys`` / ``candidate_keys``: the seed keys of their seeds, in the order of
    the seed axes (shared keys pair); ``tolerance``: one number or per metric name (with an
    optional ``"default"``). Metrics whose seed values are undefined (NaN), or that cannot be
    compared, give an ``invalid`` verdict naming them; a check that could never fail gives
    ``underpowered``. Never raises for data; raises ValueError for bad parameters.
    """
    if inconclusive not in ("fail", "pass"):
        raise ValueError(f"inconclusive: expected 'fail' or 'pass', got {inconclusive!r}")
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics: expected a non-empty list of metric names, got {metrics!r}")
    for name in metrics:
        check_parameters(_tolerance(tolerance, name), alpha, n_perm)
    base = dict(inconclusive_policy=inconclusive)
    try:
        selected = _select(reference, candidate, metrics)
    except KeyError as e:
        return Verdict("invalid", reasons=(str(e.args[0]),), **base)
    paired, ir, ic, notes = _pairing(reference_keys, candidate_keys)
    units: list[_Units] = []
    problems: list[str] = []
    for name, r, c in selected:
        try:
            units.append(_units(name, _subset(r, ir), _subset(c, ic)))
        except ValueError as e:
            problems.append(str(e))
    if problems:
        return Verdict("invalid", reasons=problems, notes=notes, **base)
    notes += [u.note for u in units if u.note]
    n_rows = sum(len(u.layers) for u in units)
    min_p = min_attainable_p(len(ir), len(ic), paired=paired, n_perm=n_perm)
    design = (f"paired on {len(ic)} seeds: sign-flip test on per-seed differences"
              if paired else f"unpaired, {len(ir)} vs {len(ic)} seeds: seed-label permutation test")
    design += f"; p: one-sided, max-T adjusted over all {n_rows} rows"
    if not min_p < alpha:
        need = seeds_needed(len(reference_keys), paired=paired, alpha=alpha, n_perm=n_perm)
        why = (f"this check could never fail: {design}, the smallest attainable p-value is "
               f"{min_p:.3g}, not below alpha {alpha:g}")
        if need is not None:
            why += f"; use at least {need} seeds per family"
        return Verdict("underpowered", reasons=(why,), notes=notes, design=design, **base)

    ref_u = np.concatenate([u.ref for u in units], axis=1)  # (Mr, R), higher is better
    cand_u = np.concatenate([u.cand for u in units], axis=1)  # (Mc, R)
    kw = dict(generator=generator, alternative="less", max_statistic=True, n_perm=n_perm,
              ci=1.0 - alpha if alpha < 0.5 else 0.95)
    if paired:
        cmp = paired_difference_per_seed(ref_u, cand_u, **kw)
        spread = np.std(cand_u - ref_u, axis=0, ddof=1)  # (R,)
    else:
        cmp = permutation_difference(ref_u, cand_u, **kw)
        spread = np.sqrt((np.var(ref_u, axis=0, ddof=1) + np.var(cand_u, axis=0, ddof=1)) / 2)
    delta_o = np.atleast_1d(cmp.delta)  # oriented: negative is worse
    lo_o, hi_o = np.atleast_1d(cmp.lo), np.atleast_1d(cmp.hi)
    p = np.atleast_1d(cmp.p_value)
    rows: list[Row] = []
    settle: list[str] = []
    n_settle: list[int] = []
    j = 0
    for u in units:
        sign = 1.0 if u.higher_is_better else -1.0
        tol = _tolerance(tolerance, u.metric)
        for i, layer in enumerate(u.layers):
            d = sign * float(delta_o[j])
            lo, hi = sorted((sign * float(lo_o[j]), sign * float(hi_o[j])))
            worse = -float(delta_o[j])
            mde = _mde(float(np.std(u.ref[:, i], ddof=1)), n_reference=len(ir), n_candidate=len(ic),
                       paired=paired, alpha=alpha, n_rows=n_rows, tolerance=tol, min_p=min_p)
            row = Row(metric=u.metric, layer=layer, reference=sign * float(u.ref[:, i].mean()),
                      candidate=sign * float(u.cand[:, i].mean()), delta=d, lo=lo, hi=hi,
                      p=float(p[j]), tolerance=float(tol), alpha=alpha, mde=mde,
                      regressed=bool(worse > tol and p[j] < alpha),
                      higher_is_better=u.higher_is_better)
            rows.append(row)
            if row.beyond_tolerance and not row.regressed:
                n = _settle(worse, float(spread[j]), paired=paired, alpha=alpha, n_rows=n_rows,
                            tolerance=tol, n_reference=len(ir), n_perm=n_perm)
                where = "" if layer is None else f" layer {layer}"
                settle.append(f"{u.metric}{where}: worse by {worse:.4f} > tolerance {tol:g} but "
                              f"p = {p[j]:.3g}; " + (f"with the observed spread about {n} seeds per "
                                                     "family would detect it at 80 % power"
                                                     if n is not None else
                                                     f"more than {_MAX_SEEDS} seeds would be needed"))
                n_settle.append(n if n is not None else _MAX_SEEDS + 1)
            j += 1
    if any(r.regressed for r in rows):
        status: Status = "regressed"
    elif settle:
        status = "inconclusive"
    else:
        status = "pass"
    seeds_to_settle = max(n_settle) if n_settle and max(n_settle) <= _MAX_SEEDS else None
    return Verdict(status, rows=rows, notes=tuple(notes) + tuple(settle), design=design,
                   seeds_to_settle=seeds_to_settle, **base)


# ----------------------------------------------------------------------------- report


def _fmt(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "inf" if x == math.inf else "nan"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _fmt_p(p: float) -> str:
    return f"{p:.3g}" if p < 0.001 else f"{p:.3f}"


def _seeds(seeds: Mapping[str, Sequence[int]] | Sequence[int] | None) -> str:
    if seeds is None:
        return "-"
    if isinstance(seeds, Mapping):
        return "; ".join(f"{fam}: {list(s)}" for fam, s in seeds.items()) or "-"
    return str(list(seeds))


def format_table(rows: Sequence[Row]) -> list[str]:
    """The fixed-width table: metric, layer, reference, candidate, Δ, CI(Δ), p, MDE,
    tolerance, flag."""
    head = ["metric", "layer", "reference", "candidate", "Δ", "CI(Δ)", "p", "MDE", "tolerance", "flag"]
    body = [[r.metric, "-" if r.layer is None else str(r.layer), _fmt(r.reference),
             _fmt(r.candidate), _fmt(r.delta, True),
             f"[{_fmt(r.lo, True)}, {_fmt(r.hi, True)}]", _fmt_p(r.p), _fmt(r.mde),
             _fmt(r.tolerance), r.flag] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    left = {0, 9}  # text columns left-aligned, numbers right-aligned

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body]


_TITLES = {
    "pass": "PASS: no value is worse than the reference by more than its tolerance",
    "stale": "STALE baseline (not a regression): it no longer describes its reference",
    "missing": "MISSING baseline: there is no stored reference to compare against yet",
    "invalid": "INVALID: the check cannot be decided",
    "underpowered": "UNDERPOWERED: refused, this check could never fail",
    "updated": "baseline UPDATED (--update-baselines)",
}


def format_report(verdict: Verdict, *, title: str = "", seeds_reference: Any = None,
                  seeds_candidate: Any = None, update_command: str | None = None,
                  mlflow_run: str | None = None) -> str:
    """A report a person can read: the status line, why, the table, the test used, the
    seeds behind both sides, notes, files written, the MLflow run, the way out."""
    rows = verdict.rows
    status = verdict.status
    if status == "regressed":
        n = len(verdict.regressed_rows)
        head = (f"REGRESSED: {n} of {len(rows)} value(s) worse than the reference by more than the "
                f"tolerance, with the one-sided seed-level test rejecting at alpha {rows[0].alpha:g} "
                "for the whole check")
    elif status == "inconclusive":
        n = sum(r.beyond_tolerance for r in rows)
        head = (f"INCONCLUSIVE: {n} of {len(rows)} value(s) worse than the reference by more than "
                "the tolerance, but the seeds do not show it at alpha "
                f"{rows[0].alpha:g}" + (f"; about {verdict.seeds_to_settle} seeds per family would "
                                        "settle it" if verdict.seeds_to_settle else "")
                + ("" if verdict.failed else " (reported, not failed: inconclusive = pass)"))
    else:
        head = _TITLES[status]
    lines = [f"seedstab: {head}" + (f"  [{title}]" if title else "")]
    lines += [f"  - {r}" for r in verdict.reasons]
    if verdict.baseline_path:
        lines.append(f"reference baseline: {verdict.baseline_path}")
    if rows:
        lines += ["", *format_table(rows),
                  "Δ = candidate - reference; CI(Δ): per-row t interval over seeds; "
                  + (verdict.design or "p: one-sided, max-T adjusted over all rows")
                  + "; MDE: minimal detectable effect at 80 % power, from the reference's spread"]
    if seeds_reference is not None or seeds_candidate is not None:
        lines += ["", f"seeds (reference): {_seeds(seeds_reference)}",
                  f"seeds (candidate): {_seeds(seeds_candidate)}"]
    if verdict.notes:
        lines += ["notes:"] + [f"  - {n}" for n in verdict.notes]
    if verdict.written:
        lines += ["written:"] + [f"  {w}" for w in verdict.written]
    if mlflow_run:
        lines.append(f"MLflow run: {mlflow_run}")
    if update_command and status in ("stale", "missing", "invalid", "regressed", "inconclusive"):
        what = ("to retrain the reference and rewrite its baseline" if status != "regressed"
                and status != "inconclusive" else
                "if the change is intended, to make it the new reference")
        lines.append(f"{what}: {update_command}")
    return "\n".join(lines)
