"""The one module that talks to MLflow: where runs go and the two things a session logs.

One experiment per suite (``seedstab/<suite>``, tagged as model training so the MLflow UI
opens it on its runs, not on GenAI traces). In it, per pytest session, one run per family,
named ``<suite>/<family>`` (:func:`log_family`): the config as params; scalar measurements
as metrics and per-layer ones with step = layer index; their intervals over seeds in
``intervals.csv``, everything in ``analysis.json``, ``config.json`` and ``plots/`` as
artifacts; a child run per seed (loss curve as steps, final loss and perplexity,
throughput). Each test or check that used the family adds its verdict to that run
(:func:`log_verdict`): the tag ``verdict.<test>``, the files ``verdicts/<test>.json`` (the
Δ / CI / p / MDE rows that decided it) and ``verdicts/<test>.md`` (the same as a table).
The run's ``verdict`` tag is the worst of them; its description lists them. Tags on every
run: suite, family, fingerprint, seeds, session, role, git_commit, device, torch_version,
seedstab_version, probe_digest. What goes where is built in :mod:`harness.tracking_payload`;
batches, limits and run lookup are in :mod:`harness.tracking_client`.

Where it goes: ``--seedstab-mlflow-uri`` > ``$MLFLOW_TRACKING_URI`` > ``sqlite:///<cwd>/mlflow.db``;
for a sqlite URI the artifacts go to ``mlartifacts/`` beside the database file.

Logging never fails a test: when the server is unreachable or any MLflow call fails, what
would have been logged is written under ``.seedstab/unlogged/<timestamp>-<run>/`` and the
result says ``logged=False``; ``seedstab mlflow sync`` (:mod:`harness.mlflow_sync`) logs it
later. Parallel workers: call :func:`prepare` once before they start (two processes
*creating* one sqlite file at the same moment fails); workers of one session find each
other's family runs (a file lock and the ``session`` tag), so each family still gets one
run. ``mlflow`` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import tracking_client as tc
from harness import tracking_payload as tp
from harness.results import Analysis

logger = logging.getLogger(__name__)

__all__ = ["LogResult", "TrackingError", "log_family", "log_verdict", "prepare", "tracking_uri",
           "default_uri", "ui_hint", "run_url", "experiment_url", "experiment_name", "check_reachable",
           "experiment_id", "FALLBACK_DIR"]

EXPERIMENT_PREFIX = "seedstab/"
ROLES = ("baseline", "candidate")
FALLBACK_DIR = Path(".seedstab/unlogged")
RECORD = "mlflow.json"  # in a fallback folder: what could not be logged
# A dead server must cost seconds, not MLflow's default of 7 retries with backoff (minutes).
REACHABILITY_TIMEOUT_S = 5.0
PREPARE_LOCK_TIMEOUT_S = 300.0
experiment_id = tc.experiment_id


class TrackingError(RuntimeError):
    """The tracking store cannot be prepared (message says where and what to do)."""


@dataclass(frozen=True)
class LogResult:
    """What :func:`log_family` or :func:`log_verdict` did.

    ``logged``: everything reached MLflow. ``run_id``: the family run (when logging failed
    half way, the partial run, marked FAILED). ``error``: one line, why it failed.
    ``fallback_path``: the folder holding what could not be logged. ``created``: this call
    made the run (False: another test or worker of the session had).
    """

    logged: bool
    run_id: str | None
    uri: str
    experiment: str
    error: str | None = None
    fallback_path: Path | None = None
    run_name: str = ""
    experiment_id: str | None = None
    session: str = ""
    created: bool = False


# ---------------------------------------------------------------------------- URIs


def default_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``, computed now (the cwd may have changed)."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI: ``explicit`` (``--seedstab-mlflow-uri``) > ``$MLFLOW_TRACKING_URI`` > sqlite in cwd."""
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return env or default_uri()


