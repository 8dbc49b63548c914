"""Replay runs that could not reach MLflow (``.seedstab/unlogged/``) into a tracking store.

When logging fails (a server down, a full disk), :mod:`harness.tracking` keeps what it
would have logged in a folder per family run, ``.seedstab/unlogged/<timestamp>-<run>/``:
``mlflow.json`` (the run's tags, params and per-layer metrics, one child run per seed; the
verdicts of the tests that used it are among its tags) and the artifacts (``analysis.json``,
``config.json``, ``intervals.csv``, plots, ``verdicts/``). A verdict that could not be
added to a run that *was* logged gets a folder of its own whose record names that run
(``attach_to``). :func:`sync` logs each folder, oldest first, then moves it to
``.seedstab/unlogged/synced/`` so a second sync does not log it twice. A family run of a
session that already has its run there (another xdist worker logged it, or kept it too) is
not logged twice: its verdicts join that run. ``seedstab mlflow sync [--dir DIR]
[--mlflow-uri URI]`` is the command.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import tracking
from harness import tracking_client as tc
from harness import tracking_payload as tp

__all__ = ["SyncResult", "sync", "pending", "SYNCED"]

SYNCED = "synced"  # the subfolder synced folders move to


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: ``logged`` {folder: run id}, ``failed`` {folder: reason}."""

    logged: dict[str, str]
    failed: dict[str, str]


def pending(root: Path) -> list[Path]:
    """The folders under ``root`` still to be logged, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name != SYNCED and (p / tracking.RECORD).is_file())


def sync(root: str | Path = tracking.FALLBACK_DIR, *, uri: str | None = None) -> SyncResult:
    """Log every pending folder under ``root`` to ``uri`` (default: the usual resolution,
    ``$MLFLOW_TRACKING_URI`` else ``sqlite:///mlflow.db``). Never raises for one folder's
    problem: it is reported in ``failed`` and left in place for the next sync."""
    root, uri = Path(root), tracking.tracking_uri(uri)
    logged: dict[str, str] = {}
    failed: dict[str, str] = {}
    folders = pending(root)
    if not folders:
        return SyncResult(logged, failed)
    reason = tracking.check_reachable(uri)
    if reason:
        return SyncResult(logged, {str(f): reason for f in folders})
    tracking.prepare(uri)
    client = tc.client(uri)
    for folder in folders:
        try:
            record = json.loads((folder / tracking.RECORD).read_text(encoding="utf-8"))
            if "unbuilt" in record:
                raise ValueError(f"its payload could not be built when it was written ({record['unbuilt']})")
            with tc.http_limits(uri):
                logged[str(folder)] = (_attach(client, record, folder) if record.get("attach_to")
                                       else _replay(client, record, folder))
        except Exception as e:  # noqa: BLE001 (one folder's problem must not stop the others)
            failed[str(folder)] = tc.one_line(e)
            continue
        done = root / SYNCED / folder.name
        done.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(done))
    return SyncResult(logged, failed)


def _replay(client: Any, record: dict, folder: Path) -> str:
    """A family run kept on disk: logged as it would have been, or, when its session's run
    of that family is in the store already, its verdicts added to that run."""
    exp_id = tracking.experiment_id(client, record["experiment"])
    payload = {**record, "tags": {**record["tags"], "seedstab.replayed_from": folder.name},
               "metrics": [tuple(m) for m in record["metrics"]],
               "children": [{**c, "metrics": [tuple(m) for m in c["metrics"]]} for c in record["children"]]}
    holder: list[str] = []

    def copy_artifacts(dest: Path) -> None:
        shutil.copytree(folder, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(tracking.RECORD))

    run_id, created = tc.ensure_run(client, exp_id, payload, holder, write_artifacts=copy_artifacts)
    if not created:
        tc.add_verdicts(client, run_id, tp.verdict_tags(record["tags"]), folder=folder)
    return run_id


def _attach(client: Any, record: dict, folder: Path) -> str:
    """Verdicts that could not be added to a logged run: added to it now."""
    run_id = str(record["attach_to"])
    client.get_run(run_id)  # a store without that run fails here, and the folder stays
    tc.add_verdicts(client, run_id, dict(record.get("verdicts") or {}), folder=folder)
    return run_id
