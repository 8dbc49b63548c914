"""The gate policy: is the candidate family *worse* than its reference? A pure function.

A **check** compares a candidate family (the change) with a reference family (its per-seed
values, usually read from a stored baseline) on a set of metrics. Each scalar metric gives
one *row*, each per-layer metric one row per layer. A row regresses when both hold:

1. the candidate is worse than the reference, in the metric's direction, by more than the
   row's tolerance (absolute, in the metric's units; a practical-significance threshold on the
   point estimate, not a margin inside the test);
2. a one-sided seed-level test rejects "not worse" at ``alpha`` **for the whole check**: one
   max-statistic test over every row of every metric (the same sign flips or label splits for
   all rows, each row studentised, the maximum over rows compared with its permutation
   distribution), so the probability that any row of an unchanged family regresses is at
   most ``alpha``. Unlike Bonferroni or Holm this keeps the smallest attainable p-value at
   ``1 / 2**M`` for M paired seeds (``1 / C(Ma + Mb, Mb)`` unpaired), whatever the number
   of rows.

The seed-level units are :meth:`Measurement.unit_values` (per-seed values, or the seeds'
jackknife pseudo-values of a pairwise family mean). When the two sides share at least three
seeds (the same init and data order) the test is paired on them: per-seed differences, sign
flips. Otherwise the seed labels are permuted. Both are exact while the patterns are few.

Verdicts (:data:`STATUSES`): ``pass``; ``regressed`` (some row meets 1 and 2);
``inconclusive`` (no row regressed, but some row is worse than its tolerance without a
significant test: the report says how many seeds would settle it); ``underpowered`` (the
smallest attainable p is not below alpha, so the check could never fail; :func:`plan`
decides it before anything trains); ``stale``, ``missing``, ``invalid`` (the reference
cannot be used, decided by the caller; ``invalid`` also for undefined values);
``updated`` (a fixture baseline was rewritten). :attr:`Verdict.failed` says whether a status
fails the test; an inconclusive one fails only under the ``"fail"`` policy, because under a
true null it is common (measured: README, "The gate"), while a regressed one is at most
``alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from harness import stats
from harness.results import Measurement

__all__ = ["Row", "Plan", "Verdict", "Status", "STATUSES", "FAILING", "InconclusivePolicy",
           "INCONCLUSIVE_DEFAULT", "RESOLUTION", "check_parameters", "min_attainable_p",
           "plan", "decide", "resolve_tolerance"]

Status = Literal["pass", "regressed", "inconclusive", "underpowered", "stale", "missing",
                 "invalid", "updated"]
STATUSES: tuple[str, ...] = ("pass", "regressed", "inconclusive", "underpowered", "stale",
                             "missing", "invalid", "updated")
FAILING: frozenset[str] = frozenset({"regressed", "underpowered", "stale", "missing", "invalid"})
InconclusivePolicy = Literal["fail", "pass"]
INCONCLUSIVE_DEFAULT: InconclusivePolicy = "pass"
POWER = 0.8  # the power at which minimal detectable effects are quoted
# Baselines store 6 significant digits: differences below this are storage noise, not change.
RESOLUTION = 1e-5
_MAX_SEEDS = 200  # search bound for "seeds that would settle it"


# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Row:
    """One tested value: a scalar metric (``layer`` None) or one layer of a per-layer one.

    ``delta = candidate - reference``; ``lo``, ``hi``: its per-row t interval at level ``ci``
    over the seeds (not adjusted); ``p``: one-sided p-value for "candidate worse", max-T
    adjusted over every row of the check; ``mde``: the minimal detectable effect at 80 %
    power (how much worse the candidate must be for the check to flag it four times in five),
    from the reference's seed-to-seed spread.
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
    ci: float = 0.95

    @property
    def worse_by(self) -> float:
        """How much worse the candidate is, in the metric's direction (negative: better)."""
        return -self.delta if self.higher_is_better else self.delta

    @property
    def beyond_tolerance(self) -> bool:
        return self.worse_by > self.tolerance + RESOLUTION

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
    """What a check can detect, from the seed keys of both sides (and, for ``mde``, the
    reference's spread), before anything trains.

    ``paired``: whether the test pairs the shared seeds (``reference_index`` /
    ``candidate_index``: the seeds the test uses, in pairing order); ``min_p``: the smallest
    p-value the test can return; ``mde``: per ``(metric, layer)``, the minimal detectable
    effect at 80 % power; ``notes``: seeds left out, seeds that could not be paired.
    """

    paired: bool
    reference_index: tuple[int, ...]
    candidate_index: tuple[int, ...]
    n_reference_seeds: int
    alpha: float
    min_p: float
    n_perm: int = 2000
    mde: Mapping[tuple[str, int | None], float] | None = None
    notes: tuple[str, ...] = ()

    @property
    def n_reference(self) -> int:
        return len(self.reference_index)

    @property
    def n_candidate(self) -> int:
        return len(self.candidate_index)

    @property
    def underpowered(self) -> bool:
        return not self.min_p < self.alpha

    @property
    def design(self) -> str:
        if self.paired:
            return f"paired on {self.n_candidate} seeds: sign-flip test on per-seed differences"
        return (f"unpaired, {self.n_reference} vs {self.n_candidate} seeds: seed-label permutation "
                "test (Welch t)")

    def refusal(self) -> str:
        """Why an underpowered check is refused, and the ways out."""
        if self.n_candidate < 3 or self.n_reference < 3:
            return (f"this check could never fail: {self.design}; seed-level tests need at least "
                    "3 seeds per family")
        out = (f"this check could never fail: {self.design}, the smallest attainable p-value is "
               f"{self.min_p:.3g}, not below alpha {self.alpha:g}")
        paired_need = _seeds_needed(0, paired=True, alpha=self.alpha, n_perm=self.n_perm)
        fresh_need = _seeds_needed(self.n_reference_seeds, paired=False, alpha=self.alpha,
                                   n_perm=self.n_perm)
        ways = []
        if paired_need is not None:
            ways.append(f"give both families at least {paired_need} shared seeds (the reference's "
                        "baseline too: add seeds to it and rewrite it with --update-baselines)")
        if fresh_need is not None:
            ways.append(f"or check {fresh_need} fresh candidate seeds unpaired against the "
                        f"reference's {self.n_reference_seeds}")
        return out + ("; " + " ".join(ways) if ways else "")


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
    inconclusive_policy: InconclusivePolicy = INCONCLUSIVE_DEFAULT

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        if self.inconclusive_policy not in ("fail", "pass"):
            raise ValueError(f"inconclusive: expected 'fail' or 'pass', got {self.inconclusive_policy!r}")
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


