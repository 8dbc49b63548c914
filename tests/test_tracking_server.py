"""Tests for harness.tracking against other processes: two processes racing on a new sqlite
store (and on one family's run), an unreachable server, a real ``mlflow server``, and the
``seedstab mlflow sync`` replay of what could not be logged."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from harness import tracking
from harness import tracking_payload as tp
from harness.tracking import log_family, log_verdict, prepare
from tests.test_tracking import REPO, SESSION, client, free_port, kwargs, make_analysis, record


RACE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from tests.test_tracking import kwargs, make_analysis
    from harness.tracking import prepare, log_family
    from pathlib import Path
    uri, go, tmp = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    (tmp / "ready").touch()
    while not go.exists():  # both begin at the same moment, after the slow imports
        time.sleep(0.01)
    prepare(uri)
    ok = True
    for fam in (sys.argv[5], "shared"):  # one family of its own, one both use (same session)
        res = log_family(**kwargs(uri, tmp, analysis=make_analysis(fam), seed_logs=[]))
        print("RESULT", fam, res.logged, res.created, res.run_id, res.error)
        ok = ok and res.logged
    sys.exit(0 if ok else 1)
""")


def test_two_processes_prepare_and_log_on_new_db(tmp_path):
    db = tmp_path / "new" / "mlflow.db"  # does not exist yet
    uri = f"sqlite:///{db}"
    go = tmp_path / "go"
    procs = []
    for fam in ("fa", "fb"):
        d = tmp_path / fam
        d.mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", RACE, str(REPO), uri, str(go), str(d), fam],
                                      cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.time() + 120
    while not all((tmp_path / f / "ready").exists() for f in ("fa", "fb")):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a racer died while importing"
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=180)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    c = client(uri)
    runs = c.search_runs([tracking.experiment_id(c, "seedstab/smoke")])
    assert sorted(r.info.run_name for r in runs) == ["smoke/fa", "smoke/fb", "smoke/shared"]
    assert [e.name for e in c.search_experiments()].count("seedstab/smoke") == 1
    created = [line.split()[3] for out in outs for line in out.splitlines() if line.startswith("RESULT shared")]
    assert sorted(created) == ["False", "True"]  # one process made it, the other found it


# ---------------------------------------------------------------------------- http


def test_unreachable_server_falls_back_fast(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    res = log_family(**kwargs(uri, tmp_path))
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"a dead server cost {elapsed:.1f} s"
    assert not res.logged and res.run_id is None and res.uri == uri
    assert res.error.startswith("ConnectionError: tracking server") and "unreachable" in res.error
    fb = res.fallback_path
    assert fb.parent == tmp_path / "unlogged" and fb.name.endswith("-smoke_adamw")
    assert json.loads((fb / "analysis.json").read_text()) == json.loads(json.dumps(make_analysis().to_dict()))
    assert (fb / "plots" / "per_layer.png").read_bytes() == b"\x89PNG fake"
    assert (fb / "intervals.csv").read_text() == tp.intervals_csv(tp.interval_rows(make_analysis()))
    rec = json.loads((fb / "mlflow.json").read_text())
    assert rec["uri"] == uri and rec["experiment"] == "seedstab/smoke" and rec["error"] == res.error
    assert rec["run_name"] == "smoke/adamw" and rec["tags"]["session"] == SESSION
    assert rec["params"]["train.lr"] == "0.001" and rec["tags"]["role"] == "candidate"
    assert ["head_stability.all_anchors", 0.85, 1] in rec["metrics"]
    assert len(rec["children"]) == 2 and ["copy_loss", 3.8, 20] in rec["children"][0]["metrics"]
    # a second fallback of the same run in the same instant gets its own directory
    res2 = log_family(**kwargs(uri, tmp_path))
    assert res2.fallback_path != fb and res2.fallback_path.is_dir()
    prepare(uri)  # only warns


def test_check_reachable_reports_http_errors():
    class NotMlflow(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), NotMlflow)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        uri = f"http://127.0.0.1:{srv.server_address[1]}"
        assert tracking.check_reachable(uri) == f"tracking server {uri} answered 404 on /health"
    finally:
        srv.shutdown()
        srv.server_close()
    assert tracking.check_reachable("sqlite:///x.db") is None


