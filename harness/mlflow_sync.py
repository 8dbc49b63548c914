"""Replay runs that could not reach MLflow (``.seedstab/unlogged/``) into a tracking store.

When logging fails (a server down, a full disk), :func:`harness.tracking.log_family` writes
each family's runs to ``.seedstab/unlogged/<timestamp>-<test>/``: ``mlflow.json`` (the parent
run's tags, params and per-layer metrics, one child run per seed) and the artifacts
(``analysis.json``, ``config.json``, ``verdict.json``, plots). :func:`sync` logs each such
folder as the same runs, then moves it to ``.seedstab/unlogged/synced/`` so a second sync does
not log it twice. ``seedstab mlflow sync [--dir DIR] [--mlflow-uri URI]`` is the command.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import tracking

__all__ = ["SyncResult", "sync", "SYNCED"]

SYNCED = "synced"  # the subfolder synced folders move to


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: ``logged`` {folder: parent run id}, ``failed`` {folder: reason}."""

    logged: dict[str, str]
    failed: dict[str, str]


def pending(root: Path) -> list[Path]:
    """The folders under ``root`` still to be logged, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name != SYNCED and (p / "mlflow.json").is_file())


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
    client = tracking._client(uri)
    for folder in folders:
        try:
            record = json.loads((folder / "mlflow.json").read_text(encoding="utf-8"))
            if "unbuilt" in record:
                raise ValueError(f"its payload could not be built when it was written ({record['unbuilt']})")
            logged[str(folder)] = _replay(client, record, folder)
        except Exception as e:  # noqa: BLE001 (one folder's problem must not stop the others)
            failed[str(folder)] = tracking._one_line(e)
            continue
        done = root / SYNCED / folder.name
        done.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(done))
    return SyncResult(logged, failed)


def _replay(client, record: dict, folder: Path) -> str:
    exp_id = tracking.experiment_id(client, record["experiment"])
    payload = {**record, "tags": {**record["tags"], "seedstab.replayed_from": folder.name},
               "metrics": [tuple(m) for m in record["metrics"]],
               "children": [{**c, "metrics": [tuple(m) for m in c["metrics"]]} for c in record["children"]]}
    holder: list[str] = []
    with tempfile.TemporaryDirectory(prefix="seedstab-sync-") as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("mlflow.json"))
        tracking.log_payload(client, exp_id, payload, holder, artifacts=Path(tmp))
    return holder[0]
