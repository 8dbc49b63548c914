"""The regression rule catches real destabilizing changes and lets fresh seeds through.

Tiny attention-only families on the induction language (the smoke recipe at d_model 32,
fewer steps). The baseline is one family; candidates are the same config with fresh seeds
(must pass) and deliberately destabilizing changes (must be flagged). The metric checked
is the content-specific head stability, the one a change cannot game by making attention
more diffuse. The false-alarm *rate* is measured by benchmarks/bench_false_alarm.py.

These changes edit the spec (steps, lr, init std), so they change the fingerprint: through the
``stability_baseline`` gate they would be reported STALE, by design. What is tested here is
the statistical rule itself (``harness.verdict.compare``). The gate's own path for a change
that keeps the fingerprint (edited user code) is tested end to end in
tests/test_suite_e2e.py::test_edited_user_optimizer_reaches_the_gate_as_a_regression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.analysis import AnalysisOptions, analyze_family
from harness.config import load_family
from harness.family import obtain_family
from harness.verdict import compare

SPEC = Path(__file__).parent / "data" / "tiny_induction.yaml"
OPTIONS = AnalysisOptions(n_boot=200, step0=False, importance=False, cross_layer=False,
                          kernels=("debiased",), prompt_lengths=(1.0,))
METRIC, TOLERANCE, ALPHA = "content_specific.all_anchors", 0.03, 0.05


@pytest.fixture(scope="module")
def base_cfg():
    return load_family(SPEC)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


def measure(cfg, store):
    return analyze_family(obtain_family(cfg, store=store), options=OPTIONS)[METRIC]


@pytest.fixture(scope="module")
def baseline(base_cfg, store):
    return measure(base_cfg, store)


def verdict(baseline, candidate):
    rows = compare(baseline, candidate, tolerance=TOLERANCE, alpha=ALPHA, generator=np.random.default_rng(0))
    return rows, any(r.regressed for r in rows)


def test_the_tiny_family_learns_something_content_specific(baseline):
    # Without this, "regressions" below would be noise around zero.
    assert np.max(baseline.lo) > 0.05, baseline.value


def test_fresh_seeds_of_the_same_config_are_not_flagged(base_cfg, store, baseline):
    fresh = measure(base_cfg.replace(seeds=[100, 101, 102, 103, 104, 105]), store)
    rows, regressed = verdict(baseline, fresh)
    assert not regressed, [(r.layer, r.delta, r.p) for r in rows]


@pytest.mark.parametrize("change", [
    pytest.param({"train": {"steps": 60}}, id="undertrained: the circuit never forms"),
    pytest.param({"train": {"lr": 3.0e-2}}, id="lr x10"),
    pytest.param({"model": {"init_std": 0.5}}, id="init std x25"),
])
def test_destabilizing_changes_are_flagged(base_cfg, store, baseline, change):
    candidate = measure(base_cfg.replace(**change), store)
    rows, regressed = verdict(baseline, candidate)
    assert regressed, [(r.layer, round(r.delta, 3), r.p) for r in rows]
