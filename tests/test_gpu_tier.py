"""The paper tier: its suite file loads and is what the GPU run expects, and the one-command
runner works end to end at a shrunken scale on the CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness.baselines import read_baseline
from harness.checks import load_checks
from harness.config import load_suite
from harness.packed import pack_support

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "suites" / "paper" / "paper.yaml"


def _runner():
    spec = importlib.util.spec_from_file_location("gpu_tier", ROOT / "benchmarks" / "gpu_tier.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_suite_loads_and_validates():
    suite = load_suite(PAPER)
    names = {f"{o}_l{d}" for o in ("adam", "adamw") for d in (2, 4, 8)}
    assert set(suite.families) == names
    for d in (2, 4, 8):
        adam, adamw = suite.families[f"adam_l{d}"], suite.families[f"adamw_l{d}"]
        assert adam.model.n_layers == adamw.model.n_layers == d
        # the optimizer comparison is paired: seed k of each shares init and data order
        assert [adam.seed_pair(s) for s in adam.seeds] == [adamw.seed_pair(s) for s in adamw.seeds]
        assert adamw.train.weight_decay == 0.1 and adam.train.weight_decay is None
    for cfg in suite.families.values():
        assert cfg.train.device == "cuda" and len(cfg.seeds) >= 5
        assert pack_support(cfg) is None, f"{cfg.name} must train packed on a GPU"
    checks = load_checks(suite)
    assert {c.candidate.name for c in checks.values()} == names


def test_small_tier_trains_packed_analyses_and_writes_baselines(tmp_path, capsys):
    assert _runner().main(["--small", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if line.startswith(("adam_", "adamw_"))]
    assert len(table) == 6 and all(row[2] == "3" and row[3] == "3" and row[4] == "cpu" for row in table), out
    assert sum(line.startswith(("HOLDS", "FAILS")) for line in out.splitlines()) == 6
    files = sorted((tmp_path / "baselines" / "cpu" / "paper").glob("*.json"))
    assert [f.stem for f in files] == sorted(r[0] for r in table)
    metrics = {"head_stability.all_anchors", "content_specific.all_anchors", "resid_cka.debiased.mid",
               "head_cka.debiased"}  # the suite's regression metrics
    for f in files:
        b = read_baseline(f)
        assert metrics <= set(b.measurements[f.stem]), (f, list(b.measurements))


def test_small_suite_is_the_paper_suite_shrunk(tmp_path):
    small = load_suite(_runner().small_suite(tmp_path))
    paper = load_suite(PAPER)
    assert set(small.families) == set(paper.families)
    assert all(cfg.train.device == "cpu" and cfg.train.steps < 100 for cfg in small.families.values())
    assert small.families["adamw_l8"].train.optimizer == "adamw"
    with pytest.raises(SystemExit):
        _runner().main(["--help"])