def _subset(m: Measurement, idx: Sequence[int]) -> Measurement:
    """``m`` restricted to the seeds at ``idx`` (in that order)."""
    idx = list(idx)
    for values, axes in ((m.per_seed, 1), (m.pairwise, 2)):
        if values is not None and max(idx, default=-1) >= np.shape(values)[0]:
            raise ValueError(f"{m.name}: holds values for {np.shape(values)[0]} seeds, but the seed "
                             f"keys name {max(idx) + 1} or more")
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
    kw: dict[str, Any] = {}
    if m.per_seed is not None:
        kw["per_seed"] = np.asarray(m.per_seed, dtype=float).mean(axis=-1)
    if m.pairwise is not None:
        kw["pairwise"] = np.asarray(m.pairwise, dtype=float).mean(axis=-1)
    return Measurement(m.name, np.asarray(float(np.mean(m.value))), np.asarray(np.nan),
                       np.asarray(np.nan), m.higher_is_better, n_seeds=m.n_seeds, ci=m.ci, **kw)


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
    layers = tuple(range(np.size(ref.value))) if np.ndim(ref.value) == 1 else (None,)
    for side, m in (("reference", ref), ("candidate", cand)):
        bad = _undefined_layers(m, layers)
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
    return _Units(name, layers, ur, uc, ref.higher_is_better, note)


def resolve_tolerance(tolerance: float | Mapping[str, float], name: str) -> float:
    """The tolerance of metric ``name``: one number, or a mapping with an optional
    ``"default"``; checked (ValueError naming the parameter)."""
    t = tolerance.get(name, tolerance.get("default")) if isinstance(tolerance, Mapping) else tolerance
    if t is None:
        raise ValueError(f"tolerance: no entry for metric {name!r} and no 'default'")
    check_parameters(t, 0.5)
    return float(t)


# ----------------------------------------------------------------------------- the policy


