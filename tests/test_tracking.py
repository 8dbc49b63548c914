"""Tests for harness.tracking: URI resolution, the experiment's kind, a family run and its
verdicts logged to sqlite, one run per family per session, and every fallback path. (The
fallbacks: tests/test_tracking_fallback.py; the real server, the cross-process race and
the sync replay: tests/test_tracking_server.py.)"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import tracking
from harness import tracking_client as tc
from harness import tracking_payload as tp
from harness.results import Analysis, Measurement
from harness.tracking import LogResult, log_family, log_verdict, prepare, tracking_uri


REPO = Path(__file__).resolve().parents[1]
L = 3  # layers in the fake analysis
SESSION = "20261202-000000-abcdef"


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
        # per head [L, H]: not a metric (H charts each), a row per head in intervals.csv
        m("head_stability.per_head", [[0.5, 0.6], [0.7, 0.8], [0.9, 1.0]], [[0.4, 0.5]] * 3, [[0.6, 0.7]] * 3),
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
ROWS = [{"metric": "head_stability.all_anchors", "layer": 0, "reference": 0.9, "candidate": 0.98, "delta": 0.08,
         "lo": 0.01, "hi": 0.15, "p": float("nan"), "mde": 0.04, "tolerance": 0.03, "flag": "ok"},
        {"metric": "head_stability.all_anchors", "layer": 1, "reference": 0.9, "candidate": 0.85,
         "delta": -0.05, "lo": -0.09, "hi": -0.01, "p": 0.0156, "mde": 0.04, "tolerance": 0.03,
         "flag": "REGRESSED"}]


def kwargs(uri: str, tmp: Path, **over) -> dict:
    plot = tmp / "layers.png"
    if not plot.exists():
        plot.write_bytes(b"\x89PNG fake")
    kw = dict(uri=uri, suite="smoke", analysis=make_analysis(), config=CONFIG, seed_logs=make_seed_logs(),
              role="candidate", session=SESSION, plots={"per_layer": plot}, tags={"ci_job": "42"},
              fallback_dir=tmp / "unlogged")
    kw.update(over)
    return kw


def record(label: str = "check.adamw", verdict: str = "regressed", rows=ROWS, **over) -> dict:
    kw = dict(test=f"suites/smoke/smoke.yaml::{label}", label=label, run_name="smoke/adamw", verdict=verdict,
              outcome="failed" if verdict in ("regressed", "fail") else "passed",
              verdicts=[{"status": verdict, "rows": rows, "design": "paired on 3 seeds", "reasons": [],
                         "notes": ["a note"], "baseline_path": "baselines/cpu/smoke/adamw.json"}] if rows else [],
              report="seedstab: the gate's text report", failure="")
    kw.update(over)
    return tp.verdict_record(**kw)


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
    assert tc.sqlite_path("sqlite:////abs/m.db") == Path("/abs/m.db")
    assert tc.sqlite_path("sqlite:///rel/m.db?timeout=5") == tmp_path.resolve() / "rel/m.db"
    assert tc.sqlite_path("sqlite://") is None
    assert tc.sqlite_path("sqlite:///:memory:") is None
    assert tc.sqlite_path("http://h:5000") is None


def test_run_and_experiment_urls_open_the_model_training_view():
    assert tracking.run_url("http://h:5000/", "abc") == "http://h:5000/#/runs/abc"
    assert tracking.run_url("https://h", "abc", experiment_id="3") == \
        "https://h/#/experiments/3/runs/abc?workflowType=machine_learning"  # the 3.x UI's training view
    assert tracking.run_url("sqlite:////x.db", "abc") is None
    assert tracking.run_url("http://h", "") is None
    assert tracking.experiment_url("http://h/", "3") == \
        "http://h/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=seedstab"


def test_the_ui_hint_names_the_store_in_use():
    assert tracking.ui_hint("sqlite:////tmp/x y/mlflow.db") == \
        "look at them with `mlflow ui --backend-store-uri 'sqlite:////tmp/x y/mlflow.db'`"
    assert tracking.ui_hint("sqlite:///mlflow.db") == \
        "look at them with `mlflow ui --backend-store-uri sqlite:///mlflow.db`"
    assert tracking.ui_hint("sqlite:///mlflow.db", "4").endswith(
        ", then http://127.0.0.1:5000/#/experiments/4/runs?workflowType=machine_learning&viewStateShareKey=seedstab")
    assert tracking.ui_hint("http://127.0.0.1:5000") == "open http://127.0.0.1:5000 in a browser"
    assert tracking.ui_hint("http://127.0.0.1:5000", "4") == ("open http://127.0.0.1:5000/#/experiments/4/runs"
                                                             "?workflowType=machine_learning&viewStateShareKey=seedstab"
                                                             " in a browser")


def test_import_is_cheap():
    code = ("import sys, harness.tracking, harness.session_tracking, harness.mlflow_sync; "
            "assert 'mlflow' not in sys.modules, 'mlflow imported eagerly'")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ---------------------------------------------------------------------------- pure helpers


def test_flatten_and_param_values():
    flat = tp.flatten(CONFIG)
    assert flat["train.lr"] == 1e-3 and flat["model.n_layers"] == L and flat["seeds"] == [0, 1, 2]
    assert tp.param_value([0, 1]) == "[0, 1]"
    long = tp.param_value("y" * 7000)
    assert len(long) <= tp.MAX_PARAM_VALUE and "truncated, 7000 chars" in long


def test_sanitize_key():
    from mlflow.utils.validation import _validate_metric_name

    for raw in ["a.b-c d/e_f", "bad:key[0]*", "x/../y", "/lead", "a//b", "é", "k" * 400]:
        key = tp.sanitize_key(raw)
        _validate_metric_name(key)  # raises if MLflow would reject it
        assert len(key) <= 250
    assert tp.sanitize_key("head_stability.all_anchors") == "head_stability.all_anchors"
    assert tp.sanitize_key("a" * 300 + "1") != tp.sanitize_key("a" * 300 + "2")


def test_metric_points_shapes_and_nan():
    assert tp.metric_points("s", 1.5) == [("s", 1.5, 0)]
    assert tp.metric_points("p", [1.0, float("nan"), 3.0]) == [("p", 1.0, 0), ("p", 3.0, 2)]
    assert tp.metric_points("h", [[1.0, 2.0], [3.0, 4.0]]) == []  # per head: intervals.csv only
    assert tp.metric_points("x", np.zeros((2, 2, 2))) == []


def test_interval_rows_hold_every_value_and_its_interval():
    a = make_analysis()
    rows = tp.interval_rows(a)
    # the obvious reference: walk every measurement's arrays by hand
    expect = []
    for name, m in sorted(a.measurements.items()):
        v = np.asarray(m.value, float)
        for idx in np.ndindex(v.shape):
            lo, hi = np.broadcast_to(m.lo, v.shape)[idx], np.broadcast_to(m.hi, v.shape)[idx]
            expect.append((name, idx[0] if idx else None, idx[1] if len(idx) > 1 else None,
                           None if math.isnan(v[idx]) else float(v[idx]), float(lo), float(hi)))
    assert [(r["metric"], r["layer"], r["head"], r["value"], r["lo"], r["hi"]) for r in rows] == expect
    back = list(csv.DictReader(io.StringIO(tp.intervals_csv(rows))))
    assert len(back) == len(rows) == 1 + 1 + 3 + 3 + 6
    nan_layer = next(r for r in back if r["metric"] == "resid_cka.debiased.post" and r["layer"] == "1")
    assert nan_layer["value"] == "" and nan_layer["lo"] == "0.8"
    head = next(r for r in back if r["metric"] == "head_stability.per_head" and r["layer"] == "2" and r["head"] == "1")
    assert (head["value"], head["lo"], head["hi"]) == ("1", "0.5", "0.7")


def test_verdict_labels_and_the_worst_verdict():
    assert tp.verdict_label("test_heads[adam]") == "test_heads.adam"
    assert tp.verdict_label("test_x[a-0.1]") == "test_x.a-0.1"
    assert tp.verdict_label("adam", check=True) == "check.adam"
    assert tp.verdict_label("plain") == "plain"
    assert tp.summary_verdict(["pass", "inconclusive", "pass"]) == "inconclusive"
    assert tp.summary_verdict(["pass", "regressed", "fail"]) == "fail"
    assert tp.summary_verdict(["pass", "something new"]) == "something new"  # unknown: ranked as a failure
    assert tp.summary_verdict(["updated", "pass"]) == "updated"
    assert tp.summary_verdict([]) == ""


def test_verdict_markdown_is_the_table_that_decided_it():
    md = tp.verdict_markdown(record())
    lines = md.splitlines()
    assert lines[0] == "# REGRESSED: check.adamw on smoke/adamw"
    head = next(i for i, x in enumerate(lines) if x.startswith("| metric"))
    table = lines[head:head + 4]
    assert len({len(x) for x in table}) == 1  # padded: reads as a table raw too
    cells = [c.strip() for c in table[3].strip("|").split("|")]
    assert cells == ["head_stability.all_anchors", "1", "0.9000", "0.8500", "-0.0500", "[-0.0900, -0.0100]",
                     "0.016", "0.0400", "0.0300", "REGRESSED"]
    assert [c.strip() for c in table[2].strip("|").split("|")][6] == "nan"
    assert "design: paired on 3 seeds" in md and "- a note" in md and "the gate's text report" in md
    plain = tp.verdict_markdown(record(label="test_x", verdict="fail", rows=None, failure="AssertionError: boom"))
    assert "no gate table" in plain and "AssertionError: boom" in plain and "| metric" not in plain


# ---------------------------------------------------------------------------- batches


def test_chunks_respect_batch_limits():
    params = [(f"p{i}", "v" * 5000) for i in range(250)]
    metrics = [(f"m{i % 7}", float(i), i) for i in range(2500)]
    chunks = list(tc.chunks(params, metrics))
    assert [p for c, _ in chunks for p in c] == params
    assert [m for _, c in chunks for m in c] == metrics
    for p, m in chunks:
        assert len(p) <= 100 and len(m) <= 1000 and len(p) + len(m) <= 1000
        assert sum(len(k) + len(v) for k, v in p) < 1_000_000
    assert list(tc.chunks([], [])) == []
    assert len(list(tc.chunks([("a", "b")], [("m", 1.0, 0)]))) == 1  # small runs: one batch


def test_http_limits_set_and_restored(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own choice stays
    with tc.http_limits("http://h"):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    with tc.http_limits("sqlite:///x.db"):
        assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


# ---------------------------------------------------------------------------- experiments


def test_experiment_id_race_gets_again():
    from mlflow.entities import Experiment, ExperimentTag
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    exp = Experiment("7", "seedstab/s", "loc", "active", tags=[ExperimentTag(tc.EXPERIMENT_KIND_TAG, "x")])

    class Racy:  # another process creates it between our get and our create
        tracking_uri = "http://h"
        calls = 0

        def get_experiment_by_name(self, name):
            self.calls += 1
            return None if self.calls == 1 else exp

        def create_experiment(self, name, artifact_location=None, tags=None):
            raise MlflowException("Experiment 'seedstab/s' already exists.", error_code=RESOURCE_ALREADY_EXISTS)

        def set_experiment_tag(self, eid, key, value):
            self.tags_set = [*getattr(self, "tags_set", []), (eid, key)]

    racy = Racy()
    assert tracking.experiment_id(racy, "seedstab/s") == "7"
    assert racy.tags_set == [("7", tc.VIEW_TAG)]  # its kind was chosen already: left alone

    class Broken(Racy):
        def create_experiment(self, name, artifact_location=None, tags=None):
            raise MlflowException("permission denied")

    with pytest.raises(MlflowException, match="permission denied"):
        tracking.experiment_id(Broken(), "seedstab/s")


def test_the_experiment_opens_on_its_runs(sqlite_uri, tmp_path, monkeypatch):
    """MLflow 3 opens an experiment on GenAI traces unless it is tagged as model training."""
    monkeypatch.chdir(tmp_path)
    c = client(sqlite_uri)
    eid = tracking.experiment_id(c, "seedstab/new")
    exp = c.get_experiment(eid)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "one run per family per pytest session" in exp.tags["mlflow.note.content"]
    # the runs table's shared view (the link's viewStateShareKey): verdict, session, role columns
    view = json.loads(exp.tags["mlflow.sharedViewState.seedstab"])
    assert view["selectedColumns"] == ["tags.`verdict`", "tags.`session`", "tags.`role`"]
    old = c.create_experiment("seedstab/old")  # made before seedstab tagged its experiments
    assert "mlflow.experimentKind" not in c.get_experiment(old).tags
    assert tracking.experiment_id(c, "seedstab/old") == old
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert c.get_experiment(old).tags["mlflow.sharedViewState.seedstab"] == tc.VIEW_STATE
    chosen = c.create_experiment("seedstab/chosen", tags={"mlflow.experimentKind": "genai_development"})
    tracking.experiment_id(c, "seedstab/chosen")  # a kind someone chose in the UI stays
    assert c.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


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


def test_creating_the_sqlite_store_prints_nothing(tmp_path, capfd):
    tracking.prepare(f"sqlite:///{tmp_path / 'fresh.db'}")
    out, err = capfd.readouterr()
    assert (tmp_path / "fresh.db").is_file()
    assert "Creating initial MLflow database tables" not in out + err


def test_family_run_and_its_verdicts_round_trip(sqlite_uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = log_family(**kwargs(sqlite_uri, tmp_path))
    assert res.logged and res.created and res.error is None and res.fallback_path is None
    assert (res.run_name, res.experiment, res.session) == ("smoke/adamw", "seedstab/smoke", SESSION)
    c = client(sqlite_uri)
    run = c.get_run(res.run_id)
    assert run.info.run_name == "smoke/adamw" and run.info.status == "FINISHED"
    assert c.get_experiment(run.info.experiment_id).name == "seedstab/smoke" == res.experiment
    assert run.info.experiment_id == res.experiment_id

    p = run.data.params
    assert p["train.lr"] == "0.001" and p["model.n_layers"] == str(L) and p["seeds"] == "[0, 1, 2]"
    assert len(p["data.long"]) <= 6000 and p["data.long"].endswith("see config.json]")

    t = run.data.tags
    expect = {"suite": "smoke", "family": "adamw", "fingerprint": "fp0123456789", "role": "candidate",
              "device": "cpu-2t", "probe_digest": "probe42", "git_commit": "unknown", "ci_job": "42",
              "seeds": "0,1,2", "session": SESSION}
    assert {k: t.get(k) for k in expect} == expect
    assert "verdict" not in t and "smoke/adamw" in t["mlflow.note.content"]
    import torch

    assert t["torch_version"] == torch.__version__ and t["seedstab_version"]

    mt = run.data.metrics  # values only: no interval bounds, no per-head series
    assert sorted(mt) == ["final_loss", "head_stability.all_anchors", "head_stability.mean",
                          "resid_cka.debiased.post"]
    assert mt["head_stability.mean"] == 0.8 and mt["final_loss"] == 2.5
    hist = sorted((m.step, m.value) for m in c.get_metric_history(res.run_id, "head_stability.all_anchors"))
    assert hist == [(0, 0.98), (1, 0.85), (2, 0.67)]
    cka = sorted((m.step, m.value) for m in c.get_metric_history(res.run_id, "resid_cka.debiased.post"))
    assert cka == [(0, 0.81), (2, 0.85)]  # the NaN layer is skipped

    arts = {f.path for f in c.list_artifacts(res.run_id)}
    assert arts == {"analysis.json", "config.json", "intervals.csv", "plots"}
    assert [f.path for f in c.list_artifacts(res.run_id, "plots")] == ["plots/per_layer.png"]
    dl = Path(c.download_artifacts(res.run_id, "", str(tmp_path / "dl")))
    back = json.loads((dl / "analysis.json").read_text())
    assert back == json.loads(json.dumps(make_analysis().to_dict()))
    assert back["measurements"]["resid_cka.debiased.post"]["value"][1] is None
    assert Measurement.from_dict(back["measurements"]["final_loss"]).value == 2.5
    assert (dl / "intervals.csv").read_text() == tp.intervals_csv(tp.interval_rows(make_analysis()))
    assert json.loads((dl / "config.json").read_text())["data"]["long"] == "x" * 10_000
    assert (dl / "plots" / "per_layer.png").read_bytes() == b"\x89PNG fake"
    # sqlite artifacts go beside the database, not into the cwd
    assert Path(sqlite_uri[len("sqlite:///"):]).parent.joinpath("mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()

    children = c.search_runs([run.info.experiment_id],
                             filter_string=f"tags.mlflow.parentRunId = '{res.run_id}'", order_by=["tags.seed"])
    assert [ch.info.run_name for ch in children] == ["smoke/adamw/seed0", "smoke/adamw/seed1"]
    for s, ch in enumerate(children):
        assert ch.info.status == "FINISHED"
        assert ch.data.params["init_seed"] == str(100 + s) and ch.data.params["data_seed"] == str(200 + s)
        assert ch.data.tags["role"] == "candidate" and ch.data.tags["seed"] == str(s)
        assert ch.data.tags["session"] == SESSION and "mlflow.note.content" not in ch.data.tags
        loss = sorted((m.step, m.value) for m in c.get_metric_history(ch.info.run_id, "loss"))
        assert loss == [(st, 5.0 - st / 10 - s / 100) for st in (0, 10, 20, 30)]
        copy = sorted(m.step for m in c.get_metric_history(ch.info.run_id, "copy_loss"))
        assert copy == [20, 30]  # NaN copy losses skipped
        final = 5.0 - 3.0 - s / 100
        assert ch.data.metrics["final_loss"] == pytest.approx(final)
        assert ch.data.metrics["final_perplexity"] == pytest.approx(math.exp(final))
        assert ch.data.metrics["tokens_per_s"] == 70000.0 + s and ch.data.metrics["wall_s"] == 1.5 + s

    # two tests' verdicts on the run: a tag each, their tables, the worst as `verdict`
    v1 = log_verdict(res, record=record("test_heads.adamw", "pass", rows=None))
    assert v1.logged and v1.run_id == res.run_id and not v1.created
    assert c.get_run(res.run_id).data.tags["verdict"] == "pass"
    v2 = log_verdict(res, record=record())
    assert v2.logged
    t = c.get_run(res.run_id).data.tags
    assert {k: v for k, v in t.items() if k.startswith("verdict")} == {
        "verdict.test_heads.adamw": "pass", "verdict.check.adamw": "regressed", "verdict": "regressed"}
    assert "| `check.adamw` | regressed |" in t["mlflow.note.content"]
    assert sorted(f.path for f in c.list_artifacts(res.run_id, "verdicts")) == [
        "verdicts/check.adamw.json", "verdicts/check.adamw.md", "verdicts/test_heads.adamw.json",
        "verdicts/test_heads.adamw.md"]
    vd = Path(c.download_artifacts(res.run_id, "verdicts", str(tmp_path / "v")))
    rec = json.loads((vd / "check.adamw.json").read_text())
    assert rec["rows"][1]["flag"] == "REGRESSED" and rec["rows"][0]["p"] is None  # strict JSON
    assert (vd / "check.adamw.md").read_text() == tp.verdict_markdown(record())

    # a second family of the same suite lands in the same experiment, as its own run
    res2 = log_family(**kwargs(sqlite_uri, tmp_path, analysis=make_analysis("adam"), role="baseline", plots={}))
    assert res2.logged and res2.created and res2.run_id != res.run_id
    run2 = c.get_run(res2.run_id)
    assert run2.info.experiment_id == run.info.experiment_id and run2.info.run_name == "smoke/adam"
    assert "verdict" not in run2.data.tags and run2.data.tags["role"] == "baseline"


def test_one_run_per_family_per_session(sqlite_uri, tmp_path, monkeypatch):
    """A family used again in the same session (here: by another process's call, as an
    xdist worker would) is found, not logged twice; another session gets its own run."""
    monkeypatch.chdir(tmp_path)
    calls = []
    first = log_family(**kwargs(sqlite_uri, tmp_path, plots=lambda: calls.append(1) or {}))
    again = log_family(**kwargs(sqlite_uri, tmp_path, plots=lambda: calls.append(2) or {}))
    assert first.created and not again.created and again.logged and again.run_id == first.run_id
    assert calls == [1]  # plots are drawn only for the run that is created
    other = log_family(**kwargs(sqlite_uri, tmp_path, session="another-session"))
    assert other.created and other.run_id != first.run_id
    c = client(sqlite_uri)
    runs = c.search_runs([first.experiment_id])
    parents = sorted((r.data.tags["session"], r.info.run_name) for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parents == sorted([("another-session", "smoke/adamw"), (SESSION, "smoke/adamw")])
    assert len(runs) == 2 + 2 * 2  # and their seed runs, once each


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
