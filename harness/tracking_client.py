"""The MLflow side of tracking: experiments, runs in batches within MLflow's limits, one run
per family per session even across processes, verdicts added to a run, and the folders
that keep what could not be logged. ``mlflow`` is imported inside the functions."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import tracking_payload as tp

logger = logging.getLogger("harness.tracking")

# MLflow's request limits (mlflow.utils.validation, 3.17): a log_batch holds at most 1000
# metrics, 100 params, 100 tags, 1000 entities and 1 MB.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_BYTES = 500_000  # half of the 1 MB request limit: our size estimate is rough
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
SESSION_LOCK_TIMEOUT_S = 600.0

# The MLflow 3 UI opens an experiment on its GenAI traces page unless the experiment says
# it is model training: the tag the UI's own "experiment type" selector writes
# (mlflow/server/js, setExperimentTag "mlflow.experimentKind"). The 3.17 UI reads the kind
# from its workflow switch instead; ``?workflowType=machine_learning`` in a link sets that.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# A shared view of the runs table (what its "share" button stores: an experiment tag
# ``mlflow.sharedViewState.<key>``, opened by ``?viewStateShareKey=<key>``): the verdict,
# session and role as columns, which the default table hides.
VIEW_KEY = "seedstab"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
_COLUMNS = [f"tags.`{t}`" for t in ("verdict", "session", "role")]
VIEW_STATE = json.dumps({"selectedColumns": _COLUMNS, "columnOrder": _COLUMNS, "orderByKey": "attributes.start_time",
                         "orderByAsc": False}, separators=(",", ":"))
WORKFLOW_QUERY = "workflowType=machine_learning"
VIEW_QUERY = f"{WORKFLOW_QUERY}&viewStateShareKey={VIEW_KEY}"


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI (SQLAlchemy rules: ``sqlite:///rel.db``,
    ``sqlite:////abs.db``); ``None`` for other schemes and in-memory databases."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve()


@contextlib.contextmanager
def quiet_mlflow_db() -> Iterator[None]:
    """MLflow logs two INFO lines ("Creating initial MLflow database tables...") straight to
    the console when it creates a sqlite store; in a test run they are noise."""
    db_logger = logging.getLogger("mlflow.store.db.utils")
    level = db_logger.level
    db_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        db_logger.setLevel(level)


def experiment_id(mlflow_client: Any, name: str) -> str:
    """The id of experiment ``name`` (e.g. ``seedstab/paper``), created if missing, tagged
    as model training (``mlflow.experimentKind``) unless someone chose another kind.

    Race-safe: when another process creates it between our lookup and our create, the
    create fails with RESOURCE_ALREADY_EXISTS and we look it up again. A deleted experiment
    of that name is restored (MLflow keeps deleted names reserved). For sqlite stores the
    artifacts go to ``mlartifacts/`` beside the database (MLflow's client default would
    be ``./mlruns``, which MLflow ≥ 3.13 treats as a deprecated file store).
    """
    from mlflow.exceptions import MlflowException

    exp = mlflow_client.get_experiment_by_name(name)
    if exp is None:
        location = None
        db = sqlite_path(str(getattr(mlflow_client, "tracking_uri", "")))
        if db is not None:
            location = (db.parent / "mlartifacts" / tp.safe_filename(name)).as_uri()
        try:
            return str(mlflow_client.create_experiment(name, artifact_location=location, tags={
                EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, tp.NOTE_TAG: _experiment_note(name), VIEW_TAG: VIEW_STATE}))
        except MlflowException as e:
            if "RESOURCE_ALREADY_EXISTS" not in str(getattr(e, "error_code", "")) \
                    and "already exists" not in str(e):
                raise
            exp = mlflow_client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        logger.warning("MLflow experiment %r was deleted; restoring it to log into it", name)
        mlflow_client.restore_experiment(exp.experiment_id)
    tags = getattr(exp, "tags", None) or {}
    if EXPERIMENT_KIND_TAG not in tags:  # made by an older seedstab
        mlflow_client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if tags.get(VIEW_TAG) != VIEW_STATE:
        mlflow_client.set_experiment_tag(exp.experiment_id, VIEW_TAG, VIEW_STATE)
    return str(exp.experiment_id)


def _experiment_note(name: str) -> str:
    return (f"seedstab suite `{name.split('/', 1)[-1]}`: one run per family per pytest session, named "
            "`<suite>/<family>`, tagged with the session; its tests' verdicts are its `verdict.<test>` "
            "tags (`verdict`: the worst), their tables under `verdicts/`; one child run per seed.")


# ---------------------------------------------------------------------------- batches


def log_batches(mlflow_client: Any, run_id: str, params: Mapping[str, str],
                metrics: list[tuple[str, float, int]]) -> None:
    from mlflow.entities import Metric, Param

    ts = int(time.time() * 1000)
    for p_chunk, m_chunk in chunks(list(params.items()), metrics):
        mlflow_client.log_batch(run_id, metrics=[Metric(k, v, ts, s) for k, v, s in m_chunk],
                                params=[Param(k, v) for k, v in p_chunk])


def chunks(params: list[tuple[str, str]], metrics: list[tuple[str, float, int]]
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


def terminate(mlflow_client: Any, run_id: str, status: str) -> None:
    with contextlib.suppress(Exception):
        mlflow_client.set_terminated(run_id, status)


@contextlib.contextmanager
def http_limits(uri: str) -> Iterator[None]:
    """Bound MLflow's HTTP retries and timeout while we log (unless the user set them):
    a server dying half way costs seconds, not the default ~4 minutes of backoff."""
    if not is_http(uri):
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


# ---------------------------------------------------------------------------- runs


@contextlib.contextmanager
def session_lock(uri: str, session: str) -> Iterator[None]:
    """Serialise finding-or-creating a family's run among the processes of one session
    (pytest-xdist workers on this machine), so a family gets one run however many workers
    use it."""
    import filelock

    digest = hashlib.sha1(f"{uri}\0{session}".encode()).hexdigest()[:16]
    with filelock.FileLock(str(Path(tempfile.gettempdir()) / f"seedstab-mlflow-{digest}.lock"),
                           timeout=SESSION_LOCK_TIMEOUT_S):
        yield


def find_run(mlflow_client: Any, exp_id: str, *, session: str, run_name: str, fingerprint: str) -> str | None:
    """The run of this family in this session, if another process logged it already."""
    def q(s: str) -> str:
        return s.replace("\\", "\\\\").replace("'", "\\'")

    runs = mlflow_client.search_runs(
        [exp_id], max_results=5, order_by=["attributes.start_time ASC"],
        filter_string=(f"tags.session = '{q(session)}' and attributes.run_name = '{q(run_name)}' "
                       f"and tags.fingerprint = '{q(fingerprint)}'"))
    runs = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return runs[0].info.run_id if runs else None


def create_run(mlflow_client: Any, exp_id: str, payload: Mapping[str, Any], holder: list[str], *,
               artifacts: Path) -> str:
    """Log a built family payload (run: tags, params, metrics; one child run per seed) and
    the files under ``artifacts``; also how :mod:`harness.mlflow_sync` replays a payload
    kept on disk. ``holder`` receives the run id as soon as it exists, so a failure can
    report and close it."""
    parent = mlflow_client.create_run(exp_id, run_name=payload["run_name"], tags=payload["tags"])
    pid = parent.info.run_id
    holder.append(pid)
    try:
        log_batches(mlflow_client, pid, payload["params"], payload["metrics"])
        mlflow_client.log_artifacts(pid, str(artifacts))
        ctags = tp.child_tags(payload["tags"])
        for child in payload["children"]:
            tags = {**ctags, "mlflow.parentRunId": pid, "seed": str(child["seed"])}
            cid = mlflow_client.create_run(exp_id, run_name=child["run_name"], tags=tags).info.run_id
            try:
                log_batches(mlflow_client, cid, child["params"], child["metrics"])
            except Exception:
                terminate(mlflow_client, cid, "FAILED")
                raise
            mlflow_client.set_terminated(cid, "FINISHED")
    except Exception:
        terminate(mlflow_client, pid, "FAILED")
        raise
    mlflow_client.set_terminated(pid, "FINISHED")
    return pid


def ensure_run(mlflow_client: Any, exp_id: str, payload: Mapping[str, Any], holder: list[str], *,
               write_artifacts: Callable[[Path], None]) -> tuple[str, bool]:
    """The family's run in this session: found (another process logged it) or created.
    Returns ``(run_id, created)``; ``write_artifacts(dir)`` is called only to create."""
    tags = payload["tags"]
    if tags.get("session"):
        found = find_run(mlflow_client, exp_id, session=tags["session"], run_name=payload["run_name"],
                         fingerprint=tags.get("fingerprint", ""))
        if found:
            holder.append(found)
            return found, False
    with tempfile.TemporaryDirectory(prefix="seedstab-mlflow-") as tmp:
        write_artifacts(Path(tmp))
        return create_run(mlflow_client, exp_id, payload, holder, artifacts=Path(tmp)), True


def add_verdicts(mlflow_client: Any, run_id: str, verdicts: Mapping[str, str], *, folder: Path | None) -> None:
    """Set ``verdict.<label>`` tags on a family run, upload ``folder/verdicts/`` to it, and
    refresh its ``verdict`` (the worst) and its description from all its verdict tags."""
    if folder is not None and (folder / "verdicts").is_dir():
        mlflow_client.log_artifacts(run_id, str(folder / "verdicts"), artifact_path="verdicts")
    for label, verdict in verdicts.items():
        mlflow_client.set_tag(run_id, f"{tp.VERDICT_TAG}.{label}", verdict)
    run = mlflow_client.get_run(run_id)
    tags = dict(run.data.tags)
    tags[tp.VERDICT_TAG] = tp.summary_verdict(list(tp.verdict_tags(tags).values()))
    mlflow_client.set_tag(run_id, tp.VERDICT_TAG, tags[tp.VERDICT_TAG])
    mlflow_client.set_tag(run_id, tp.NOTE_TAG, tp.run_note(run.info.run_name, tags)[:tp.MAX_TAG_VALUE])


# ---------------------------------------------------------------------------- fallback


def new_folder(fallback_dir: Path, name: str) -> Path:
    """A fresh ``fallback_dir/<timestamp>-<name>[-n]/`` (two in the same instant stay apart)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    base = Path(fallback_dir) / f"{stamp}-{tp.safe_filename(name)}"
    dest, n = base, 1
    while True:
        try:
            dest.mkdir(parents=True, exist_ok=False)
            return dest
        except FileExistsError:
            n += 1
            dest = base.with_name(f"{base.name}-{n}")


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or repr(e)
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= 300 else text[:297] + "..."
