"""Absolute stability expectations, as assertions that fail with a table a person can read.

Suites state the paper's findings with these ("the least stable layer is mid-depth and above
a floor", "the residual stream is more stable than the heads"). Each check returns a short
text on success (for the report) and raises :class:`ExpectationFailed` with a table of the
numbers, their CIs and the seeds behind them otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from harness.results import Analysis, Measurement
from harness.stats import Comparison


class ExpectationFailed(AssertionError):
    """A stated expectation did not hold; the message holds the table."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    text: str


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:+.3f}" if x < 0 else f"{x:.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else _fmt(float(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def per_layer_table(*measurements: Measurement) -> str:
    L = len(np.atleast_1d(measurements[0].value))
    headers = ["layer"] + [f"{m.name} [CI]" for m in measurements]
    rows = []
    for l in range(L):
        row: list[object] = [str(l)]
        for m in measurements:
            v, lo, hi = (np.atleast_1d(x)[l] for x in (m.value, m.lo, m.hi))
            row.append(f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]")
        rows.append(row)
    return table(headers, rows)


def _raise(title: str, body: str, analysis: Analysis | None, hint: str = "") -> None:
    __tracebackhide__ = True
    seeds = f"\nseeds: {list(analysis.seeds)}  family: {analysis.family}  fingerprint: {analysis.fingerprint}" \
        if analysis is not None else ""
    raise ExpectationFailed(f"{title}\n\n{body}{seeds}" + (f"\n{hint}" if hint else ""))


def mid_depth_minimum(analysis: Analysis, metric: str, *, floor: float, edge_margin: int = 1) -> Check:
    """The least stable layer is not among the first/last ``edge_margin`` layers, and every
    layer's value stays above ``floor``."""
    __tracebackhide__ = True
    m = analysis[metric]
    v = np.atleast_1d(m.value)
    L = len(v)
    if L < 2 * edge_margin + 1:
        raise ValueError(f"{metric}: a mid-depth minimum needs at least {2 * edge_margin + 1} layers, got {L}")
    argmin = int(np.argmin(v))
    mid = edge_margin <= argmin < L - edge_margin
    above = bool(np.min(v) > floor)
    text = f"{metric}: minimum at layer {argmin} of {L} ({_fmt(v[argmin])}), floor {floor}"
    if not (mid and above):
        why = [] if mid else [f"the minimum is at layer {argmin}, not mid-depth (layers {edge_margin}..{L - 1 - edge_margin})"]
        why += [] if above else [f"the minimum {_fmt(v.min())} is not above the floor {floor}"]
        _raise(f"expected a mid-depth minimum of {metric} above {floor}: " + "; ".join(why),
               per_layer_table(m), analysis)
    return Check("mid_depth_minimum", True, text)


def above(analysis: Analysis, metric: str, *, bound: float, layers: Sequence[int] | None = None,
          use_ci: bool = True, what: str = "") -> Check:
    """The metric (its CI's lower end when ``use_ci``) exceeds ``bound`` in the given layers."""
    __tracebackhide__ = True
    m = analysis[metric]
    v, lo = np.atleast_1d(m.value), np.atleast_1d(m.lo)
    idx = list(range(len(v))) if layers is None else list(layers)
    test = lo if use_ci else v
    bad = [l for l in idx if not test[l] > bound]
    if bad:
        side = "the CI's lower end" if use_ci else "the value"
        _raise(f"expected {what or metric} > {bound} ({side}) in layers {idx}; not so in layers {bad}",
               per_layer_table(m), analysis)
    return Check("above", True, f"{metric} > {bound} in layers {idx}")


def greater(analysis: Analysis, higher: str, lower: str, *, layers: Sequence[int] | None = None,
            margin: float = 0.0) -> Check:
    """``higher`` exceeds ``lower`` by more than ``margin`` in the given layers (family means)."""
    __tracebackhide__ = True
    a, b = analysis[higher], analysis[lower]
    va, vb = np.atleast_1d(a.value), np.atleast_1d(b.value)
    idx = list(range(len(va))) if layers is None else list(layers)
    bad = [l for l in idx if not va[l] - vb[l] > margin]
    if bad:
        _raise(f"expected {higher} > {lower} + {margin} in layers {idx}; not so in layers {bad}",
               per_layer_table(a, b), analysis)
    return Check("greater", True, f"{higher} > {lower} + {margin} in layers {idx}")


def improvement(comparison: Comparison, *, metric: str, delta: float, alpha: float,
                baseline: str, candidate: str) -> Check:
    """candidate − baseline > ``delta`` and the seed-level test rejects at α, for a scalar
    comparison (e.g. of the mean over layers, as suites/paper does). Per-layer comparisons
    are refused: one Δ and one p for many layers would need a rule for combining them."""
    __tracebackhide__ = True
    if np.ndim(comparison.delta) or np.ndim(comparison.p_value):
        raise ValueError(f"improvement({metric}): expected a scalar comparison, got delta of shape "
                         f"{np.shape(comparison.delta)}; compare the mean over layers (or one layer)")
    d, p = float(comparison.delta), float(comparison.p_value)
    body = table(["metric", "Δ", "CI lo", "CI hi", "p", "method"],
                 [[metric, d, float(comparison.lo), float(comparison.hi), p, comparison.method]])
    if not (d > delta and p < alpha):
        _raise(f"expected {candidate} to beat {baseline} on {metric} by > {delta} with p < {alpha}", body, None)
    return Check("improvement", True, f"{candidate} − {baseline} on {metric}: {d:+.3f} (p={p:.3g})")


def increasing(values: Sequence[float], labels: Sequence[str], *, what: str) -> Check:
    """values rise strictly in the given order (e.g. depth spread over 2/4/8 layers)."""
    __tracebackhide__ = True
    v = np.asarray(values, dtype=float)
    if not np.all(np.diff(v) > 0):
        _raise(f"expected {what} to grow in the order {list(labels)}",
               table(["family", "value"], [[lab, x] for lab, x in zip(labels, v)]), None)
    return Check("increasing", True, f"{what}: " + " < ".join(f"{_fmt(x)}" for x in v))
