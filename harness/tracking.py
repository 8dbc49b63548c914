"""The one module that talks to MLflow.

One experiment per suite (``seedstab/<suite>``); a parent run per family, named
``<test>:<family>`` (config params, scalar measurements and their CI as metrics, per-layer
measurements as steps with step = layer index, ``analysis.json``, ``verdict.json``,
``config.json`` and ``plots/`` as artifacts); a child run per seed (loss curve as steps,
final loss and perplexity, throughput). Tags on every run: suite, test, family,
fingerprint, role, verdict, git_commit, device, torch_version, seedstab_version,
probe_digest.

Where it goes: ``--mlflow-uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<cwd>/mlflow.db``;
for a sqlite URI the artifacts go to ``mlartifacts/`` beside the database file. Look at the
runs with::

    mlflow ui --backend-store-uri sqlite:///mlflow.db

(or open the tracking server's URL; :func:`run_url` gives a run's link there).

Logging never fails a test: when the server is unreachable or any MLflow call fails,
:func:`log_family` writes everything it would have logged under
``.seedstab/unlogged/<timestamp>-<test>/`` and returns ``LogResult(logged=False, ...)``.

Parallel workers: call :func:`prepare` once, before they start. Several processes logging
into an existing sqlite file works; two processes *creating* one at the same moment fails,
so :func:`prepare` creates the schema under a file lock. ``mlflow`` is imported inside the
functions, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from harness.results import Analysis

logger = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "seedstab/"
ROLES = ("baseline", "candidate")
FALLBACK_DIR = Path(".seedstab/unlogged")

# MLflow's request limits (mlflow.utils.validation, 3.17): a log_batch holds at most 1000
# metrics, 100 params, 100 tags, 1000 entities and 1 MB; a param value at most 6000 chars,
# a tag value 8000, a key 250.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_BYTES = 500_000  # half of the 1 MB request limit: our size estimate is rough
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250

# A dead server must cost seconds, not MLflow's default of 7 retries with backoff (minutes).
REACHABILITY_TIMEOUT_S = 5.0
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
PREPARE_LOCK_TIMEOUT_S = 300.0


class TrackingError(RuntimeError):
    """The tracking store cannot be prepared (message says where and what to do)."""


@dataclass(frozen=True)
class LogResult:
    """What :func:`log_family` did.

    ``logged``: everything reached MLflow. ``run_id``: the parent run (when logging failed
    half way, the partial run, marked FAILED). ``error``: one line, why it failed.
    ``fallback_path``: the directory holding what could not be logged.
    """

    logged: bool
    run_id: str | None
    uri: str
    experiment: str
    error: str | None = None
    fallback_path: Path | None = None


# ---------------------------------------------------------------------------- URIs


def default_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``, computed now (the cwd may have changed)."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


@contextlib.contextmanager
def _quiet_mlflow_db():
    """MLflow logs two INFO lines ("Creating initial MLflow database tables...") straight to
    the console when it creates a sqlite store; in a test run they are noise."""
    import logging

    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def ui_hint(uri: str) -> str:
    """How to look at the runs logged to ``uri``: a server is opened in a browser, a local
    store (sqlite, a folder) through ``mlflow ui`` on that very store."""
    import shlex

    if uri.startswith(("http://", "https://", "databricks")):
        return f"open {uri} in a browser"
    return f"look at them with `mlflow ui --backend-store-uri {shlex.quote(uri)}`"


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI: ``explicit`` (``--mlflow-uri``) > ``$MLFLOW_TRACKING_URI`` > sqlite in cwd."""
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return env or default_uri()


def experiment_name(suite: str) -> str:
    return f"{EXPERIMENT_PREFIX}{suite}"


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (SQLAlchemy rules: ``sqlite:///rel.db``,
    ``sqlite:////abs.db``); ``None`` for other schemes and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


def run_url(uri: str, run_id: str, *, experiment_id: str | None = None) -> str | None:
    """A link to the run in the tracking server's UI, or ``None`` for non-http URIs (use
    ``mlflow ui --backend-store-uri <uri>`` there)."""
    if not _is_http(uri) or not run_id:
        return None
    base = uri.rstrip("/")
    if experiment_id is not None:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{base}/#/runs/{run_id}"  # the UI's direct run route redirects to the run page


# ---------------------------------------------------------------------------- setup


def check_reachable(uri: str, *, timeout: float = REACHABILITY_TIMEOUT_S) -> str | None:
    """``None`` if the http(s) tracking server answers ``GET /health``, else a one-line
    reason. Non-http URIs are always "reachable". One try, no retries."""
    if not _is_http(uri):
        return None
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http only)
            if resp.status == 200:
                return None
            return f"tracking server {uri} answered {resp.status} on /health"
    except urllib.error.HTTPError as e:
        return f"tracking server {uri} answered {e.code} on /health"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return f"tracking server {uri} is unreachable ({reason})"


