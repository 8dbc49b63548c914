"""A metric's seed-level units on both sides of a check, ready for the test.

Both sides are cut to the seeds the test uses (in pairing order); a per-layer metric whose
layer counts differ is compared on its mean over layers; undefined (NaN) seed values, a
changed direction or an untestable shape raise ValueError naming the metric; the units are
oriented so that higher is better. :func:`resolve_tolerance` picks a metric's tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from harness.results import Measurement
from harness.verdict_power import check_parameters

__all__ = ["resolve_tolerance"]


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
