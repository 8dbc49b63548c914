"""A real pytest session logged to MLflow, read back through ``MlflowClient``: what a person
opening the MLflow UI finds (the experiment opens on its runs; one run per family named
``<suite>/<family>`` even with two xdist workers; each test's verdict a tag; no interval
bounds among the metrics; the intervals and the check's verdict table as artifacts)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SUITE_YAML = """
    suite: look
    defaults:
      seeds: [0, 1, 2, 3, 4, 5]          # a paired check needs 5 seeds to reach 0.05
      model: {n_layers: 1, n_heads: 2, d_model: 16, attn_only: true}
      data: {vocab_size: 32, seq_len: 32}
      train: {lr: 3.0e-3, steps: 20, batch_size: 8}
      probe: {n_prompts: 8}
    families:
      adam: {}
      adamw: {extends: adam, train: {optimizer: adamw, weight_decay: 0.1}}
    regression: {alpha: 0.05, tolerance: 0.05, metrics: [head_stability.all_anchors, resid_cka.debiased.mid]}
    checks:
      adam: {candidate: adam}
"""

SUITE_TESTS = """
    from pathlib import Path
    import pytest

    SUITE = Path(__file__).with_name("look.yaml")

    @pytest.mark.parametrize("family", ["adam", "adamw"])
    def test_entropy_is_reported(seedstab, family):
        assert seedstab.analysis(SUITE, family)["attention_entropy"].value.size == 1

    def test_adam_alone(seedstab):
        assert seedstab.analysis(SUITE, "adam").seeds == (0, 1, 2, 3, 4, 5)

    def test_fails_on_purpose(seedstab):
        a = seedstab.analysis(SUITE, "adamw")
        assert a.family == "not adamw", "this test fails so that its verdict is 'fail'"
"""


def run_session(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:seedstab", "-p", "harness.plugin", "-p", "no:cacheprovider",
           "-q", "--seedstab-n-boot", "50", "--seedstab-store", str(cwd / "store"),
           "--seedstab-baselines-dir", str(cwd / "baselines"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_session_reads_well_in_mlflow(tmp_path):
    pytest.importorskip("xdist")
    (tmp_path / "look.yaml").write_text(textwrap.dedent(SUITE_YAML))
    (tmp_path / "test_look.py").write_text(textwrap.dedent(SUITE_TESTS))
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    # --seedstab-update-baselines writes the reference's baseline and still compares: the
    # check reaches a verdict with rows in this one session
    res = run_session(tmp_path, "-p", "xdist", "-n", "2", "--seedstab-mlflow-uri", uri,
                      "--seedstab-update-baselines", "test_look.py", "look.yaml")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out  # test_fails_on_purpose
    assert "1 failed, 4 passed" in out, out
    assert f"seedstab: runs logged to MLflow at {uri}" in out and "workflowType=machine_learning" in out, out

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("seedstab/look")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on its runs
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    families = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(families) == ["look/adam", "look/adamw"]  # one per family, across both workers
    sessions = {r.data.tags["session"] for r in runs}
    assert len(sessions) == 1 and sessions != {""}

    adam, adamw = families["look/adam"], families["look/adamw"]
    assert {k: v for k, v in adam.data.tags.items() if k.startswith("verdict")} == {
        "verdict.test_entropy_is_reported.adam": "pass", "verdict.test_adam_alone": "pass",
        "verdict.check.adam": "pass", "verdict": "pass"}
    assert {k: v for k, v in adamw.data.tags.items() if k.startswith("verdict")} == {
        "verdict.test_entropy_is_reported.adamw": "pass", "verdict.test_fails_on_purpose": "fail",
        "verdict": "fail"}  # the worst of its tests
    assert "| `test_fails_on_purpose` | fail |" in adamw.data.tags["mlflow.note.content"]
    assert adam.data.params["model.d_model"] == "16" and adamw.data.params["train.optimizer"] == "adamw"

    for run in (adam, adamw):
        assert run.info.status == "FINISHED"
        metrics = run.data.metrics
        assert "head_stability.all_anchors" in metrics and "attention_entropy" in metrics
        assert not [k for k in metrics if k.endswith((".lo", ".hi"))]  # one chart per metric
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"analysis.json", "config.json", "intervals.csv", "plots", "verdicts"} <= arts
        table = client.download_artifacts(run.info.run_id, "intervals.csv", str(tmp_path / run.info.run_id))
        rows = list(csv.DictReader(io.StringIO(Path(table).read_text())))
        analysis = json.loads(Path(client.download_artifacts(run.info.run_id, "analysis.json",
                                                             str(tmp_path / run.info.run_id))).read_text())
        hs = analysis["measurements"]["head_stability.all_anchors"]
        row = next(r for r in rows if r["metric"] == "head_stability.all_anchors" and r["layer"] == "0")
        assert float(row["lo"]) == pytest.approx(hs["lo"][0], rel=1e-5)
        assert float(row["hi"]) == pytest.approx(hs["hi"][0], rel=1e-5)
        children = client.search_runs([exp.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        assert sorted(c.info.run_name for c in children) == [f"{run.info.run_name}/seed{s}" for s in range(6)]
        assert all(c.data.metrics["final_perplexity"] > 1 for c in children)

    # the check's verdict table, on the candidate's run
    dl = Path(client.download_artifacts(adam.info.run_id, "verdicts", str(tmp_path / "verdicts")))
    rec = json.loads((dl / "check.adam.json").read_text())
    assert rec["verdict"] == "pass" and rec["check"]["candidate"] == "adam"
    assert {r["metric"] for r in rec["rows"]} == {"head_stability.all_anchors", "resid_cka.debiased.mid"}
    assert all({"delta", "lo", "hi", "p", "mde", "tolerance", "flag"} <= set(r) for r in rec["rows"])
    md = (dl / "check.adam.md").read_text()
    assert "| metric" in md and "CI(Δ)" in md and "head_stability.all_anchors" in md
    fail_md = Path(client.download_artifacts(adamw.info.run_id, "verdicts/test_fails_on_purpose.md",
                                             str(tmp_path / "f"))).read_text()
    assert "this test fails so that its verdict is 'fail'" in fail_md
