"""A whole suite, end to end, as a user runs it: pytest with the installed plugin, a tiny
family trained into a store, a baseline written and checked, results in MLflow (a real
server on 127.0.0.1, and the embedded sqlite default under ``-n 2``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SUITE_YAML = """
    suite: e2e
    defaults:
      seeds: [0, 1, 2, 3, 4, 5]         # paired on 4 seeds a check could never reject at 0.05 (1/16)
      model: {n_layers: 2, n_heads: 2, d_model: 16, attn_only: true}
      data: {vocab_size: 32, seq_len: 32, synthetic: {span_min: 4, span_max: 8}}
      train: {lr: 3.0e-3, steps: 20, batch_size: 8}
      probe: {n_prompts: 8}
    families:
      base: {}
      wide: {extends: base, model: {d_model: 32}}
    regression: {alpha: 0.05, tolerance: 0.05, metrics: [head_stability.all_anchors]}
    checks:
      base: {candidate: base}
"""

SUITE_TESTS = """
    from pathlib import Path
    import pytest
    from harness import expect

    SUITE = Path(__file__).with_name("e2e.yaml")

    @pytest.mark.parametrize("family", ["base", "wide"])
    def test_controls_are_reported(seedstab, family):
        a = seedstab.analysis(SUITE, family)
        expect.above(a, "head_stability_step0.all_anchors", bound=0.9, use_ci=False)

    @pytest.mark.parametrize("family", ["base", "wide"])
    def test_baseline(seedstab, stability_baseline, family):
        reg = seedstab.suite(SUITE).regression
        stability_baseline.check(seedstab.analysis(SUITE, family), metrics=["head_stability.all_anchors"],
                                 tolerance=reg["tolerance"], alpha=reg["alpha"], suite="e2e")
"""


@pytest.fixture
def suite_dir(tmp_path):
    d = tmp_path / "project"
    (d / "suites").mkdir(parents=True)
    (d / "suites" / "e2e.yaml").write_text(textwrap.dedent(SUITE_YAML))
    (d / "suites" / "test_e2e.py").write_text(textwrap.dedent(SUITE_TESTS))
    return d


def run_pytest(cwd: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"SEEDSTAB_STORE": str(cwd / "store"), "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    env.update(env_extra or {})
    # -p no:seedstab -p harness.plugin: works whether or not the package is pip-installed.
    cmd = [sys.executable, "-m", "pytest", "suites", "-p", "no:seedstab", "-p", "harness.plugin",
           "-p", "no:cacheprovider", "--seedstab-n-boot", "50", "-q", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_suite_logs_to_a_real_mlflow_server(suite_dir, mlflow_server, tmp_path):
    first = run_pytest(suite_dir, "--seedstab-mlflow-uri", mlflow_server, "--seedstab-update-baselines")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (suite_dir / "baselines" / "cpu" / "e2e" / "test_baseline-base.json").exists()
    second = run_pytest(suite_dir, "--seedstab-mlflow-uri", mlflow_server,
                        "--seedstab-summary", str(suite_dir / "summary.md"))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "PASS      suites/test_e2e.py::test_baseline[base]" in second.stdout
    assert "PASS      suites/e2e.yaml::base" in second.stdout
    assert (suite_dir / "baselines" / "cpu" / "e2e" / "base.json").exists()
    summary = (suite_dir / "summary.md").read_text()
    assert "test_baseline[wide]" in summary and "pass" in summary

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("seedstab/e2e")
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], filter_string="tags.role = 'candidate'")
    parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    # one run per family per session, each test's (and the YAML check's) verdict on it
    assert sorted(r.info.run_name for r in parents) == ["e2e/base", "e2e/wide"]
    run = next(r for r in parents if r.info.run_name == "e2e/base")
    tags = run.data.tags
    assert tags["verdict"] == "pass" and tags["suite"] == "e2e"
    assert tags["verdict.test_baseline.base"] == "pass" and tags["verdict.check.base"] == "pass"
    assert tags["verdict.test_controls_are_reported.base"] == "pass"
    assert run.data.params["model.d_model"] == "16"
    history = client.get_metric_history(run.info.run_id, "head_stability.all_anchors")
    assert sorted(m.step for m in history) == [0, 1]  # per layer, as steps
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"analysis.json", "verdicts", "plots"} <= arts
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"layer_stability.png", "heatmap.png", "meta_sne.png"} <= plots, plots
    verdicts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "verdicts")}
    assert "test_baseline.base.json" in verdicts, verdicts
    verdict = json.loads(Path(client.download_artifacts(
        run.info.run_id, "verdicts/test_baseline.base.json", str(tmp_path))).read_text())
    assert verdict["verdict"] == "pass"
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(children) == 6 and all(c.data.metrics.get("final_perplexity", 0) > 1 for c in children)


def test_suite_under_xdist_with_the_sqlite_default(suite_dir):
    # Seeds trained once up front would hide the store's locking: start from an empty store.
    result = run_pytest(suite_dir, "-n", "2", "--seedstab-update-baselines")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (suite_dir / "mlflow.db").exists()
    again = run_pytest(suite_dir, "-n", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "5 passed" in again.stdout

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{suite_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("seedstab/e2e")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 4  # a run per family per session (2 x 2), whichever worker logged first
    # each family's seeds were trained exactly once across both workers and both runs
    trained = list((suite_dir / "store").glob("*/cpu-t1/init*"))
    assert len([p for p in trained if p.is_dir() and ".corrupt" not in p.name]) == 12


EDIT_YAML = """
    suite: edit
    defaults:
      seeds: [0, 1, 2, 3, 4, 5]
      model: {n_layers: 2, n_heads: 2, d_model: 16, attn_only: true}
      data: {vocab_size: 32, seq_len: 32, synthetic: {span_min: 4, span_max: 8}}
      train: {optimizer: "my_opt:ScaledAdam", lr: 1.0e-2, steps: 40, batch_size: 8}
      probe: {n_prompts: 8}
    families:
      mine: {}
    regression: {alpha: 0.05, tolerance: 0.01, metrics: [head_stability.all_anchors]}
    checks:
      mine: {candidate: mine}           # the same family, its optimizer's code edited