def prepare(uri: str) -> None:
    """Make ``uri`` ready for several processes to log into; call once before workers start.

    sqlite: creates the database file and its schema under a file lock beside it
    (``<db>.lock``), so concurrent callers wait for the first one; idempotent. http(s): a
    reachability check that only warns (logging falls back to files if the server stays
    down). Other URIs: nothing.

    Raises :class:`TrackingError` when a sqlite database cannot be created.
    """
    if _is_http(uri):
        reason = check_reachable(uri)
        if reason:
            logger.warning("%s; results will be written under %s instead", reason, FALLBACK_DIR)
        return
    db = _sqlite_path(uri)
    if db is None:
        return
    import filelock

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(db) + ".lock", timeout=PREPARE_LOCK_TIMEOUT_S), _quiet_mlflow_db():
            _client(uri).search_experiments(max_results=1)  # creates/migrates the schema
    except filelock.Timeout as e:
        raise TrackingError(f"{db}: another process held {db}.lock for {PREPARE_LOCK_TIMEOUT_S:.0f} s; "
                            f"if no seedstab run is active, delete the lock file") from e
    except Exception as e:  # noqa: BLE001 (sqlalchemy/mlflow raise many types)
        raise TrackingError(f"cannot create the MLflow database {db}: {_one_line(e)}; "
                            f"pass --mlflow-uri or set MLFLOW_TRACKING_URI to a writable location") from e


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name`` (e.g. ``seedstab/paper``), created if missing.

    Race-safe: when another process creates it between our lookup and our create, the
    create fails with RESOURCE_ALREADY_EXISTS and we look it up again. A deleted experiment
    of that name is restored (MLflow keeps deleted names reserved). For sqlite stores the
    artifacts go to ``mlartifacts/`` beside the database (MLflow's client default would
    be ``./mlruns``, which MLflow ≥ 3.13 treats as a deprecated file store).
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        db = _sqlite_path(str(getattr(client, "tracking_uri", "")))
        if db is not None:
            location = (db.parent / "mlartifacts" / _safe_filename(name)).as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(getattr(e, "error_code", "")) \
                    and "already exists" not in str(e):
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        logger.warning("MLflow experiment %r was deleted; restoring it to log into it", name)
        client.restore_experiment(exp.experiment_id)
    return str(exp.experiment_id)


# ---------------------------------------------------------------------------- payload


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def sanitize_key(name: str) -> str:
    """A valid MLflow metric/param key: characters outside ``[A-Za-z0-9_.- /]`` become
    ``_`` (colons too: they are invalid on Windows servers), no empty/``.``/``..`` path
    segments, at most 250 chars (a long name keeps a hash of the original, so two long
    names stay distinct)."""
    key = re.sub(r"[^\w.\- /]", "_", str(name), flags=re.ASCII)
    parts = [p if p not in ("", ".", "..") else "_" for p in key.split("/")]
    key = "/".join(parts)
    if len(key) > MAX_KEY:
        digest = hashlib.sha1(str(name).encode()).hexdigest()[:8]
        key = f"{key[:MAX_KEY - 9]}-{digest}"
    return key


def _param_value(v: Any) -> str:
    if isinstance(v, str):
        s = v
    elif isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, sort_keys=True, default=str)
    else:
        s = str(v)
    if len(s) > MAX_PARAM_VALUE:
        marker = f"...[truncated, {len(s)} chars; see config.json]"
        s = s[:MAX_PARAM_VALUE - len(marker)] + marker
    return s