def experiment_name(suite: str) -> str:
    return f"{EXPERIMENT_PREFIX}{suite}"


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI at ``base`` (a server's URL): the model
    training view (the 3.x UI opens on GenAI otherwise) with the verdict, session and role
    columns."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{tc.VIEW_QUERY}"


def ui_hint(uri: str, experiment_id: str | None = None) -> str:
    """How to look at the runs logged to ``uri``: a server is opened in a browser, a local
    store (sqlite, a folder) through ``mlflow ui`` on that very store; with
    ``experiment_id``, the page of its runs."""
    if uri.startswith(("http://", "https://", "databricks")):
        where = experiment_url(uri, experiment_id) if experiment_id and tc.is_http(uri) else uri
        return f"open {where} in a browser"
    hint = f"look at them with `mlflow ui --backend-store-uri {shlex.quote(uri)}`"
    if experiment_id:
        hint += f", then {experiment_url('http://127.0.0.1:5000', experiment_id)}"
    return hint


def run_url(uri: str, run_id: str, *, experiment_id: str | None = None) -> str | None:
    """A link to the run in the tracking server's UI, or ``None`` for non-http URIs (use
    ``mlflow ui --backend-store-uri <uri>`` there)."""
    if not tc.is_http(uri) or not run_id:
        return None
    base = uri.rstrip("/")
    if experiment_id is not None:
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{tc.WORKFLOW_QUERY}"
    return f"{base}/#/runs/{run_id}"  # the UI's direct run route redirects to the run page


# ---------------------------------------------------------------------------- setup


def check_reachable(uri: str, *, timeout: float = REACHABILITY_TIMEOUT_S) -> str | None:
    """``None`` if the http(s) tracking server answers ``GET /health``, else a one-line
    reason. Non-http URIs are always "reachable". One try, no retries."""
    if not tc.is_http(uri):
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
    (``<db>.lock``), so concurrent callers wait for the first one; idempotent; prints
    nothing. http(s): a reachability check that only warns (logging falls back to files if
    the server stays down). Other URIs: nothing.

    Raises :class:`TrackingError` when a sqlite database cannot be created.
    """
    if tc.is_http(uri):
        reason = check_reachable(uri)
        if reason:
            logger.warning("%s; results will be written under %s instead", reason, FALLBACK_DIR)
        return
    db = tc.sqlite_path(uri)
    if db is None:
        return
    import filelock

    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(db) + ".lock", timeout=PREPARE_LOCK_TIMEOUT_S), tc.quiet_mlflow_db():
            tc.client(uri).search_experiments(max_results=1)  # creates/migrates the schema
    except filelock.Timeout as e:
        raise TrackingError(f"{db}: another process held {db}.lock for {PREPARE_LOCK_TIMEOUT_S:.0f} s; "
                            f"if no seedstab run is active, delete the lock file") from e
    except Exception as e:  # noqa: BLE001 (sqlalchemy/mlflow raise many types)
        raise TrackingError(f"cannot create the MLflow database {db}: {tc.one_line(e)}; pass "
                            f"--seedstab-mlflow-uri or set MLFLOW_TRACKING_URI to a writable location") from e


# ---------------------------------------------------------------------------- logging


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


def log_family(*, uri: str, suite: str, analysis: Analysis, config: Mapping[str, Any],
               seed_logs: list[Mapping[str, Any]], role: str, session: str = "", run_name: str | None = None,
               plots: Mapping[str, Path] | Callable[[], Mapping[str, Path]] = {},
               tags: Mapping[str, str] = {}, fallback_dir: Path = FALLBACK_DIR) -> LogResult:
    """The family's run in experiment ``seedstab/<suite>`` for this ``session``: created
    with its seed runs and artifacts, or found when another process of the session made it
    (then nothing is logged again). ``run_name`` defaults to ``<suite>/<family>``;
    ``plots`` (or a callable giving them, called only when the run is created): name -> png.

    Never raises for tracking problems: on any failure everything is written under
    ``fallback_dir/<timestamp>-<run name>/`` (``mlflow.json`` with the run's tags, params,
    metrics and seed runs, plus the artifact tree) and ``LogResult(logged=False, ...)`` is
    returned. Raises ``ValueError`` only for a bad ``role``.
    """
    if role not in ROLES:
        raise ValueError(f"log_family: role must be one of {', '.join(ROLES)}, got {role!r}")
    exp_name, name = experiment_name(suite), run_name or f"{suite}/{analysis.family}"
    base = {"role": role, "git_commit": _git_commit(), "torch_version": _version("torch", "torch"),
            "seedstab_version": _version("seedstab", "harness"), **({"session": session} if session else {}),
            **{str(k): str(v) for k, v in tags.items()}}
    result = LogResult(logged=False, run_id=None, uri=uri, experiment=exp_name, run_name=name, session=session)

    def write_artifacts(dest: Path) -> None:
        for w in tp.write_family_files(dest, analysis=analysis, config=config,
                                       plots=plots() if callable(plots) else plots):
            logger.warning("%s", w)

    try:
        payload = tp.family_payload(suite=suite, run_name=name, analysis=analysis, config=config,
                                    seed_logs=seed_logs, base_tags=base)
    except Exception as e:  # noqa: BLE001 (a malformed seed log must not fail the test)
        return _fall_back(result, {"experiment": exp_name, "run_name": name, "unbuilt": repr(e)},
                          f"could not build the MLflow payload: {tc.one_line(e)}", write_artifacts, fallback_dir)
    t0 = time.perf_counter()
    holder: list[str] = []  # the run id, once created or found
    try:
        reason = check_reachable(uri)
        if reason:
            raise ConnectionError(reason)
        with tc.http_limits(uri):
            prepare(uri)
            client = tc.client(uri)
            exp_id = tc.experiment_id(client, exp_name)
            result = replace(result, experiment_id=exp_id)
            with tc.session_lock(uri, session or "-"):
                run_id, created = tc.ensure_run(client, exp_id, payload, holder, write_artifacts=write_artifacts)
    except Exception as e:  # noqa: BLE001 (MLflow, sqlalchemy, requests, OS errors alike)
        return _fall_back(replace(result, run_id=holder[0] if holder else None), payload, tc.one_line(e),
                          write_artifacts, fallback_dir)
    logger.info("%s %s in %s (run %s, %.1f s)", "logged" if created else "found", name, uri, run_id,
                time.perf_counter() - t0)
    return replace(result, logged=True, run_id=run_id, created=created)


def _fall_back(result: LogResult, payload: Mapping[str, Any], error: str,
               write_artifacts: Callable[[Path], None], fallback_dir: Path) -> LogResult:
    dest = None
    try:
        dest = tc.new_folder(fallback_dir, result.run_name)
        write_artifacts(dest)
        record = {"uri": result.uri, "experiment": result.experiment, "error": error,
                  "partial_run_id": result.run_id, "written": dest.name.split("-", 1)[0], **payload}
        tp.dump(dest / RECORD, record)
    except Exception as e:  # noqa: BLE001 (disk full, permissions: report, never raise)
        logger.error("could not log %s to MLflow (%s) nor write %s (%s)", result.run_name, error, dest, tc.one_line(e))
        return replace(result, error=f"{error}; fallback write to {dest or fallback_dir} failed: {tc.one_line(e)}")
    logger.warning("could not log %s to MLflow at %s (%s); wrote it to %s", result.run_name, result.uri, error, dest)
    return replace(result, logged=False, error=error, fallback_path=dest)


def log_verdict(family: LogResult, *, record: Mapping[str, Any], fallback_dir: Path = FALLBACK_DIR) -> LogResult:
    """Add one test's verdict to its family's run (``family``: what :func:`log_family`
    returned): the tag ``verdict.<label>``, ``verdicts/<label>.json`` and ``.md``, the run's
    ``verdict`` (the worst) and description. ``record``: :func:`tracking_payload.verdict_record`.

    Never raises for tracking problems. When the family run itself was not logged, the
    verdict joins its folder under ``.seedstab/unlogged`` (synced as one run); when the
    run exists but this call fails, a folder of its own says which run it belongs to.
    """
    label, verdict = str(record["label"]), str(record["verdict"])
    if not family.logged:
        if family.fallback_path is None:
            return replace(family, created=False)
        try:
            _join_folder(family.fallback_path, label, verdict, record)
        except Exception as e:  # noqa: BLE001
            return replace(family, created=False, error=f"{family.error}; could not add {label} to "
                                                        f"{family.fallback_path}: {tc.one_line(e)}")
        return replace(family, created=False)
    try:
        with tempfile.TemporaryDirectory(prefix="seedstab-verdict-") as tmp:
            tp.write_verdict_files(Path(tmp), record)
            with tc.http_limits(family.uri), tc.session_lock(family.uri, family.session or "-"):
                tc.add_verdicts(tc.client(family.uri), str(family.run_id), {label: verdict}, folder=Path(tmp))
    except Exception as e:  # noqa: BLE001
        error = tc.one_line(e)
        try:
            dest = tc.new_folder(fallback_dir, f"{family.run_name}-{label}")
            tp.write_verdict_files(dest, record)
            tp.dump(dest / RECORD, {"uri": family.uri, "experiment": family.experiment, "error": error,
                                    "attach_to": family.run_id, "run_name": family.run_name,
                                    "verdicts": {label: verdict}, "written": dest.name.split("-", 1)[0]})
        except Exception as e2:  # noqa: BLE001
            return replace(family, logged=False, created=False, fallback_path=None,
                           error=f"{error}; fallback write failed: {tc.one_line(e2)}")
        logger.warning("could not add %s to MLflow run %s (%s); wrote it to %s", label, family.run_id, error, dest)
        return replace(family, logged=False, created=False, error=error, fallback_path=dest)
    return replace(family, created=False)


def _join_folder(folder: Path, label: str, verdict: str, record: Mapping[str, Any]) -> None:
    """A verdict on a family run that is itself kept on disk: into its folder and record."""
    tp.write_verdict_files(folder, record)
    path = folder / RECORD
    rec = json.loads(path.read_text(encoding="utf-8"))
    if "tags" in rec:
        tags = {**rec["tags"], f"{tp.VERDICT_TAG}.{label}": verdict}
        tags[tp.VERDICT_TAG] = tp.summary_verdict(list(tp.verdict_tags(tags).values()))
        tags[tp.NOTE_TAG] = tp.run_note(rec.get("run_name", ""), tags)[:tp.MAX_TAG_VALUE]
        rec["tags"] = tags
    else:  # a payload that could not be built: keep the verdicts beside it
        rec.setdefault("verdicts", {})[label] = verdict
    tp.dump(path, rec)