def _design(reference_keys: Sequence[str], candidate_keys: Sequence[str], *, alpha: float,
            n_perm: int) -> Plan:
    """Pairing and the smallest attainable p from the seed keys alone. Shared seeds (at
    least 3) are paired on, never treated as independent: if that test cannot reach alpha
    the check is underpowered."""
    check_parameters(0.0, alpha, n_perm)
    ref, cand = [str(k) for k in reference_keys], [str(k) for k in candidate_keys]
    for side, keys in (("reference", ref), ("candidate", cand)):
        if len(set(keys)) != len(keys):
            raise ValueError(f"{side} seed keys repeat: {keys}")
    shared = [k for k in ref if k in cand]
    notes: list[str] = []
    paired = len(shared) >= 3
    if paired:
        ir, ic = [ref.index(k) for k in shared], [cand.index(k) for k in shared]
        if len(shared) < max(len(ref), len(cand)):
            notes.append(f"paired on the {len(shared)} seeds both sides share; "
                         f"{sorted(set(ref) ^ set(cand))} are left out of the test")
    else:
        ir, ic = list(range(len(ref))), list(range(len(cand)))
        if shared:
            notes.append(f"seeds {shared} are on both sides but too few to pair; the test treats "
                         "the two sides as independent")
    if min(len(ir), len(ic)) < 3:
        min_p = 1.0  # pseudo-values and t intervals need 3 seeds a side
    else:
        min_p = min_attainable_p(len(ir), len(ic), paired=paired, n_perm=n_perm)
    return Plan(paired=paired, reference_index=tuple(ir), candidate_index=tuple(ic),
                n_reference_seeds=len(ref), alpha=alpha, min_p=min_p, n_perm=n_perm,
                notes=tuple(notes))


def plan(reference: Mapping[str, Measurement], *, metrics: Sequence[str],
         reference_keys: Sequence[str], candidate_keys: Sequence[str], alpha: float,
         tolerance: float | Mapping[str, float] = 0.0, n_perm: int = 2000) -> Plan:
    """What the check of ``metrics`` can detect, from the reference's measurements and both
    sides' seed keys alone (before the candidate trains): pairing, the smallest attainable p
    and each row's minimal detectable effect. KeyError for a metric the reference lacks,
    ValueError for values that do not fit the keys."""
    p = _design(reference_keys, candidate_keys, alpha=alpha, n_perm=n_perm)
    rows: list[tuple[str, int | None, float, float]] = []
    for name in metrics:
        if name not in reference:
            raise KeyError(f"{name}: not in the reference (it has: {', '.join(sorted(reference))})")
        m = _subset(reference[name], p.reference_index)
        if p.n_reference < 3:
            continue
        u = np.asarray(m.unit_values(), dtype=float).reshape(p.n_reference, -1)  # (M, R)
        layers = range(u.shape[1]) if np.ndim(m.value) == 1 else [None]
        tol = resolve_tolerance(tolerance, name)
        rows += [(name, layer, float(np.std(u[:, i], ddof=1)), tol) for i, layer in enumerate(layers)]
    mde = {(name, layer): _mde(sd, p, n_rows=len(rows), tolerance=tol) for name, layer, sd, tol in rows}
    return Plan(**{**{k: getattr(p, k) for k in p.__dataclass_fields__}, "mde": mde})


