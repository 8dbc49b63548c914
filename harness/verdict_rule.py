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

:func:`plan` says what a check can detect before anything trains (an underpowered check is
refused then); :func:`decide` gives the :class:`~harness.verdict_types.Verdict`. What the
statuses mean: :mod:`harness.verdict_types`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from harness import stats
from harness.results import Measurement
from harness.verdict_power import _MAX_SEEDS, _mde, _settle, check_parameters, min_attainable_p
from harness.verdict_types import (INCONCLUSIVE_DEFAULT, RESOLUTION, InconclusivePolicy, Plan, Row,
                                   Status, Verdict)
from harness.verdict_units import _subset, _units, _Units, resolve_tolerance

__all__ = ["plan", "decide"]


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
