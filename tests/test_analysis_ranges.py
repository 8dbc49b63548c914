"""Bounded measurements keep their intervals in range, and say when they were clipped."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import AnalysisOptions, metric_range
from harness.analysis.aggregate import Aggregator
from harness.analysis.ranges import clip_interval, format_bounds
from harness.results import Measurement
from harness.stats import seed_jackknife_t


def _near_one(M: int = 4, L: int = 2) -> np.ndarray:
    """Pairwise stabilities in [0, 1], close to 1 with one weaker seed: the t interval of
    their mean reaches past 1."""
    rng = np.random.default_rng(0)
    u = np.array([0.0, 0.0, 0.0, -0.06])[:M]
    pw = 0.995 + u[:, None, None] + u[None, :, None] + rng.normal(0.0, 0.002, size=(M, M, L))
    pw = np.clip((pw + pw.transpose(1, 0, 2)) / 2, 0.0, 1.0)
    pw[np.arange(M), np.arange(M)] = np.nan
    return pw


def test_a_stability_ci_past_one_is_clipped_to_one_and_says_so():
    pw = _near_one()
    raw = seed_jackknife_t(pw)
    assert np.all(np.asarray(raw.hi) > 1.0), raw.hi  # the unclipped interval leaves the range
    agg = Aggregator(AnalysisOptions(), seeds=(0, 1, 2, 3))
    agg.pairwise("head_stability.all_anchors", pw, higher=True, desc="")
    m = agg.out["head_stability.all_anchors"]
    assert m.bounds == (0.0, 1.0)
    np.testing.assert_array_equal(m.hi, [1.0, 1.0])
    np.testing.assert_allclose(m.lo, raw.lo)  # the end inside the range is untouched
    np.testing.assert_allclose(m.value, raw.value)  # values are never clipped
    assert m.ci_note.startswith("CI clipped to the range [0, 1]: hi ")
    assert "at 2 of 2 elements" in m.ci_note and f"{float(np.max(raw.hi)):.4g}" in m.ci_note
    back = Measurement.from_dict(m.to_dict())
    assert back.bounds == m.bounds and back.ci_note == m.ci_note


def test_an_interval_inside_its_range_carries_no_note():
    pw = _near_one() - 0.3
    agg = Aggregator(AnalysisOptions(), seeds=(0, 1, 2, 3))
    agg.pairwise("head_stability.all_anchors", pw, higher=True, desc="")
    m = agg.out["head_stability.all_anchors"]
    assert m.ci_note == "" and np.all(m.hi < 1.0)
    assert "ci_note" not in m.to_dict()


def test_per_seed_and_derived_intervals_are_clipped_too():
    agg = Aggregator(AnalysisOptions(), seeds=(0, 1, 2, 3))
    r = np.array([[0.99], [0.97], [0.2], [0.99]])  # correlations; the t interval passes 1
    agg.per_seed("importance.pearson", r, higher=False, desc="")
    assert float(agg.out["importance.pearson"].hi[0]) == 1.0 and agg.out["importance.pearson"].ci_note
    ent = np.array([[0.01], [0.0], [0.0], [0.3]])  # entropies >= 0; the interval reaches below 0
    agg.per_seed("attention_entropy", ent, higher=False, desc="")
    m = agg.out["attention_entropy"]
    assert float(m.lo[0]) == 0.0 and "lo " in m.ci_note and "[0, inf)" in m.ci_note
    agg.derived("head_stability.spread", _near_one(), lambda v: float(np.max(v) - np.min(v)), higher=False,
                desc="")
    s = agg.out["head_stability.spread"]
    assert 0.0 <= float(s.lo) <= float(s.value) <= float(s.hi) <= 1.0


def test_clip_interval_keeps_nan_and_open_sides():
    lo, hi, note = clip_interval(np.array([np.nan, -0.5]), np.array([np.nan, 3.0]), (None, 1.0))
    assert np.isnan(lo[0]) and np.isnan(hi[0]) and lo[1] == -0.5 and hi[1] == 1.0
    assert note == "CI clipped to the range (-inf, 1]: hi 3 clipped to 1 at 1 of 2 elements"
    assert clip_interval(np.asarray(0.2), np.asarray(0.4), (None, None))[2] == ""
    assert format_bounds((0.0, None)) == "[0, inf)" and format_bounds((-2.0, 2.0)) == "[-2, 2]"


def test_an_undeclared_measurement_is_refused_by_name():
    with pytest.raises(KeyError, match="'head_stability_v2.all' has no declared range.*ranges.py"):
        metric_range("head_stability_v2.all")
    agg = Aggregator(AnalysisOptions(), seeds=(0, 1, 2))
    with pytest.raises(KeyError, match="new.metric"):
        agg.per_seed("new.metric", np.zeros((3, 2)), higher=True, desc="")


@pytest.mark.parametrize("name, bounds", [
    ("head_stability.anchor", (0.0, 1.0)), ("content_specific.all_anchors", (-1.0, 1.0)),
    ("content_specific.spread", (0.0, 2.0)), ("content_specific_normalized.all_anchors", (None, 1.0)),
    ("resid_cka.debiased.pre", (-1.0, 1.0)), ("resid_cka.rbf.post", (0.0, 1.0)), ("gap.cka", (-2.0, 2.0)),
    ("gap.paper", (-1.0, 1.0)), ("gap.paper.trend", (None, None)), ("importance.spearman_cs.trend", (None, None)),
    ("importance.spearman_cs", (-1.0, 1.0)), ("induction.max_score", (0.0, 1.0)),
])
def test_ranges_follow_the_definitions(name, bounds):
    assert metric_range(name) == bounds
