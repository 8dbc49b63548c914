"""The gate policy catches real destabilizing changes and lets fresh seeds through.

Tiny attention-only families on the induction language (the smoke recipe at d_model 32,
fewer steps). The reference is one family; candidates are the same config with fresh seeds
(must pass) and deliberately destabilizing changes of the spec (must be flagged REGRESSED).
Each comparison is a check decided by ``harness.verdict.decide`` on one metric, the
content-specific head stability, the one a change cannot game by making attention more
diffuse. A changed spec keeps the reference's seeds (the same init and data order), so its
check is paired on the shared seeds (sign flips of the per-seed differences); fresh seeds
share none, so that check is unpaired (seed-label permutations). The false-alarm *rate* is
measured by benchmarks/bench_gate.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness.analysis import AnalysisOptions, analyze_family
from harness.config import load_family
from harness.family import obtain_family
from harness.verdict import Verdict, decide
from harness.verdict_report import format_table

SPEC = Path(__file__).parent / "data" / "tiny_induction.yaml"
OPTIONS = AnalysisOptions(n_boot=200, step0=False, importance=False, cross_layer=False,
                          kernels=("debiased",), prompt_lengths=(1.0,))
METRIC, TOLERANCE, ALPHA = "content_specific.all_anchors", 0.03, 0.05
FRESH_SEEDS = [100, 101, 102, 103, 104, 105]


@pytest.fixture(scope="module")
def base_cfg():
    return load_family(SPEC)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


def measure(cfg, store):
    return analyze_family(obtain_family(cfg, store=store), options=OPTIONS)[METRIC]


@pytest.fixture(scope="module")
def reference(base_cfg, store):
    return measure(base_cfg, store)


def keys(cfg) -> list[str]:
    return [cfg.seed_key(s) for s in cfg.seeds]


def check(reference, base_cfg, candidate, cand_cfg) -> Verdict:
    return decide({METRIC: reference}, {METRIC: candidate}, metrics=[METRIC],
                  tolerance=TOLERANCE, alpha=ALPHA, reference_keys=keys(base_cfg),
                  candidate_keys=keys(cand_cfg), generator=np.random.default_rng(0))


def explain(v: Verdict) -> str:
    return "\n".join([f"status {v.status}; {v.design}", *v.reasons, *v.notes,
                      *format_table(v.rows)])


def test_the_tiny_family_learns_something_content_specific(reference):
    # Without this, "regressions" below would be noise around zero.
    assert np.max(reference.lo) > 0.05, reference.value


def test_fresh_seeds_of_the_same_config_are_not_flagged(base_cfg, store, reference):
    fresh_cfg = base_cfg.replace(seeds=FRESH_SEEDS)
    assert not set(keys(fresh_cfg)) & set(keys(base_cfg)), "fresh seeds must share no seed key"
    v = check(reference, base_cfg, measure(fresh_cfg, store), fresh_cfg)
    assert v.design.startswith("unpaired, 6 vs 6 seeds"), explain(v)
    # pass or inconclusive, decided on every layer: an underpowered or invalid check would
    # not be flagged either, and would test nothing
    assert v.status in ("pass", "inconclusive"), explain(v)
    assert len(v.rows) == np.size(reference.value) and not v.regressed_rows, explain(v)


@pytest.mark.parametrize("change", [
    pytest.param({"train": {"steps": 60}}, id="undertrained: the circuit never forms"),
    pytest.param({"train": {"lr": 3.0e-2}}, id="lr x10"),
    pytest.param({"model": {"init_std": 0.5}}, id="init std x25"),
])
def test_destabilizing_changes_are_flagged(base_cfg, store, reference, change):
    cand_cfg = base_cfg.replace(**change)
    assert keys(cand_cfg) == keys(base_cfg), "a spec change keeps the reference's seeds"
    v = check(reference, base_cfg, measure(cand_cfg, store), cand_cfg)
    assert v.design.startswith("paired on 6 seeds"), explain(v)
    assert v.status == "regressed", explain(v)