def _metric_points(name: str, arr: Any) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` points: a scalar at step 0, ``[L]`` with step = layer,
    ``[L, H]`` as one ``<name>.head<h>`` series per head; higher ranks and non-finite values
    are skipped (``analysis.json`` has everything)."""
    a = np.asarray(arr, dtype=float)
    pts: list[tuple[str, float, int]] = []
    if a.ndim == 0:
        pts.append((name, float(a), 0))
    elif a.ndim == 1:
        pts.extend((name, float(v), i) for i, v in enumerate(a))
    elif a.ndim == 2:
        for h in range(a.shape[1]):
            pts.extend((f"{name}.head{h}", float(v), i) for i, v in enumerate(a[:, h]))
    return [(sanitize_key(k), v, s) for k, v, s in pts if math.isfinite(v)]


def _analysis_metrics(analysis: Analysis) -> list[tuple[str, float, int]]:
    pts: list[tuple[str, float, int]] = []
    for name, m in sorted(analysis.measurements.items()):
        pts += _metric_points(name, m.value)
        pts += _metric_points(f"{name}.lo", m.lo)
        pts += _metric_points(f"{name}.hi", m.hi)
    return pts


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _seed_payload(i: int, log: Mapping[str, Any], run_name: str) -> dict[str, Any]:
    seed = log.get("seed", i)
    params = {k: _param_value(log[k]) for k in ("seed", "init_seed", "data_seed", "steps", "threads", "device")
              if log.get(k) is not None}
    metrics: list[tuple[str, float, int]] = []
    curve = log.get("curve") or []
    for row in curve:
        step = int(row[0])
        for col, key in ((1, "loss"), (2, "copy_loss")):
            if len(row) > col and (v := _finite(row[col])) is not None:
                metrics.append((key, v, step))
    final = _finite(log.get("final_loss"))
    if final is None and curve:
        final = _finite(curve[-1][1])
    if final is not None:
        metrics.append(("final_loss", final, 0))
        if final < 700:  # exp overflows a float beyond ~709
            metrics.append(("final_perplexity", math.exp(final), 0))
    for key in ("tokens_per_s", "wall_s", "final_copy_loss"):
        if (v := _finite(log.get(key))) is not None:
            metrics.append((key, v, 0))
    return {"run_name": f"{run_name}:seed{seed}", "seed": seed, "params": params, "metrics": metrics}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else "unknown"


def _version(dist: str, module: str) -> str:
    mod = sys.modules.get(module)
    if mod is not None and getattr(mod, "__version__", None):
        return str(mod.__version__)
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _build_payload(*, suite: str, test: str, analysis: Analysis, config: Mapping[str, Any],
                   seed_logs: list[Mapping[str, Any]], role: str, verdict: str | None,
                   tags: Mapping[str, str]) -> dict[str, Any]:
    run_name = f"{test}:{analysis.family}"
    base_tags = {
        "suite": suite, "test": test, "family": analysis.family, "fingerprint": analysis.fingerprint,
        "role": role, "git_commit": _git_commit(), "device": analysis.device_class,
        "torch_version": _version("torch", "torch"), "seedstab_version": _version("seedstab", "harness"),
        "probe_digest": analysis.probe_digest, "seeds": ",".join(map(str, analysis.seeds)),
    }
    if verdict is not None:
        base_tags["verdict"] = verdict
    base_tags.update({str(k): str(v) for k, v in tags.items()})
    base_tags = {k: v[:MAX_TAG_VALUE] for k, v in base_tags.items()}
    params: dict[str, str] = {}
    for k, v in flatten(config).items():
        params.setdefault(sanitize_key(k), _param_value(v))
    return {
        "experiment": experiment_name(suite), "run_name": run_name, "tags": base_tags,
        "params": params, "metrics": _analysis_metrics(analysis),
        "children": [_seed_payload(i, log, run_name) for i, log in enumerate(seed_logs)],
    }


def _write_files(dest: Path, *, analysis: Analysis, config: Mapping[str, Any],
                 verdict: str | None, verdict_report: Mapping[str, Any] | None,
                 plots: Mapping[str, Path]) -> None:
    """The artifact tree: analysis.json, config.json, verdict.json, plots/<name>."""
    dest.mkdir(parents=True, exist_ok=True)
    _dump(dest / "analysis.json", analysis.to_dict())
    _dump(dest / "config.json", dict(config))
    if verdict_report is not None or verdict is not None:
        report = dict(verdict_report) if verdict_report is not None else {}
        if verdict is not None:
            report.setdefault("verdict", verdict)
        _dump(dest / "verdict.json", report)
    for name, src in plots.items():
        src = Path(src)
        if not src.is_file():
            logger.warning("plot %r: %s does not exist; not logged", name, src)
            continue
        target = _safe_filename(name)
        if not Path(target).suffix:
            target += src.suffix
        (dest / "plots").mkdir(exist_ok=True)
        shutil.copyfile(src, dest / "plots" / target)


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _jsonable(o: Any) -> Any:
    """Strict JSON: non-finite floats become null (as in Analysis.to_dict), numpy and paths
    become plain values, anything else its repr."""
    if isinstance(o, Mapping):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        return _jsonable(o.item())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if o is None or isinstance(o, (str, int, bool)):
        return o
    if isinstance(o, Path):
        return str(o)
    return repr(o)


# ---------------------------------------------------------------------------- logging


def log_family(*, uri: str, suite: str, test: str, analysis: Analysis, config: Mapping[str, Any],
               seed_logs: list[Mapping[str, Any]], role: str, verdict: str | None = None,
               verdict_report: Mapping[str, Any] | None = None, plots: Mapping[str, Path] = {},
               tags: Mapping[str, str] = {}, fallback_dir: Path = FALLBACK_DIR) -> LogResult:
    """Log one family to experiment ``seedstab/<suite>``: a parent run and a child run per
    seed (see the module docstring for what goes where).

    Never raises for tracking problems: on any failure everything is written under
    ``fallback_dir/<timestamp>-<test>/`` (``mlflow.json`` with runs, params, tags and
    metrics, plus the artifact tree) and ``LogResult(logged=False, error=..., fallback_path=...)``
    is returned. Raises ``ValueError`` only for a bad ``role``.
    """
    if role not in ROLES:
        raise ValueError(f"log_family: role must be one of {', '.join(ROLES)}, got {role!r}")
    exp_name = experiment_name(suite)
    try:
        payload = _build_payload(suite=suite, test=test, analysis=analysis, config=config,
                                 seed_logs=seed_logs, role=role, verdict=verdict, tags=tags)
    except Exception as e:  # noqa: BLE001 (a malformed seed log must not fail the test)
        payload = {"experiment": exp_name, "run_name": f"{test}:{analysis.family}", "unbuilt": repr(e)}
        return _fall_back(uri, exp_name, test, payload, f"could not build the MLflow payload: {_one_line(e)}",
                          None, fallback_dir, analysis, config, verdict, verdict_report, plots)
    t0 = time.perf_counter()
    holder: list[str] = []  # the parent run id, once created
    try:
        reason = check_reachable(uri)
        if reason:
            raise ConnectionError(reason)
        with _http_limits(uri):
            prepare(uri)
            client = _client(uri)
            exp_id = experiment_id(client, exp_name)
            _log_runs(client, exp_id, payload, holder, analysis=analysis, config=config, verdict=verdict,
                      verdict_report=verdict_report, plots=plots)
    except Exception as e:  # noqa: BLE001 (MLflow, sqlalchemy, requests, OS errors alike)
        return _fall_back(uri, exp_name, test, payload, _one_line(e), holder[0] if holder else None, fallback_dir,
                          analysis, config, verdict, verdict_report, plots)
    logger.info("logged %s to %s (run %s, %.1f s)", payload["run_name"], uri, holder[0], time.perf_counter() - t0)
    return LogResult(logged=True, run_id=holder[0], uri=uri, experiment=exp_name)


def _log_runs(client: Any, exp_id: str, payload: Mapping[str, Any], holder: list[str], *,
              analysis: Analysis, config: Mapping[str, Any], verdict: str | None,
              verdict_report: Mapping[str, Any] | None, plots: Mapping[str, Path]) -> None:
    """Parent run, its artifacts, then one child run per seed; each run's data in as few
    ``log_batch`` calls as the limits allow (one for our sizes). ``holder`` receives the
    parent's run id as soon as it exists, so a failure can report and close it."""
    with tempfile.TemporaryDirectory(prefix="seedstab-mlflow-") as tmp:
        _write_files(Path(tmp), analysis=analysis, config=config, verdict=verdict,
                     verdict_report=verdict_report, plots=plots)
        log_payload(client, exp_id, payload, holder, artifacts=Path(tmp))


def log_payload(client: Any, exp_id: str, payload: Mapping[str, Any], holder: list[str], *,
                artifacts: Path) -> None:
    """Log a built payload (parent run: tags, params, metrics; one child run per seed) and
    the files under ``artifacts`` to the parent; also how :mod:`harness.mlflow_sync` replays
    a payload kept on disk. ``holder`` receives the parent's run id once it exists."""
    parent = client.create_run(exp_id, run_name=payload["run_name"], tags=payload["tags"])
    pid = parent.info.run_id
    holder.append(pid)
    try:
        _log_batches(client, pid, payload["params"], payload["metrics"])
        client.log_artifacts(pid, str(artifacts))
        for child in payload["children"]:
            ctags = {**payload["tags"], "mlflow.parentRunId": pid, "seed": str(child["seed"])}
            run = client.create_run(exp_id, run_name=child["run_name"], tags=ctags)
            cid = run.info.run_id
            try:
                _log_batches(client, cid, child["params"], child["metrics"])
            except Exception:
                _terminate(client, cid, "FAILED")
                raise
            client.set_terminated(cid, "FINISHED")
    except Exception:
        _terminate(client, pid, "FAILED")
        raise
    client.set_terminated(pid, "FINISHED")


def _log_batches(client: Any, run_id: str, params: Mapping[str, str],
                 metrics: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric, Param

    ts = int(time.time() * 1000)
    for p_chunk, m_chunk in _chunks(list(params.items()), metrics):
        client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for k, v, s in m_chunk],
                         params=[Param(k, v) for k, v in p_chunk])


def _chunks(params: list[tuple[str, str]], metrics: list[tuple[str, float, int]]
            ) -> Iterator[tuple[list[tuple[str, str]], list[tuple[str, float, int]]]]:
    """Split into batches within MLflow's limits (count per kind, total, rough bytes)."""
    i = j = 0
    while i < len(params) or j < len(metrics):
        p_chunk: list[tuple[str, str]] = []
        m_chunk: list[tuple[str, float, int]] = []
        size = 0
        while i < len(params) and len(p_chunk) < MAX_PARAMS_PER_BATCH:
            n = len(params[i][0]) + len(params[i][1]) + 32
            if p_chunk and size + n > MAX_BATCH_BYTES:
                break
            p_chunk.append(params[i])
            size += n
            i += 1
        while j < len(metrics) and len(m_chunk) < MAX_METRICS_PER_BATCH \
                and len(p_chunk) + len(m_chunk) < MAX_ENTITIES_PER_BATCH:
            n = len(metrics[j][0]) + 80
            if (p_chunk or m_chunk) and size + n > MAX_BATCH_BYTES:
                break
            m_chunk.append(metrics[j])
            size += n
            j += 1
        yield p_chunk, m_chunk


def _terminate(client: Any, run_id: str, status: str) -> None:
    with contextlib.suppress(Exception):
        client.set_terminated(run_id, status)


@contextlib.contextmanager
def _http_limits(uri: str) -> Iterator[None]:
    """Bound MLflow's HTTP retries and timeout while we log (unless the user set them):
    a server dying half way costs seconds, not the default ~4 minutes of backoff."""
    if not _is_http(uri):
        yield
        return
    saved = {k: os.environ.get(k) for k in HTTP_LIMITS}
    for k, v in HTTP_LIMITS.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


def _fall_back(uri: str, exp_name: str, test: str, payload: Mapping[str, Any], error: str,
               run_id: str | None, fallback_dir: Path, analysis: Analysis, config: Mapping[str, Any],
               verdict: str | None, verdict_report: Mapping[str, Any] | None,
               plots: Mapping[str, Path]) -> LogResult:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = Path(fallback_dir) / f"{stamp}-{_safe_filename(test)}"
    try:
        n = 1
        while True:
            try:
                dest.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                n += 1
                dest = Path(fallback_dir) / f"{stamp}-{_safe_filename(test)}-{n}"
        _write_files(dest, analysis=analysis, config=config, verdict=verdict,
                     verdict_report=verdict_report, plots=plots)
        record = {"uri": uri, "experiment": exp_name, "error": error, "partial_run_id": run_id,
                  "written": stamp, **payload}
        _dump(dest / "mlflow.json", record)
    except Exception as e:  # noqa: BLE001 (disk full, permissions: report, never raise)
        logger.error("could not log %s to MLflow (%s) nor write %s (%s)", test, error, dest, _one_line(e))
        return LogResult(logged=False, run_id=run_id, uri=uri, experiment=exp_name,
                         error=f"{error}; fallback write to {dest} failed: {_one_line(e)}", fallback_path=None)
    logger.warning("could not log %s to MLflow at %s (%s); wrote it to %s", test, uri, error, dest)
    return LogResult(logged=False, run_id=run_id, uri=uri, experiment=exp_name, error=error, fallback_path=dest)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or repr(e)
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."


def _safe_filename(name: str) -> str:
    s = re.sub(r"[^\w.\-]+", "_", str(name), flags=re.ASCII).strip("._") or "unnamed"
    return s[:120]