def test_log_family_through_real_server(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    res = log_family(**kwargs(mlflow_server, tmp_path))
    assert log_verdict(res, record=record()).logged
    print(f"logged through http in {time.perf_counter() - t0:.2f} s")
    assert res.logged, res.error
    assert tracking.run_url(mlflow_server, res.run_id) == f"{mlflow_server}/#/runs/{res.run_id}"
    c = client(mlflow_server)
    run = c.get_run(res.run_id)
    assert run.data.tags["fingerprint"] == "fp0123456789" and run.data.params["train.lr"] == "0.001"
    assert run.data.tags["verdict.check.adamw"] == "regressed"
    assert c.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    hist = sorted((m.step, m.value) for m in c.get_metric_history(res.run_id, "head_stability.all_anchors"))
    assert hist == [(0, 0.98), (1, 0.85), (2, 0.67)]
    dl = Path(c.download_artifacts(res.run_id, "analysis.json", str(tmp_path / "dl")))
    assert json.loads(dl.read_text())["fingerprint"] == "fp0123456789"
    assert "plots/per_layer.png" in [f.path for f in c.list_artifacts(res.run_id, "plots")]
    assert "verdicts/check.adamw.json" in [f.path for f in c.list_artifacts(res.run_id, "verdicts")]
    children = c.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{res.run_id}'")
    assert len(children) == 2
    loss = c.get_metric_history(children[0].info.run_id, "loss")
    assert sorted(m.step for m in loss) == [0, 10, 20, 30]
    assert list((tmp_path / "art").rglob("analysis.json"))  # the server stored the artifact


def test_unlogged_runs_are_replayed_into_a_server_started_later(mlflow_server, tmp_path, monkeypatch):
    """The run could not reach MLflow (a dead server); `seedstab mlflow sync` logs the kept folder
    to a real server afterwards as the same run with its verdicts, moves it aside, and a second
    sync logs nothing. A second worker's folder of the same session's family joins that run."""
    from harness.cli import main
    from harness.mlflow_sync import SYNCED, pending, sync

    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    res = log_family(**kwargs(dead, tmp_path))
    assert not log_verdict(res, record=record()).logged
    other = log_family(**kwargs(dead, tmp_path))  # as another xdist worker of the session would
    assert not log_verdict(other, record=record("test_heads.adamw", "pass", rows=None)).logged
    root = res.fallback_path.parent
    assert pending(root) == [res.fallback_path, other.fallback_path]

    assert main(["mlflow", "sync", "--dir", str(root), "--mlflow-uri", dead]) == 1  # still down: kept
    assert len(pending(root)) == 2

    out = sync(root, uri=mlflow_server)
    assert out.failed == {} and list(out.logged) == [str(res.fallback_path), str(other.fallback_path)]
    run_id = out.logged[str(res.fallback_path)]
    assert out.logged[str(other.fallback_path)] == run_id  # one run for the family's session
    c = client(mlflow_server)
    run = c.get_run(run_id)
    assert run.info.run_name == "smoke/adamw" and run.info.status == "FINISHED"
    assert run.data.tags["fingerprint"] == "fp0123456789" and run.data.params["train.lr"] == "0.001"
    assert run.data.tags["seedstab.replayed_from"] == res.fallback_path.name
    assert {k: v for k, v in run.data.tags.items() if k.startswith("verdict")} == {
        "verdict.check.adamw": "regressed", "verdict.test_heads.adamw": "pass", "verdict": "regressed"}
    hist = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "head_stability.all_anchors"))
    assert hist == [(0, 0.98), (1, 0.85), (2, 0.67)]
    arts = [f.path for f in c.list_artifacts(run_id)]
    assert "analysis.json" in arts and "intervals.csv" in arts and "mlflow.json" not in arts
    assert sorted(f.path for f in c.list_artifacts(run_id, "verdicts")) == [
        "verdicts/check.adamw.json", "verdicts/check.adamw.md", "verdicts/test_heads.adamw.json",
        "verdicts/test_heads.adamw.md"]
    children = c.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 2
    assert pending(root) == [] and (root / SYNCED / res.fallback_path.name / "mlflow.json").is_file()
    assert main(["mlflow", "sync", "--dir", str(root), "--mlflow-uri", mlflow_server]) == 0
    assert len(c.search_runs([run.info.experiment_id])) == 3  # nothing logged twice