def decide(reference: Mapping[str, Measurement], candidate: Mapping[str, Measurement], *,
           metrics: Sequence[str], tolerance: float | Mapping[str, float], alpha: float,
           reference_keys: Sequence[str], candidate_keys: Sequence[str],
           generator: np.random.Generator, n_perm: int = 2000,
           inconclusive: InconclusivePolicy = INCONCLUSIVE_DEFAULT) -> Verdict:
    """The verdict of one check (see the module docstring for the rule).

    ``reference`` / ``candidate``: metric name -> Measurement with seed-level values;
    ``reference_keys`` / ``candidate_keys``: the seed keys of their seeds, in the order of
    the seed axes (shared keys pair); ``tolerance``: one number or per metric name (with an
    optional ``"default"``). Values that are undefined (NaN) or cannot be compared give an
    ``invalid`` verdict naming them; a check that could never fail gives ``underpowered``.
    Raises ValueError only for bad parameters (tolerance, alpha, n_perm, policy, metrics).
    """
    if inconclusive not in ("fail", "pass"):
        raise ValueError(f"inconclusive: expected 'fail' or 'pass', got {inconclusive!r}")
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics: expected a non-empty list of metric names, got {metrics!r}")
    tolerances = {name: resolve_tolerance(tolerance, name) for name in metrics}
    check_parameters(0.0, alpha, n_perm)
    base: dict[str, Any] = dict(inconclusive_policy=inconclusive)
    missing = [f"{name}: not in the {side} (it has: {', '.join(sorted(ms))})"
               for side, ms in (("reference", reference), ("candidate", candidate))
               for name in metrics if name not in ms]
    if missing:
        return Verdict("invalid", reasons=missing, **base)
    try:
        p = _design(reference_keys, candidate_keys, alpha=alpha, n_perm=n_perm)
    except ValueError as e:
        return Verdict("invalid", reasons=(str(e),), **base)
    notes = list(p.notes)
    if p.underpowered:
        return Verdict("underpowered", reasons=(p.refusal(),), notes=notes, design=p.design, **base)
    units: list[_Units] = []
    problems: list[str] = []
    for name in metrics:
        try:
            units.append(_units(name, _subset(reference[name], p.reference_index),
                                _subset(candidate[name], p.candidate_index)))
        except ValueError as e:
            problems.append(str(e))
    if problems:
        return Verdict("invalid", reasons=problems, notes=notes, design=p.design, **base)
    notes += [u.note for u in units if u.note]
    n_rows = sum(len(u.layers) for u in units)
    design = f"{p.design}; p: one-sided, max-T adjusted over all {n_rows} rows"
    ref_u = np.concatenate([u.ref for u in units], axis=1)  # (Mr, R), higher is better
    cand_u = np.concatenate([u.cand for u in units], axis=1)  # (Mc, R)
    level = 1.0 - alpha if alpha < 0.5 else 0.95
    test = stats.joint_paired if p.paired else stats.joint_unpaired
    joint = test(ref_u, cand_u, alternative="less", n_perm=n_perm, generator=generator)
    delta_o, lo_o, hi_o = stats.difference_interval(ref_u, cand_u, paired=p.paired, ci=level)
    if p.paired:
        spread = np.std(cand_u - ref_u, axis=0, ddof=1)  # (R,)
    else:
        spread = np.sqrt((np.var(ref_u, axis=0, ddof=1) + np.var(cand_u, axis=0, ddof=1)) / 2)
    rows: list[Row] = []
    settle_notes: list[str] = []
    settle_n: list[int] = []
    j = 0
    for u in units:
        sign = 1.0 if u.higher_is_better else -1.0
        tol = tolerances[u.metric]
        for i, layer in enumerate(u.layers):
            worse = -float(delta_o[j])
            lo, hi = sorted((sign * float(lo_o[j]), sign * float(hi_o[j])))
            pj = float(joint.p_value[j])
            row = Row(metric=u.metric, layer=layer, reference=sign * float(u.ref[:, i].mean()),
                      candidate=sign * float(u.cand[:, i].mean()), delta=sign * float(delta_o[j]),
                      lo=lo, hi=hi, p=pj, tolerance=tol, alpha=alpha,
                      mde=_mde(float(np.std(u.ref[:, i], ddof=1)), p, n_rows=n_rows, tolerance=tol),
                      regressed=bool(worse > tol + RESOLUTION and pj < alpha),
                      higher_is_better=u.higher_is_better, ci=level)
            rows.append(row)
            if row.beyond_tolerance and not row.regressed:
                n = _settle(worse, float(spread[j]), p, n_rows=n_rows, tolerance=tol)
                where = "" if layer is None else f" layer {layer}"
                settle_notes.append(
                    f"{u.metric}{where}: worse by {worse:.4f} > tolerance {tol:g} but p = {pj:.3g}; "
                    + (f"with the observed spread about {n} seeds per family would detect it at "
                       "80 % power" if n is not None else f"more than {_MAX_SEEDS} seeds would be needed"))
                settle_n.append(n if n is not None else _MAX_SEEDS + 1)
            j += 1
    status: Status = ("regressed" if any(r.regressed for r in rows) else
                      "inconclusive" if settle_notes else "pass")
    seeds_to_settle = max(settle_n) if settle_n and max(settle_n) <= _MAX_SEEDS else None
    return Verdict(status, rows=rows, notes=tuple(notes) + tuple(settle_notes), design=design,
                   seeds_to_settle=seeds_to_settle, **base)