"""

EDIT_TESTS = """
    from pathlib import Path
    from harness import expect

    SUITE = Path(__file__).with_name("edit.yaml")

    def test_gate(seedstab, stability_baseline):
        stability_baseline.check(seedstab.analysis(SUITE, "mine"), metrics=["head_stability.all_anchors"],
                                 tolerance=0.01, alpha=0.05, suite="edit")
"""

MY_OPT = """
    import torch

    STEP_SCALE = {scale}


    class ScaledAdam(torch.optim.Adam):
        def step(self, closure=None):
            for group in self.param_groups:
                group["lr"] = group.setdefault("base_lr", group["lr"]) * STEP_SCALE
            return super().step(closure)
"""


def test_edited_user_optimizer_reaches_the_gate_as_a_regression(tmp_path):
    """The headline workflow through the real gate: the baseline is written with the user's
    optimizer as it was; an edit to its code (same spec, same fingerprint) retrains the seeds
    and is compared (not STALE) and, because the edit changes what the heads learn, flagged
    REGRESSED. The 'before' optimizer is a no-op (scale 0: heads stay at their near-uniform
    init, raw stability ≈ 1); 'after' trains (raw stability falls well below)."""
    d = tmp_path / "project"
    (d / "suites").mkdir(parents=True)
    (d / "suites" / "edit.yaml").write_text(textwrap.dedent(EDIT_YAML))
    (d / "suites" / "test_edit.py").write_text(textwrap.dedent(EDIT_TESTS))
    opt = d / "suites" / "my_opt.py"
    opt.write_text(textwrap.dedent(MY_OPT.format(scale="0.0")))
    first = run_pytest(d, "--seedstab-no-mlflow", "--seedstab-update-baselines")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (d / "baselines" / "cpu" / "edit" / "test_gate.json").exists()
    assert (d / "baselines" / "cpu" / "edit" / "mine.json").exists()
    again = run_pytest(d, "--seedstab-no-mlflow")
    assert again.returncode == 0, again.stdout + again.stderr  # unchanged code: passes, from the store
    opt.write_text(textwrap.dedent(MY_OPT.format(scale="1.0")))
    edited = run_pytest(d, "--seedstab-no-mlflow")
    assert edited.returncode == 1, edited.stdout + edited.stderr
    assert "REGRESSED suites/edit.yaml::mine" in edited.stdout, edited.stdout  # the YAML check
    assert "REGRESSED suites/test_edit.py::test_gate" in edited.stdout  # and the fixture
    assert "STALE" not in edited.stdout, edited.stdout
    # the store's trained families (beside them, "analyses" caches the session's analyses)
    keys = sorted(p.name for p in (d / "store").iterdir() if p.is_dir() and p.name != "analyses")
    assert len(keys) == 2 and all("-code" in k for k in keys), keys  # the edit retrained under a new key
