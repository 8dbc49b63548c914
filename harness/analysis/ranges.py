"""The range of every measurement, and clipping its interval to that range.

A t interval around a mean of bounded values can reach past the bound (a stability CI of
[0.93, 1.018] for a cosine similarity in [0, 1]); the estimate is right, the interval's end
is not a possible value. Every measurement name the analysis produces is declared here,
bounded or explicitly unbounded, so a new metric cannot forget its range: looking up an
undeclared name raises.

Ranges follow from the definitions (harness.metrics):

* cosine similarities of non-negative attention patterns (head stability, its null and
  step-0 value, cross-layer matching, similarity to uniform attention, induction-head
  similarity) and distinctness (1 − a mean such similarity): [0, 1];
* attention mass on a target token (induction, previous-token scores): [0, 1];
* CKA with the linear and RBF kernels (biased HSIC of PSD kernels): [0, 1]; debiased CKA
  (the unbiased HSIC is an inner product of U-centred Gram matrices, so Cauchy–Schwarz
  holds): [-1, 1];
* differences: content-specific stability (raw − null, both in [0, 1]) [-1, 1]; the
  paper-way gap (RBF CKA − stability) [-1, 1]; the CKA gap (debiased − debiased) [-2, 2];
* (raw − null) / (1 − null): at most 1, unbounded below as the null approaches 1;
* spreads (max − min over layers) within [0, width of the per-layer range]; relative
  depths and fractions [0, 1]; correlations [-1, 1];
* entropies and norms: ≥ 0; ΔPPL and slopes over depth or length: unbounded (a
  least-squares slope over L points has an L-dependent bound, not a fixed one).
"""

from __future__ import annotations

import fnmatch
from typing import Optional, Tuple

import numpy as np

Bounds = Tuple[Optional[float], Optional[float]]  # (low, high); None: open on that side

UNBOUNDED: Bounds = (None, None)
_UNIT: Bounds = (0.0, 1.0)
_SIGNED: Bounds = (-1.0, 1.0)

# Exact names first, then shell patterns (fnmatch), first match wins.
_RANGES: tuple[tuple[str, Bounds], ...] = (
    ("head_stability.spread", _UNIT),
    ("head_stability.min_rel_depth", _UNIT),
    ("content_specific.spread", (0.0, 2.0)),
    ("content_specific.min_rel_depth", _UNIT),
    ("content_specific_normalized.all_anchors", (None, 1.0)),
    ("content_specific.all_anchors", _SIGNED),
    ("head_stability.*", _UNIT),  # all_anchors, anchor, hungarian, per_head
    ("head_stability_null.all_anchors", _UNIT),
    ("head_stability_step0.all_anchors", _UNIT),
    ("cross_layer.all_anchors", _UNIT),
    ("cross_layer.same_layer_fraction", _UNIT),
    ("resid_cka.debiased.*", _SIGNED),
    ("resid_cka.linear.*", _UNIT),
    ("resid_cka.rbf.*", _UNIT),
    ("head_cka.debiased", _SIGNED),
    ("head_cka.linear", _UNIT),
    ("matched_head_cka.linear", _UNIT),
    ("gap.*.trend", UNBOUNDED),
    ("gap.cka", (-2.0, 2.0)),
    ("gap.paper", _SIGNED),
    ("distinctness", _UNIT),
    ("uniform_similarity", _UNIT),
    ("attention_entropy", (0.0, None)),
    ("induction.similarity", _UNIT),
    ("induction.*score", _UNIT),
    ("prev_token.*score", _UNIT),
    ("importance.delta_ppl", UNBOUNDED),
    ("importance.*.trend", UNBOUNDED),
    ("importance.pearson*", _SIGNED),
    ("importance.spearman*", _SIGNED),
    ("qnorm.frobenius", (0.0, None)),
    ("qnorm.pearson*", _SIGNED),
    ("prompt_length.all_anchors", _UNIT),
    ("prompt_length.content_specific", _SIGNED),
    ("prompt_length.*trend", UNBOUNDED),
)


def metric_range(name: str) -> Bounds:
    """The declared (low, high) of measurement ``name`` (None: open side; (None, None):
    declared unbounded). Raises KeyError naming the measurement when it is not declared."""
    for pattern, bounds in _RANGES:
        if name == pattern or fnmatch.fnmatchcase(name, pattern):
            return bounds
    raise KeyError(f"measurement {name!r} has no declared range; declare it (bounded or UNBOUNDED) in "
                   "harness/analysis/ranges.py")


def clip_interval(lo: np.ndarray, hi: np.ndarray, bounds: Bounds) -> tuple[np.ndarray, np.ndarray, str]:
    """(lo, hi) clipped to ``bounds``, and a note saying what was clipped ("" when nothing
    was): which end, how many elements, and the furthest unclipped value. NaN stays NaN."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    low, high = bounds
    notes = []
    with np.errstate(invalid="ignore"):
        for side, arr, bound, past in (("lo", lo, low, np.less), ("hi", hi, high, np.greater)):
            if bound is None:
                continue
            out = past(arr, bound)
            if not out.any():
                continue
            extreme = float(arr[out].min() if side == "lo" else arr[out].max())
            where = "" if arr.ndim == 0 else f" at {int(out.sum())} of {arr.size} elements"
            notes.append(f"{side} {extreme:.4g} clipped to {bound:g}{where}")
    if not notes:
        return lo, hi, ""
    lo = lo if low is None else np.where(lo < low, low, lo)
    hi = hi if high is None else np.where(hi > high, high, hi)
    return lo, hi, f"CI clipped to the range {format_bounds(bounds)}: " + "; ".join(notes)


def format_bounds(bounds: Bounds) -> str:
    """'[0, 1]', '[0, inf)', '(-inf, 1]', '(-inf, inf)'."""
    low, high = bounds
    return (f"{'(-inf' if low is None else f'[{low:g}'}, "
            f"{'inf)' if high is None else f'{high:g}]'}")
