"""Tests for harness.tracking when MLflow fails: a run that fails half way, a verdict that
cannot reach its logged run (and its sync), a payload that cannot be built, a fallback
folder that cannot be written. Nothing is lost, nothing raises."""

from __future__ import annotations

import json

from harness import tracking_payload as tp
from harness.tracking import log_family, log_verdict
from tests.test_tracking import client, free_port, kwargs, record, sqlite_uri, template_db  # noqa: F401 (fixtures)


def test_mlflow_failure_mid_run_falls_back_and_marks_failed(sqlite_uri, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)

    def boom(self, *a, **k):
        raise RuntimeError("disk I/O error\nsecond line")

    monkeypatch.setattr(MlflowClient, "log_artifacts", boom)
    res = log_family(**kwargs(sqlite_uri, tmp_path))
    assert not res.logged and res.run_id
    assert res.error == "RuntimeError: disk I/O error second line"  # one line
    assert client(sqlite_uri).get_run(res.run_id).info.status == "FAILED"
    rec = json.loads((res.fallback_path / "mlflow.json").read_text())
    assert rec["partial_run_id"] == res.run_id and rec["error"] == res.error
    assert res.fallback_path.name.endswith("-smoke_adamw")
    # the verdicts of the tests that use it join its folder, to be synced as one run
    v = log_verdict(res, record=record())
    assert not v.logged and v.fallback_path == res.fallback_path
    rec = json.loads((res.fallback_path / "mlflow.json").read_text())
    assert rec["tags"]["verdict.check.adamw"] == "regressed" and rec["tags"]["verdict"] == "regressed"
    assert (res.fallback_path / "verdicts" / "check.adamw.md").read_text() == tp.verdict_markdown(record())


def test_a_verdict_that_cannot_reach_its_logged_run_is_kept(sqlite_uri, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    res = log_family(**kwargs(sqlite_uri, tmp_path))
    assert res.logged

    def boom(self, *a, **k):
        raise RuntimeError("server went away")

    real_set_tag = MlflowClient.set_tag

    monkeypatch.setattr(MlflowClient, "set_tag", boom)
    v = log_verdict(res, record=record(), fallback_dir=tmp_path / "unlogged")
    assert not v.logged and v.run_id == res.run_id and v.error == "RuntimeError: server went away"
    rec = json.loads((v.fallback_path / "mlflow.json").read_text())
    assert rec["attach_to"] == res.run_id and rec["verdicts"] == {"check.adamw": "regressed"}
    assert (v.fallback_path / "verdicts" / "check.adamw.json").is_file()

    monkeypatch.setattr(MlflowClient, "set_tag", real_set_tag)  # the store is back: sync adds the
    # verdict to the run it belongs to
    from harness.mlflow_sync import pending, sync

    out = sync(v.fallback_path.parent, uri=sqlite_uri)
    assert out.failed == {} and out.logged == {str(v.fallback_path): res.run_id}
    tags = client(sqlite_uri).get_run(res.run_id).data.tags
    assert tags["verdict.check.adamw"] == "regressed" and tags["verdict"] == "regressed"
    assert "verdicts/check.adamw.md" in [f.path for f in client(sqlite_uri).list_artifacts(res.run_id, "verdicts")]
    assert pending(v.fallback_path.parent) == []


def test_malformed_seed_log_falls_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = log_family(**kwargs("sqlite:///never.db", tmp_path, seed_logs=[{"curve": [["x", 1.0]]}]))
    assert not res.logged and "could not build the MLflow payload" in res.error
    assert (res.fallback_path / "analysis.json").exists() and (res.fallback_path / "intervals.csv").exists()
    assert not (tmp_path / "never.db").exists()
    assert not log_verdict(res, record=record()).logged
    assert json.loads((res.fallback_path / "mlflow.json").read_text())["verdicts"] == {"check.adamw": "regressed"}


def test_fallback_write_failure_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "unlogged"
    blocker.write_text("a file where the fallback dir should be")
    uri = f"http://127.0.0.1:{free_port()}"
    res = log_family(**kwargs(uri, tmp_path, fallback_dir=blocker))
    assert not res.logged and res.fallback_path is None
    assert "unreachable" in res.error and "fallback write" in res.error
    v = log_verdict(res, record=record(), fallback_dir=blocker)
    assert not v.logged and v.fallback_path is None


