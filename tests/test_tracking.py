"""Tests for harness.tracking: URI resolution, logging to sqlite and to a real server,
the schema-creation race, and every fallback path."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest

from harness import tracking
from harness.results import Analysis, Measurement
from harness.tracking import LogResult, log_family, prepare, tracking_uri


REPO = Path(__file__).resolve().parents[1]
L = 3  # layers in the fake analysis


def make_analysis(family: str = "adamw") -> Analysis:
    def m(name, value, lo, hi, **kw):
        return Measurement(name=name, value=np.asarray(value, float), lo=np.asarray(lo, float),
                           hi=np.asarray(hi, float), higher_is_better=True, n_seeds=3, **kw)

    ms = [
        m("head_stability.mean", 0.8, 0.7, 0.9, per_seed=np.array([0.75, 0.8, 0.85])),
        m("final_loss", 2.5, 2.4, 2.6),
        m("head_stability.all_anchors", [0.98, 0.85, 0.67], [0.9, 0.8, 0.6], [1.0, 0.9, 0.7]),
        # a NaN layer (no heads there): skipped in MLflow, kept as null in analysis.json
        m("resid_cka.debiased.post", [0.81, float("nan"), 0.85], [0.8, 0.8, 0.8], [0.9, 0.9, 0.9]),
    ]
    return Analysis(family=family, fingerprint="fp0123456789", seeds=(0, 1, 2), device_class="cpu-2t",
                    probe_digest="probe42", measurements={x.name: x for x in ms},
                    info={"n_layers": L, "n_heads": 4})


def make_seed_logs(n: int = 2) -> list[dict]:
    logs = []
    for s in range(n):
        curve = [[step, 5.0 - step / 10 - s / 100, float("nan") if step < 20 else 4.0 - step / 100]
                 for step in (0, 10, 20, 30)]
        logs.append({"seed": s, "init_seed": 100 + s, "data_seed": 200 + s, "curve": curve,
                     "final_loss": curve[-1][1], "tokens_per_s": 70000.0 + s, "wall_s": 1.5 + s})
    return logs


CONFIG = {"model": {"n_layers": L, "d_model": 64}, "train": {"lr": 1e-3, "optimizer": "adamw"},
          "data": {"vocab": 128, "long": "x" * 10_000}, "seeds": [0, 1, 2]}


def kwargs(uri: str, tmp: Path, **over) -> dict:
    plot = tmp / "layers.png"
    if not plot.exists():
        plot.write_bytes(b"\x89PNG fake")
    kw = dict(uri=uri, suite="smoke", test="tests/test_x.py::test_heads[adamw]", analysis=make_analysis(),
              config=CONFIG, seed_logs=make_seed_logs(), role="candidate", verdict="pass",
              verdict_report={"verdict": "pass", "rows": [{"key": "head_stability.mean", "p": float("nan")}]},
              plots={"per_layer": plot}, tags={"ci_job": "42"}, fallback_dir=tmp / "unlogged")
    kw.update(over)
    return kw


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    """One prepared sqlite schema (creating it costs ~8 s here); tests copy it."""
    d = tmp_path_factory.mktemp("template")
    db = d / "mlflow.db"
    prepare(f"sqlite:///{db}")
    return db


@pytest.fixture
def sqlite_uri(template_db, tmp_path) -> str:
    db = tmp_path / "db" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(template_db, db)
    return f"sqlite:///{db}"


# ---------------------------------------------------------------------------- URIs


def test_default_uri_is_sqlite_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_uri().startswith("sqlite:////")  # absolute: four slashes
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)  # computed at call time, not import time
    assert tracking_uri() == f"sqlite:///{sub.resolve()}/mlflow.db"


def test_env_uri_honoured_and_explicit_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking_uri() == "http://tracking.example:5000"
    assert tracking_uri(None) == "http://tracking.example:5000"
    assert tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")
    assert tracking_uri().startswith("sqlite:///")


def test_sqlite_path_parsing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking._sqlite_path("sqlite:////abs/m.db") == Path("/abs/m.db")
    assert tracking._sqlite_path("sqlite:///rel/m.db?timeout=5") == tmp_path.resolve() / "rel/m.db"
    assert tracking._sqlite_path("sqlite://") is None
    assert tracking._sqlite_path("sqlite:///:memory:") is None
    assert tracking._sqlite_path("http://h:5000") is None


def test_run_url():
    assert tracking.run_url("http://h:5000/", "abc") == "http://h:5000/#/runs/abc"
    assert tracking.run_url("https://h", "abc", experiment_id="3") == "https://h/#/experiments/3/runs/abc"
    assert tracking.run_url("sqlite:////x.db", "abc") is None
    assert tracking.run_url("http://h", "") is None


def test_import_is_cheap():
    code = "import sys, harness.tracking; assert 'mlflow' not in sys.modules, 'mlflow imported eagerly'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ---------------------------------------------------------------------------- pure helpers


def test_flatten_and_param_values():
    flat = tracking.flatten(CONFIG)
    assert flat["train.lr"] == 1e-3 and flat["model.n_layers"] == L and flat["seeds"] == [0, 1, 2]
    assert tracking._param_value([0, 1]) == "[0, 1]"
    long = tracking._param_value("y" * 7000)
    assert len(long) <= tracking.MAX_PARAM_VALUE and "truncated, 7000 chars" in long


def test_sanitize_key():
    from mlflow.utils.validation import _validate_metric_name

    for raw in ["a.b-c d/e_f", "bad:key[0]*", "x/../y", "/lead", "a//b", "é", "k" * 400]:
        key = tracking.sanitize_key(raw)
        _validate_metric_name(key)  # raises if MLflow would reject it
        assert len(key) <= 250
    assert tracking.sanitize_key("head_stability.all_anchors") == "head_stability.all_anchors"
    assert tracking.sanitize_key("a" * 300 + "1") != tracking.sanitize_key("a" * 300 + "2")


def test_metric_points_shapes_and_nan():
    assert tracking._metric_points("s", 1.5) == [("s", 1.5, 0)]
    assert tracking._metric_points("p", [1.0, float("nan"), 3.0]) == [("p", 1.0, 0), ("p", 3.0, 2)]
    per_head = tracking._metric_points("h", [[1.0, 2.0], [3.0, 4.0]])
    assert ("h.head1", 4.0, 1) in per_head and len(per_head) == 4
    assert tracking._metric_points("x", np.zeros((2, 2, 2))) == []


def test_chunks_respect_batch_limits():
    params = [(f"p{i}", "v" * 5000) for i in range(250)]
    metrics = [(f"m{i % 7}", float(i), i) for i in range(2500)]
    chunks = list(tracking._chunks(params, metrics))
    assert [p for c, _ in chunks for p in c] == params
    assert [m for _, c in chunks for m in c] == metrics
    for p, m in chunks:
        assert len(p) <= 100 and len(m) <= 1000 and len(p) + len(m) <= 1000
        assert sum(len(k) + len(v) for k, v in p) < 1_000_000
    assert list(tracking._chunks([], [])) == []
    assert len(list(tracking._chunks([("a", "b")], [("m", 1.0, 0)]))) == 1  # small runs: one batch


def test_http_limits_set_and_restored(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own choice stays
    with tracking._http_limits("http://h"):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    with tracking._http_limits("sqlite:///x.db"):
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_experiment_id_race_gets_again():
    from mlflow.entities import Experiment
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    exp = Experiment("7", "seedstab/s", "loc", "active")

    class Racy:  # another process creates it between our get and our create
        tracking_uri = "http://h"
        calls = 0

        def get_experiment_by_name(self, name):
            self.calls += 1
            return None if self.calls == 1 else exp

        def create_experiment(self, name, artifact_location=None):
            raise MlflowException("Experiment 'seedstab/s' already exists.", error_code=RESOURCE_ALREADY_EXISTS)

    assert tracking.experiment_id(Racy(), "seedstab/s") == "7"

    class Broken(Racy):
        def create_experiment(self, name, artifact_location=None):
            raise MlflowException("permission denied")

    with pytest.raises(MlflowException, match="permission denied"):
        tracking.experiment_id(Broken(), "seedstab/s")


# ---------------------------------------------------------------------------- sqlite


def test_prepare_is_idempotent(template_db, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{template_db}"
    prepare(uri)
    prepare(uri)
    assert Path(str(template_db) + ".lock").exists()
    assert [e.name for e in client(uri).search_experiments()] == ["Default"]
    prepare("sqlite://")  # in-memory and non-sqlite URIs: nothing to do
    prepare("postgresql://u@h/db")
    assert list(tmp_path.iterdir()) == []


def test_prepare_unwritable_raises_clear_error(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    with pytest.raises(tracking.TrackingError, match="cannot create the MLflow database .*afile.*MLFLOW_TRACKING_URI"):
        prepare(f"sqlite:///{blocker}/sub/mlflow.db")


def test_log_family_sqlite_round_trip(sqlite_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = log_family(**kwargs(sqlite_uri, tmp_path))
    assert res == LogResult(logged=True, run_id=res.run_id, uri=sqlite_uri, experiment="seedstab/smoke")
    assert res.run_id and res.error is None and res.fallback_path is None
    c = client(sqlite_uri)
    run = c.get_run(res.run_id)
    assert run.info.run_name == "tests/test_x.py::test_heads[adamw]:adamw"
    assert run.info.status == "FINISHED"
    assert c.get_experiment(run.info.experiment_id).name == "seedstab/smoke"

    p = run.data.params
    assert p["train.lr"] == "0.001" and p["model.n_layers"] == str(L) and p["seeds"] == "[0, 1, 2]"
    assert len(p["data.long"]) <= 6000 and p["data.long"].endswith("see config.json]")

    t = run.data.tags
    expect = {"suite": "smoke", "test": "tests/test_x.py::test_heads[adamw]", "family": "adamw",
              "fingerprint": "fp0123456789", "role": "candidate", "verdict": "pass", "device": "cpu-2t",
              "probe_digest": "probe42", "git_commit": "unknown", "ci_job": "42", "seeds": "0,1,2"}
    assert {k: t.get(k) for k in expect} == expect
    import torch

    assert t["torch_version"] == torch.__version__ and t["seedstab_version"]

    mt = run.data.metrics
    assert mt["head_stability.mean"] == 0.8 and mt["head_stability.mean.lo"] == 0.7
    assert mt["head_stability.mean.hi"] == 0.9 and mt["final_loss"] == 2.5
    hist = sorted((m.step, m.value) for m in c.get_metric_history(res.run_id, "head_stability.all_anchors"))
    assert hist == [(0, 0.98), (1, 0.85), (2, 0.67)]
    hist_hi = sorted((m.step, m.value) for m in c.get_metric_history(res.run_id, "head_stability.all_anchors.hi"))
    assert hist_hi == [(0, 1.0), (1, 0.9), (2, 0.7)]
    cka = sorted((m.step, m.value) for m in c.get_metric_history(res.run_id, "resid_cka.debiased.post"))
    assert cka == [(0, 0.81), (2, 0.85)]  # the NaN layer is skipped

    arts = {f.path for f in c.list_artifacts(res.run_id)}
    assert {"analysis.json", "verdict.json", "config.json", "plots"} <= arts
    assert [f.path for f in c.list_artifacts(res.run_id, "plots")] == ["plots/per_layer.png"]
    dl = Path(c.download_artifacts(res.run_id, "", str(tmp_path / "dl")))
    back = json.loads((dl / "analysis.json").read_text())
    assert back == json.loads(json.dumps(make_analysis().to_dict()))
    assert back["measurements"]["resid_cka.debiased.post"]["value"][1] is None
    assert Measurement.from_dict(back["measurements"]["final_loss"]).value == 2.5
    verdict = json.loads((dl / "verdict.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["rows"][0]["p"] is None
    assert json.loads((dl / "config.json").read_text())["data"]["long"] == "x" * 10_000
    assert (dl / "plots" / "per_layer.png").read_bytes() == b"\x89PNG fake"
    # sqlite artifacts go beside the database, not into the cwd
    assert Path(sqlite_uri[len("sqlite:///"):]).parent.joinpath("mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()

    children = c.search_runs([run.info.experiment_id],
                             filter_string=f"tags.mlflow.parentRunId = '{res.run_id}'", order_by=["tags.seed"])
    assert [ch.info.run_name for ch in children] == [f"{run.info.run_name}:seed{s}" for s in (0, 1)]
    for s, ch in enumerate(children):
        assert ch.info.status == "FINISHED"
        assert ch.data.params["init_seed"] == str(100 + s) and ch.data.params["data_seed"] == str(200 + s)
        assert ch.data.tags["role"] == "candidate" and ch.data.tags["seed"] == str(s)
        loss = sorted((m.step, m.value) for m in c.get_metric_history(ch.info.run_id, "loss"))
        assert loss == [(st, 5.0 - st / 10 - s / 100) for st in (0, 10, 20, 30)]
        copy = sorted(m.step for m in c.get_metric_history(ch.info.run_id, "copy_loss"))
        assert copy == [20, 30]  # NaN copy losses skipped
        final = 5.0 - 3.0 - s / 100
        assert ch.data.metrics["final_loss"] == pytest.approx(final)
        assert ch.data.metrics["final_perplexity"] == pytest.approx(math.exp(final))
        assert ch.data.metrics["tokens_per_s"] == 70000.0 + s and ch.data.metrics["wall_s"] == 1.5 + s

    # a second family of the same suite lands in the same experiment; baseline has no verdict
    res2 = log_family(**kwargs(sqlite_uri, tmp_path, analysis=make_analysis("adam"), role="baseline",
                               verdict=None, verdict_report=None, plots={}))
    assert res2.logged
    run2 = c.get_run(res2.run_id)
    assert run2.info.experiment_id == run.info.experiment_id
    assert "verdict" not in run2.data.tags and run2.data.tags["role"] == "baseline"
    assert "verdict.json" not in {f.path for f in c.list_artifacts(res2.run_id)}


def test_deleted_experiment_is_restored(sqlite_uri, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    c = client(sqlite_uri)
    eid = tracking.experiment_id(c, "seedstab/gone")
    assert tracking.experiment_id(c, "seedstab/gone") == eid
    c.delete_experiment(eid)
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        assert tracking.experiment_id(c, "seedstab/gone") == eid
    assert c.get_experiment(eid).lifecycle_stage == "active"
    assert "was deleted" in caplog.text


def test_bad_role_raises(tmp_path):
    with pytest.raises(ValueError, match="role must be one of baseline, candidate, got 'golden'"):
        log_family(**kwargs("sqlite:///unused.db", tmp_path, role="golden"))
    assert not (tmp_path / "unlogged").exists()


def test_missing_plot_is_skipped_with_warning(sqlite_uri, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        res = log_family(**kwargs(sqlite_uri, tmp_path, plots={"gone": tmp_path / "nope.png"}, seed_logs=[]))
    assert res.logged, res.error
    assert "nope.png does not exist" in caplog.text
    assert "plots" not in {f.path for f in client(sqlite_uri).list_artifacts(res.run_id)}


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


def test_malformed_seed_log_falls_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = log_family(**kwargs("sqlite:///never.db", tmp_path, seed_logs=[{"curve": [["x", 1.0]]}]))
    assert not res.logged and "could not build the MLflow payload" in res.error
    assert (res.fallback_path / "analysis.json").exists()
    assert not (tmp_path / "never.db").exists()


def test_fallback_write_failure_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "unlogged"
    blocker.write_text("a file where the fallback dir should be")
    uri = f"http://127.0.0.1:{free_port()}"
    res = log_family(**kwargs(uri, tmp_path, fallback_dir=blocker))
    assert not res.logged and res.fallback_path is None
    assert "unreachable" in res.error and "fallback write" in res.error


# ---------------------------------------------------------------------------- concurrency


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
    res = log_family(**kwargs(uri, tmp, analysis=make_analysis(sys.argv[5]), seed_logs=[]))
    print("RESULT", res.logged, res.run_id, res.error)
    sys.exit(0 if res.logged else 1)
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
    assert sorted(r.info.run_name.rsplit(":", 1)[1] for r in runs) == ["fa", "fb"]
    assert [e.name for e in c.search_experiments()].count("seedstab/smoke") == 1


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
    assert fb.parent == tmp_path / "unlogged" and fb.name.endswith("-tests_test_x.py_test_heads_adamw")
    assert json.loads((fb / "analysis.json").read_text()) == json.loads(json.dumps(make_analysis().to_dict()))
    assert (fb / "plots" / "per_layer.png").read_bytes() == b"\x89PNG fake"
    assert json.loads((fb / "verdict.json").read_text())["verdict"] == "pass"
    rec = json.loads((fb / "mlflow.json").read_text())
    assert rec["uri"] == uri and rec["experiment"] == "seedstab/smoke" and rec["error"] == res.error
    assert rec["params"]["train.lr"] == "0.001" and rec["tags"]["role"] == "candidate"
    assert ["head_stability.all_anchors", 0.85, 1] in rec["metrics"]
    assert len(rec["children"]) == 2 and ["copy_loss", 3.8, 20] in rec["children"][0]["metrics"]
    # a second fallback of the same test in the same instant gets its own directory
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
    print(f"logged through http in {time.perf_counter() - t0:.2f} s")
    assert res.logged, res.error
    assert tracking.run_url(mlflow_server, res.run_id) == f"{mlflow_server}/#/runs/{res.run_id}"
    c = client(mlflow_server)
    run = c.get_run(res.run_id)
    assert run.data.tags["fingerprint"] == "fp0123456789" and run.data.params["train.lr"] == "0.001"
    hist = sorted((m.step, m.value) for m in c.get_metric_history(res.run_id, "head_stability.all_anchors"))
    assert hist == [(0, 0.98), (1, 0.85), (2, 0.67)]
    dl = Path(c.download_artifacts(res.run_id, "analysis.json", str(tmp_path / "dl")))
    assert json.loads(dl.read_text())["fingerprint"] == "fp0123456789"
    assert "plots/per_layer.png" in [f.path for f in c.list_artifacts(res.run_id, "plots")]
    children = c.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{res.run_id}'")
    assert len(children) == 2
    loss = c.get_metric_history(children[0].info.run_id, "loss")
    assert sorted(m.step for m in loss) == [0, 10, 20, 30]
    assert list((tmp_path / "art").rglob("analysis.json"))  # the server stored the artifact


def test_the_ui_hint_names_the_store_in_use():
    from harness.tracking import ui_hint

    assert ui_hint("sqlite:////tmp/x y/mlflow.db") == \
        "look at them with `mlflow ui --backend-store-uri 'sqlite:////tmp/x y/mlflow.db'`"
    assert ui_hint("sqlite:///mlflow.db") == "look at them with `mlflow ui --backend-store-uri sqlite:///mlflow.db`"
    assert ui_hint("http://127.0.0.1:5000") == "open http://127.0.0.1:5000 in a browser"


def test_creating_the_sqlite_store_prints_nothing(tmp_path, capfd):
    from harness import tracking

    tracking.prepare(f"sqlite:///{tmp_path / 'fresh.db'}")
    out, err = capfd.readouterr()
    assert (tmp_path / "fresh.db").is_file()
    assert "Creating initial MLflow database tables" not in out + err


def test_unlogged_runs_are_replayed_into_a_server_started_later(mlflow_server, tmp_path, monkeypatch):
    """The run could not reach MLflow (a dead server); `seedstab mlflow sync` logs the kept folder
    to a real server afterwards as the same runs, moves it aside, and a second sync logs nothing."""
    from harness.cli import main
    from harness.mlflow_sync import SYNCED, pending, sync

    monkeypatch.chdir(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    res = log_family(**kwargs(dead, tmp_path))
    assert not res.logged and res.fallback_path is not None
    root = res.fallback_path.parent
    assert pending(root) == [res.fallback_path]

    assert main(["mlflow", "sync", "--dir", str(root), "--mlflow-uri", dead]) == 1  # still down: kept
    assert pending(root) == [res.fallback_path]

    out = sync(root, uri=mlflow_server)
    assert out.failed == {} and list(out.logged) == [str(res.fallback_path)]
    run_id = out.logged[str(res.fallback_path)]
    c = client(mlflow_server)
    run = c.get_run(run_id)
    assert run.data.tags["fingerprint"] == "fp0123456789" and run.data.params["train.lr"] == "0.001"
    assert run.data.tags["seedstab.replayed_from"] == res.fallback_path.name
    assert run.info.status == "FINISHED"
    hist = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "head_stability.all_anchors"))
    assert hist == [(0, 0.98), (1, 0.85), (2, 0.67)]
    assert "analysis.json" in [f.path for f in c.list_artifacts(run_id)]
    assert "mlflow.json" not in [f.path for f in c.list_artifacts(run_id)]
    children = c.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 2
    assert pending(root) == [] and (root / SYNCED / res.fallback_path.name / "mlflow.json").is_file()
    assert main(["mlflow", "sync", "--dir", str(root), "--mlflow-uri", mlflow_server]) == 0
    assert len(c.search_runs([run.info.experiment_id])) == 3  # nothing logged twice
