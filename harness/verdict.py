"""Baseline comparison: is the candidate *worse* than the stored baseline? (DESIGN.md "Statistics")

A regression is declared for a (metric, layer) only when both hold:

1. the candidate is worse than the baseline, in the metric's direction, by more than the
   tolerance (absolute, in the metric's units): ``-delta > tolerance`` when higher is better,
   ``delta > tolerance`` when lower is better, with ``delta = obtained - baseline``;
2. a one-sided seed-label permutation test on the seed-level values (``unit_values()``) of
   the two families rejects "not worse" at ``alpha``; for a per-layer measurement the layers'
   p-values are Holm-adjusted together.

``baseline`` and ``obtained`` in a :class:`Row` are the means of the seed-level values (the
family mean over distinct seed pairs for a pairwise statistic), so ``delta`` is exactly what
was tested. The seeds of the two families are different, never paired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from harness.results import Measurement
from harness.stats import EXACT_LIMIT, holm, permutation_difference

__all__ = ["Row", "Verdict", "Status", "compare", "check_parameters", "min_attainable_p", "power_note",
           "format_report"]

Status = Literal["pass", "regressed", "stale", "missing", "updated"]
STATUSES: tuple[str, ...] = ("pass", "regressed", "stale", "missing", "updated")


@dataclass(frozen=True)
class Row:
    """One tested value: a scalar metric (``layer`` None) or one layer of a per-layer one.

    delta = obtained - baseline; lo, hi: its seed-bootstrap CI; p: one-sided p-value for
    "candidate worse", Holm-adjusted across the layers of the metric.
    """

    metric: str
    layer: int | None
    baseline: float
    obtained: float
    delta: float
    lo: float
    hi: float
    p: float
    tolerance: float
    alpha: float
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
class Verdict:
    """The outcome of one baseline check."""

    status: Status
    rows: tuple[Row, ...] = ()
    stale_reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    baseline_path: str | None = None
    written: tuple[str, ...] = ()  # files this check wrote (baseline or obtained)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "stale_reasons", tuple(self.stale_reasons))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "written", tuple(str(w) for w in self.written))

    @property
    def regressed_rows(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.regressed)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "rows": [r.to_dict() for r in self.rows],
                "stale_reasons": list(self.stale_reasons), "notes": list(self.notes),
                "baseline_path": self.baseline_path, "written": list(self.written)}


# ----------------------------------------------------------------------------- comparison


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


def compare(baseline: Measurement, candidate: Measurement, *, tolerance: float, alpha: float,
            generator: np.random.Generator, n_perm: int = 2000,
            label: str | None = None) -> list[Row]:
    """Test ``candidate`` against ``baseline``: one Row for a scalar measurement, one per layer
    for a per-layer ``[L]`` one. ``label`` names the metric in the rows (default: its name).

    Seed-level values are ``unit_values()`` of each ([Ma, ...] and [Mb, ...], different seeds);
    the test is the one-sided seed-label permutation test of ``stats.permutation_difference``
    (exact when the splits are few), Holm across layers.
    """
    check_parameters(tolerance, alpha, n_perm)
    label = label or candidate.name
    if baseline.name != candidate.name:
        raise ValueError(f"{label}: baseline measures {baseline.name!r} but the candidate "
                         f"{candidate.name!r}")
    if baseline.higher_is_better != candidate.higher_is_better:
        raise ValueError(f"{label}: higher_is_better is {baseline.higher_is_better} in the "
                         f"baseline but {candidate.higher_is_better} in the candidate; the "
                         "metric's definition changed, update the baseline")
    try:
        va, vb = baseline.unit_values(), candidate.unit_values()  # [Ma, ...], [Mb, ...]
    except ValueError as e:
        raise ValueError(f"{label}: {e}; only measurements with per_seed or pairwise values "
                         "can be tested against a baseline") from None
    if va.shape[1:] != vb.shape[1:]:
        raise ValueError(f"{label}: baseline has shape {va.shape[1:]} per seed but the "
                         f"candidate {vb.shape[1:]} (a different number of layers?); the "
                         "baseline is for another model, update it")
    if va.ndim > 2:
        raise ValueError(f"{label}: per-seed shape {va.shape[1:]}; compare() tests scalars "
                         "and per-layer [L] values, reduce per-head values to layers first")
    alternative = "less" if candidate.higher_is_better else "greater"
    try:
        cmp = permutation_difference(va, vb, generator=generator, alternative=alternative,
                                     n_perm=n_perm, n_boot=n_perm)
    except ValueError as e:
        raise ValueError(f"{label}: {e}") from None
    base = np.atleast_1d(va.mean(axis=0))
    obt = np.atleast_1d(vb.mean(axis=0))
    delta = np.atleast_1d(np.asarray(cmp.delta, dtype=float))
    lo = np.atleast_1d(np.asarray(cmp.lo, dtype=float))
    hi = np.atleast_1d(np.asarray(cmp.hi, dtype=float))
    p = np.atleast_1d(np.asarray(cmp.p_value, dtype=float))
    if va.ndim == 2:
        p = holm(p)
    rows = []
    for i in range(delta.size):
        worse = -delta[i] if candidate.higher_is_better else delta[i]
        rows.append(Row(
            metric=label, layer=i if va.ndim == 2 else None, baseline=float(base[i]),
            obtained=float(obt[i]), delta=float(delta[i]), lo=float(lo[i]), hi=float(hi[i]),
            p=float(p[i]), tolerance=float(tolerance), alpha=float(alpha),
            regressed=bool(worse > tolerance and p[i] < alpha),
            higher_is_better=candidate.higher_is_better))
    return rows


def min_attainable_p(n_baseline: int, n_candidate: int, *, n_layers: int = 1,
                     n_perm: int = 2000) -> float:
    """The smallest Holm-adjusted p-value ``compare`` can return for these family sizes: the
    one-sided permutation test puts at least one split in the tail (1 / C(Ma+Mb, Mb) when
    exact, 1 / (n_perm + 1) otherwise), and Holm multiplies the smallest p by the layers."""
    n_splits = math.comb(n_baseline + n_candidate, n_candidate)
    p = 1.0 / n_splits if n_splits <= EXACT_LIMIT else 1.0 / (n_perm + 1)
    return min(1.0, p * max(1, n_layers))


def power_note(n_baseline: int, n_candidate: int, *, n_layers: int, alpha: float,
               n_perm: int = 2000) -> str | None:
    """A warning when the test *cannot* reject at ``alpha`` with these many seeds (so the check
    could never fail), else None."""
    p_min = min_attainable_p(n_baseline, n_candidate, n_layers=n_layers, n_perm=n_perm)
    if p_min < alpha:
        return None
    where = f" across {n_layers} layers (Holm)" if n_layers > 1 else ""
    return (f"cannot detect a regression: with {n_baseline} baseline and {n_candidate} candidate "
            f"seeds the smallest attainable p-value{where} is {p_min:.3g} >= alpha {alpha:g}; "
            "use more seeds or a larger alpha")


# ----------------------------------------------------------------------------- report


def _fmt(x: float, signed: bool = False) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _fmt_p(p: float) -> str:
    return f"{p:.3g}" if p < 0.001 else f"{p:.3f}"


def _seeds(seeds: Mapping[str, Sequence[int]] | Sequence[int] | None) -> str:
    if seeds is None:
        return "-"
    if isinstance(seeds, Mapping):
        return "; ".join(f"{fam}: {list(s)}" for fam, s in seeds.items()) or "-"
    return str(list(seeds))


def _table(rows: Sequence[Row]) -> list[str]:
    ci = "CI(Δ)"
    head = ["metric", "layer", "baseline", "obtained", "Δ", ci, "p", "tolerance", "flag"]
    body = [[r.metric, "-" if r.layer is None else str(r.layer), _fmt(r.baseline),
             _fmt(r.obtained), _fmt(r.delta, True),
             f"[{_fmt(r.lo, True)}, {_fmt(r.hi, True)}]", _fmt_p(r.p), _fmt(r.tolerance),
             r.flag] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    left = {0, 8}  # text columns left-aligned, numbers right-aligned

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(head), "  ".join("-" * w for w in widths)] + [line(b) for b in body]


def format_report(verdict: Verdict, *, seeds_baseline: Mapping[str, Sequence[int]] | Sequence[int] | None,
                  seeds_candidate: Mapping[str, Sequence[int]] | Sequence[int] | None,
                  update_command: str, mlflow_run: str | None = None) -> str:
    """A report a person can read: the status line, why (stale reasons), the fixed-width table
    (metric, layer, baseline, obtained, Δ, CI of Δ, Holm p, tolerance, flag), the seeds behind
    both sides, notes, the MLflow run, and the command that updates the baseline."""
    rows = verdict.rows
    lines: list[str] = []
    if verdict.status == "regressed":
        n = len(verdict.regressed_rows)
        lines.append(f"seedstab: REGRESSED: {n} of {len(rows)} value(s) worse than the baseline "
                     "by more than the tolerance, with the one-sided seed-permutation test "
                     f"rejecting at alpha {rows[0].alpha:g} (Holm across layers)")
    elif verdict.status == "stale":
        lines.append("seedstab: STALE baseline (not a regression): it no longer describes this run")
        lines += [f"  - {r}" for r in verdict.stale_reasons]
    elif verdict.status == "missing":
        lines.append("seedstab: MISSING baseline: there is nothing to compare against yet")
    elif verdict.status == "updated":
        lines.append("seedstab: baseline UPDATED (--update-baselines); nothing was compared")
    else:
        lines.append(f"seedstab: pass: no value worse than the baseline by more than the "
                     f"tolerance with a significant test ({len(rows)} value(s) checked)")
    if verdict.baseline_path:
        lines.append(f"baseline: {verdict.baseline_path}")
    if rows:
        ci = "Δ = obtained - baseline; CI(Δ): seed-bootstrap; p: one-sided, Holm across layers"
        lines += ["", *_table(rows), ci]
    lines += ["", f"seeds (baseline):  {_seeds(seeds_baseline)}",
              f"seeds (candidate): {_seeds(seeds_candidate)}"]
    if verdict.notes:
        lines += ["notes:"] + [f"  - {n}" for n in verdict.notes]
    if verdict.written:
        lines += ["written:"] + [f"  {w}" for w in verdict.written]
    if mlflow_run:
        lines.append(f"MLflow run: {mlflow_run}")
    if verdict.status != "updated":
        lines.append(f"to accept this result as the new baseline: {update_command}")
    return "\n".join(lines)
