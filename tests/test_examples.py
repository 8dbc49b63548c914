"""The README's worked examples load, and each change trains and is captured (a few steps)."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.capture import capture_family
from harness.config import load_suite
from harness.family import obtain_family

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_worked_examples_train_through_the_protocol(tmp_path):
    suite = load_suite(EXAMPLES / "check_changes.yaml")
    assert set(suite.families) == {"adam", "lion", "qk_norm", "parallel"}
    assert suite.families["lion"].train.optimizer == "my_optim:Lion"
    for name in ("lion", "qk_norm", "parallel"):
        cfg = suite.families[name].replace(seeds=[0, 1], train={"steps": 3})
        fam = obtain_family(cfg, store=tmp_path)
        assert fam.trained_now == 2
        tokens = torch.randint(cfg.vocab_size, (2, cfg.data.seq_len), generator=torch.Generator().manual_seed(0))
        cap = capture_family(fam.models, tokens, seeds=cfg.seeds)
        assert cap.patterns.shape == (2, 2, 2, 4, cfg.data.seq_len, cfg.data.seq_len)
        assert cap.z.shape[-2:] == (4, 16)


def test_worked_checks_name_the_committed_smoke_reference():
    """The examples' checks are against the smoke suite's adam, whose baseline is committed
    and holds every metric they ask for, so running them trains only the candidates."""
    from harness.baselines import read_baseline
    from harness.checks import load_checks
    from harness.config import fingerprint

    checks = load_checks(EXAMPLES / "check_changes.yaml")
    assert set(checks) == {"lion", "qk_norm", "parallel"}
    smoke = load_suite(EXAMPLES.parent / "suites" / "smoke" / "smoke.yaml").families["adam"]
    baseline = read_baseline(EXAMPLES.parent / "baselines" / "cpu" / "smoke" / "adam.json")
    for name, check in checks.items():
        assert (check.reference.name, check.reference_suite) == ("adam", "smoke"), name
        assert check.candidate.name == name and not check.same_family
        assert set(check.metrics) <= set(baseline.measurements["adam"]), name
    # the examples' own `adam` is the smoke adam spelled out: candidates differ from it by their change only
    assert fingerprint(load_suite(EXAMPLES / "check_changes.yaml").families["adam"]) == fingerprint(smoke)
    assert baseline.header["fingerprints"]["adam"] == fingerprint(smoke)


def test_bring_your_own_checks_run_through_the_gate_at_tiny_scale(tmp_path, monkeypatch):
    """examples/byo.yaml's GPT-2 from YAML, schedule-free optimizer and Muon factory, each
    checked against its reference through the gate (shrunk: 5 seeds, 4 steps, 8 prompts), with
    no adapter code: each ends in a verdict the gate decided on its rows, never an error."""
    import dataclasses

    import pytest

    for lib in ("transformers", "schedulefree", "pytorch_optimizer"):
        pytest.importorskip(lib)
    from harness.analysis import AnalysisOptions, analyze_family
    from harness.checks import load_checks
    from harness.gate import run_check

    monkeypatch.syspath_prepend(str(EXAMPLES))
    checks = load_checks(EXAMPLES / "byo.yaml")
    assert set(checks) == {"gpt2", "schedule_free", "muon"}
    options = AnalysisOptions(step0=False, importance=False, cross_layer=False, kernels=("debiased",),
                              prompt_lengths=(1.0,))

    def tiny(cfg):
        return cfg.replace(seeds=[0, 1, 2, 3, 4], train={"steps": 4, "batch_size": 4},
                           probe={"n_prompts": 8})

    def analyze(cfg):
        return analyze_family(obtain_family(cfg, store=tmp_path / "store"), options=options)

    seen = set()
    for name, check in checks.items():
        small = dataclasses.replace(check, candidate=tiny(check.candidate), reference=tiny(check.reference))
        out = run_check(small, analyze=analyze, baselines_dir=tmp_path / "baselines", device_class="cpu",
                        options=options, update=True, already_updated=seen)
        assert out.verdict.status in ("pass", "regressed", "inconclusive"), out.report
        assert len(out.verdict.rows) == 6 and "paired on 5 seeds" in out.report, out.report
