"""A check's verdict as text a person can read: the status line, why, the table (metric,
layer, reference, candidate, Δ, CI, p, MDE, tolerance, flag), the test used, the seeds on
both sides, notes, the files written, the MLflow run and the way out."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from harness.verdict import Row, Verdict

__all__ = ["format_report", "format_table"]


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
    """The fixed-width table, one line per row."""
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
    "updated": "baseline UPDATED (--seedstab-update-baselines)",
}


def _head(verdict: Verdict) -> str:
    rows = verdict.rows
    if verdict.status == "regressed":
        return (f"REGRESSED: {len(verdict.regressed_rows)} of {len(rows)} value(s) worse than the "
                f"reference by more than the tolerance, with the one-sided seed-level test rejecting "
                f"at alpha {rows[0].alpha:g} for the whole check")
    if verdict.status == "inconclusive":
        n = sum(r.beyond_tolerance for r in rows)
        return (f"INCONCLUSIVE: {n} of {len(rows)} value(s) worse than the reference by more than the "
                f"tolerance, but the seeds do not show it at alpha {rows[0].alpha:g}"
                + (f"; about {verdict.seeds_to_settle} seeds per family would settle it"
                   if verdict.seeds_to_settle else "")
                + ("" if verdict.failed else " (reported, not failed: inconclusive = pass)"))
    return _TITLES[verdict.status]


def format_report(verdict: Verdict, *, title: str = "", seeds_reference: Any = None,
                  seeds_candidate: Any = None, update_command: str | None = None,
                  mlflow_run: str | None = None) -> str:
    """The report of ``verdict``. ``update_command`` is shown as the way out for a stale,
    missing or invalid baseline, and for a regression that the caller says can be accepted
    by rewriting the baseline (pass None to leave it out)."""
    rows = verdict.rows
    lines = [f"seedstab: {_head(verdict)}" + (f"  [{title}]" if title else "")]
    lines += [f"  - {r}" for r in verdict.reasons]
    if verdict.baseline_path:
        lines.append(f"reference baseline: {verdict.baseline_path}")
    if rows:
        level = f"{rows[0].ci:.0%}".replace("%", " %")
        lines += ["", *format_table(rows),
                  f"Δ = candidate - reference; CI(Δ): per-row {level} t interval over seeds (not "
                  f"adjusted); {verdict.design or 'p: one-sided, max-T adjusted over all rows'}; "
                  "MDE: minimal detectable effect at 80 % power, from the reference's spread"]
    if seeds_reference is not None or seeds_candidate is not None:
        lines += ["", f"seeds (reference): {_seeds(seeds_reference)}",
                  f"seeds (candidate): {_seeds(seeds_candidate)}"]
    if verdict.notes:
        lines += ["notes:"] + [f"  - {n}" for n in verdict.notes]
    if verdict.written:
        lines += ["written:"] + [f"  {w}" for w in verdict.written]
    if mlflow_run:
        lines.append(f"MLflow run: {mlflow_run}")
    if update_command and verdict.status in ("stale", "missing", "invalid"):
        lines.append(f"to retrain the reference and rewrite its baseline: {update_command}")
    elif update_command and verdict.status in ("regressed", "inconclusive"):
        lines.append(f"if the change is intended, to make it the new reference: {update_command}")
    return "\n".join(lines)
