"""Absolute expectations: each check passes on data that meets it and fails with a table
naming the metric, the layers and the seeds on data that does not."""

from __future__ import annotations

import numpy as np
import pytest

from harness import expect
from harness.results import Analysis, Measurement
from harness.stats import paired_difference


def m(name: str, values, lo=None, hi=None) -> Measurement:
    v = np.asarray(values, dtype=float)
    return Measurement(name=name, value=v, lo=v - 0.01 if lo is None else np.asarray(lo, float),
                       hi=v + 0.01 if hi is None else np.asarray(hi, float), higher_is_better=True)


def analysis(**measurements) -> Analysis:
    ms = {k.replace("__", "."): m(k.replace("__", "."), v) for k, v in measurements.items()}
    return Analysis(family="fam", fingerprint="fp", seeds=(0, 1, 2), device_class="cpu", probe_digest="d",
                    measurements=ms)


def test_mid_depth_minimum():
    a = analysis(s=[0.9, 0.7, 0.6, 0.8, 0.85])
    assert expect.mid_depth_minimum(a, "s", floor=0.5).passed
    with pytest.raises(expect.ExpectationFailed, match=r"minimum is at layer 0, not mid-depth") as e:
        expect.mid_depth_minimum(analysis(s=[0.5, 0.7, 0.6, 0.8, 0.85]), "s", floor=0.4)
    assert "seeds: [0, 1, 2]" in str(e.value) and "layer" in str(e.value)
    with pytest.raises(expect.ExpectationFailed, match=r"not above the floor 0.65"):
        expect.mid_depth_minimum(a, "s", floor=0.65)
    with pytest.raises(ValueError, match="at least 3 layers"):
        expect.mid_depth_minimum(analysis(s=[0.9, 0.8]), "s", floor=0.0)


def test_above_uses_the_ci_lower_end():
    a = Analysis(family="f", fingerprint="fp", seeds=(0, 1), device_class="cpu", probe_digest="d",
                 measurements={"g": m("g", [0.2, 0.05], lo=[0.1, -0.01], hi=[0.3, 0.1])})
    assert expect.above(a, "g", bound=0.0, layers=[0]).passed
    with pytest.raises(expect.ExpectationFailed, match=r"not so in layers \[1\]"):
        expect.above(a, "g", bound=0.0)
    assert expect.above(a, "g", bound=0.0, use_ci=False).passed


def test_greater_with_margin():
    a = analysis(a=[0.9, 0.8], b=[0.5, 0.75])
    assert expect.greater(a, "a", "b", layers=[0], margin=0.3).passed
    with pytest.raises(expect.ExpectationFailed, match=r"a > b \+ 0.1 .* not so in layers \[1\]"):
        expect.greater(a, "a", "b", margin=0.1)


def test_increasing():
    assert expect.increasing([0.1, 0.2, 0.35], ["2", "4", "8"], what="spread").passed
    with pytest.raises(expect.ExpectationFailed, match="expected spread to grow"):
        expect.increasing([0.1, 0.3, 0.2], ["2", "4", "8"], what="spread")


def test_improvement_needs_effect_and_significance():
    rng = np.random.default_rng(0)
    M = 6
    base = rng.normal(0.5, 0.01, size=(M, M))
    np.fill_diagonal(base, np.nan)
    better = base + 0.05
    c = paired_difference(base, better, generator=rng, alternative="greater")
    assert expect.improvement(c, metric="s", delta=0.01, alpha=0.05, baseline="adam", candidate="adamw").passed
    with pytest.raises(expect.ExpectationFailed, match="expected adamw to beat adam on s by > 0.1"):
        expect.improvement(c, metric="s", delta=0.1, alpha=0.05, baseline="adam", candidate="adamw")
    same = paired_difference(base, base.copy(), generator=rng, alternative="greater")
    with pytest.raises(expect.ExpectationFailed):
        expect.improvement(same, metric="s", delta=-1.0, alpha=0.05, baseline="adam", candidate="adamw")
    layered = paired_difference(base[..., None].repeat(3, -1), better[..., None].repeat(3, -1), generator=rng)
    with pytest.raises(ValueError, match="scalar comparison"):
        expect.improvement(layered, metric="s", delta=0.0, alpha=0.05, baseline="adam", candidate="adamw")


def test_unknown_metric_names_what_exists():
    with pytest.raises(KeyError, match="no measurement 'nope'; this analysis has: s"):
        expect.above(analysis(s=[0.5]), "nope", bound=0)
