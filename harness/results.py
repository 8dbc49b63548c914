"""The value that flows from analysis to verdicts, baselines, MLflow and reports.

A :class:`Measurement` is one named family statistic with its uncertainty and the
seed-level values behind it, so a later run can be *tested* against it, not only compared.
An :class:`Analysis` is every measurement of one family plus what identifies the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Measurement:
    """One family statistic.

    ``value``, ``lo``, ``hi``: the family value and its seed-bootstrap CI, each a scalar
    (shape ``()``) or per layer (``[L]``) or per layer and head (``[L, H]``).
    ``pairwise``: ``[M, M, *value.shape]`` seed-pair values (diagonal NaN) when the statistic
    is a mean over distinct seed pairs; ``per_seed``: ``[M, *value.shape]`` when it is a
    mean over seeds. Exactly one of them is set for statistics that can be tested.
    ``baselinable``: False for a statistic whose seed-level values are not independent seed
    units (e.g. ``head_stability.anchor``: its CI is conditional on the anchor seed and
    ``per_seed`` holds the M - 1 other seeds); :meth:`unit_values` refuses it, with
    ``baseline_note`` saying what to use instead. Undefined elements (a degenerate family)
    are NaN in value/lo/hi; ``Analysis.info["degenerate"]`` names them.
    ``bounds``: the statistic's range (low, high), None on an open side (see
    harness.analysis.ranges); ``lo`` and ``hi`` lie within it. ``ci_note`` says when the
    interval reached past the range and was clipped to it, and how far it reached.
    """

    name: str  # dotted, e.g. "head_stability.all_anchors", "resid_cka.debiased.post"
    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    higher_is_better: bool
    description: str = ""
    pairwise: np.ndarray | None = None
    per_seed: np.ndarray | None = None
    n_seeds: int = 0
    ci: float = 0.95
    baselinable: bool = True
    baseline_note: str = ""
    bounds: tuple[float | None, float | None] = (None, None)
    ci_note: str = ""

    @property
    def per_layer(self) -> bool:
        return np.ndim(self.value) == 1

    def unit_values(self) -> np.ndarray:
        """Seed-level values ``[M, *shape]``, the units that seed-level tests permute and flip:
        per-seed values as they are, or for a pairwise statistic the jackknife pseudo-values
        of the family mean (they average to it exactly and are close to independent across
        seeds; row means are not, and tests on them reject a true null ~1/3 of the time).
        Raises ValueError for a measurement that is not ``baselinable``, naming why."""
        if not self.baselinable:
            raise ValueError(self.baseline_note or f"{self.name} has no independent seed-level values; it "
                             "cannot be baselined or tested seed by seed")
        if self.per_seed is not None:
            return np.asarray(self.per_seed, dtype=float)
        if self.pairwise is not None:
            from harness.stats import seed_pseudovalues

            return seed_pseudovalues(self.pairwise)
        raise ValueError(f"measurement {self.name!r} keeps no seed-level values")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name, "value": _list(self.value), "lo": _list(self.lo), "hi": _list(self.hi),
            "higher_is_better": self.higher_is_better, "description": self.description,
            "n_seeds": self.n_seeds, "ci": self.ci,
        }
        if self.pairwise is not None:
            d["pairwise"] = _list(self.pairwise)
        if self.per_seed is not None:
            d["per_seed"] = _list(self.per_seed)
        if not self.baselinable:  # written only when set, so existing baseline files stay as they are
            d["baselinable"] = False
            d["baseline_note"] = self.baseline_note
        if self.bounds != (None, None):
            d["bounds"] = [None if b is None else float(b) for b in self.bounds]
        if self.ci_note:
            d["ci_note"] = self.ci_note
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        arr = lambda k: None if d.get(k) is None else np.asarray(d[k], dtype=float)  # noqa: E731
        return cls(name=d["name"], value=arr("value"), lo=arr("lo"), hi=arr("hi"),
                   higher_is_better=bool(d["higher_is_better"]), description=d.get("description", ""),
                   pairwise=arr("pairwise"), per_seed=arr("per_seed"), n_seeds=int(d.get("n_seeds", 0)),
                   ci=float(d.get("ci", 0.95)), baselinable=bool(d.get("baselinable", True)),
                   baseline_note=str(d.get("baseline_note", "")),
                   bounds=tuple(None if b is None else float(b) for b in d.get("bounds") or (None, None)),
                   ci_note=str(d.get("ci_note", "")))


@dataclass(frozen=True)
class Analysis:
    """Every measurement of one family, and what identifies it."""

    family: str
    fingerprint: str
    seeds: tuple[int, ...]
    device_class: str
    probe_digest: str
    measurements: Mapping[str, Measurement]
    info: Mapping[str, Any] = field(default_factory=dict)  # n_layers, n_heads, losses, timings…

    def __getitem__(self, name: str) -> Measurement:
        try:
            return self.measurements[name]
        except KeyError:
            why = (self.info.get("absent") or {}).get(name)
            if why:
                raise KeyError(f"no measurement {name!r} in the analysis of {self.family}: it {why}") from None
            raise KeyError(f"no measurement {name!r}; this analysis has: "
                           f"{', '.join(sorted(self.measurements))}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "fingerprint": self.fingerprint, "seeds": list(self.seeds),
                "device_class": self.device_class, "probe_digest": self.probe_digest,
                "info": dict(self.info),
                "measurements": {k: m.to_dict() for k, m in sorted(self.measurements.items())}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Analysis":
        """The Analysis that :meth:`to_dict` wrote (``info`` as the JSON holds it)."""
        return cls(family=str(d["family"]), fingerprint=str(d["fingerprint"]),
                   seeds=tuple(int(s) for s in d["seeds"]), device_class=str(d["device_class"]),
                   probe_digest=str(d["probe_digest"]), info=dict(d.get("info") or {}),
                   measurements={k: Measurement.from_dict(m) for k, m in d["measurements"].items()})


def _list(a: Any) -> Any:
    """numpy -> nested lists with NaN as None and ±inf as "inf" / "-inf" (JSON has neither),
    which ``np.asarray(..., dtype=float)`` reads back exactly."""
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 0:
        v = float(arr)
        if np.isnan(v):
            return None
        return v if np.isfinite(v) else ("inf" if v > 0 else "-inf")
    return [_list(x) for x in arr]
