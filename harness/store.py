"""The content-addressed store of trained seeds: the one module that owns the disk.

Layout::

    <root>/<fingerprint>/family.json                    resolved family config (optional)
    <root>/<fingerprint>/<device_class>/<seed_key>.lock cross-process lock file
    <root>/<fingerprint>/<device_class>/<seed_key>/
        weights.pt       torch.save of the model state_dict
        config.json      the resolved config dict (sorted keys)
        log.json         the training log (loss curve, tokens/s, steps, threads, timings...)
        manifest.json    written LAST: sha256 + size of the three files above,
                         schema version, created time
        checkpoint.pt    periodic training checkpoint, deleted once the weights are saved
        checkpoint.json  sha256 + size of checkpoint.pt, and its step

A seed entry is *complete* iff its manifest exists and every checksum verifies. Every file
is written to a temporary name in the same directory, fsynced and moved into place with
``os.replace``, so a crash never leaves a complete-looking entry with partial content.

Corrupt data is never returned: a seed entry that fails verification is moved aside to
``<seed_dir>.corrupt-<timestamp>`` (kept for inspection) with a WARNING, and the loader
returns ``None`` so the caller retrains.

Payloads (state dicts and checkpoints) may contain only tensors, dicts (str/int keys),
lists, tuples, ints, floats, str, bool and None, so that they load with
``torch.load(..., weights_only=True)``; anything else is rejected with :class:`StoreError`
before it reaches the disk. Loading always uses ``weights_only=True, map_location="cpu"``.

Concurrency: :meth:`Store.lock` gives a cross-process exclusive lock per seed. Writers
(``save_seed``, ``save_checkpoint``) and loaders that may quarantine a corrupt entry should
run under it; reading a complete entry is safe without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock
import torch

__all__ = ["Checkpoint", "Entry", "SeedRecord", "Store", "StoreError", "SCHEMA_VERSION"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

WEIGHTS = "weights.pt"
CONFIG = "config.json"
LOG = "log.json"
MANIFEST = "manifest.json"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_META = "checkpoint.json"
FAMILY = "family.json"
_SEED_FILES = (WEIGHTS, CONFIG, LOG)

CORRUPT_MARKER = ".corrupt-"
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class StoreError(Exception):
    """The store cannot do what was asked: unusable root, unwritable file, bad payload,
    an entry from a newer schema. The message names the path and what to do next."""


class _Corrupt(Exception):
    """Internal: a stored file failed verification. ``path`` names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, eq=False)
class SeedRecord:
    """One trained seed as loaded from (or just written to) the store; tensors on CPU."""

    fingerprint: str
    device_class: str
    seed_key: str
    path: Path
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    log: dict[str, Any]


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A verified training checkpoint: ``payload`` is exactly what was saved, on CPU."""

    step: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class Entry:
    """One complete seed entry, as listed by ``seedstab ls``."""

    fingerprint: str
    device_class: str
    seed_key: str
    path: Path
    size_bytes: int
    created: str  # ISO 8601, UTC
    name: str | None
    steps: int | None
    final_loss: float | None


# --------------------------------------------------------------------------- helpers


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_key(kind: str, value: object) -> str:
    """Keys become path components: refuse anything that could escape or collide."""
    if (
        not isinstance(value, str)
        or not _KEY_RE.fullmatch(value)
        or CORRUPT_MARKER in value
        or value.endswith((".lock", ".tmp"))
    ):
        raise ValueError(
            f"store {kind} must be 1-128 characters of letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit (and not a reserved '.lock', '.tmp' or "
            f"'{CORRUPT_MARKER}' name), got {value!r}"
        )
    return value


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every filesystem supports it, which is harmless.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir, fsync, ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StoreError(
            f"could not write {path}: {e}; check that the store root is writable and the "
            f"disk is not full, or point the store elsewhere"
        ) from e
    _fsync_dir(path.parent)


def _json_bytes(obj: dict[str, Any], *, what: str) -> bytes:
    if not isinstance(obj, dict):
        raise StoreError(f"{what}: expected a dict, got {type(obj).__name__}")
    try:
        return (json.dumps(obj, sort_keys=True, indent=2) + "\n").encode("utf-8")
    except (TypeError, ValueError) as e:
        raise StoreError(
            f"{what}: not JSON-serializable ({e}); pass plain dicts, lists, str, numbers, "
            f"bool and None"
        ) from e


_SCALARS = (int, float, str, bool, type(None))


def _check_weights_only(obj: object, where: str) -> None:
    """Refuse anything ``torch.load(weights_only=True)`` could not read back."""
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise StoreError(
                f"{where}: tensor subclass {type(obj).__name__} cannot be loaded with "
                f"weights_only=True; store a plain tensor (t.as_subclass(torch.Tensor))"
            )
        return
    if type(obj) in _SCALARS:
        return
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():  # type: ignore[attr-defined]
            if type(k) not in _SCALARS:
                raise StoreError(
                    f"{where}: dict key {k!r} of type {type(k).__name__} is not allowed; "
                    f"use str or int keys"
                )
            _check_weights_only(v, f"{where}.{k}")
        return
    if type(obj) in (list, tuple, torch.Size):
        for i, v in enumerate(obj):  # type: ignore[arg-type]
            _check_weights_only(v, f"{where}[{i}]")
        return
    raise StoreError(
        f"{where}: value of type {type(obj).__module__}.{type(obj).__qualname__} cannot be "
        f"loaded with torch.load(weights_only=True); store payloads may hold only tensors, "
        f"dicts, lists, tuples, int, float, str, bool and None (convert arrays with "
        f"torch.from_numpy, generator states with Generator.get_state())"
    )


def _serialize(obj: dict[str, Any], *, what: str) -> tuple[bytes, dict[str, Any]]:
    """torch.save ``obj`` to bytes and prove it loads with weights_only=True.

    Returns the bytes and the loaded copy (CPU), which is exactly what a later load returns.
    """
    if type(obj) not in (dict, OrderedDict):
        raise StoreError(f"{what}: expected a dict, got {type(obj).__name__}")
    _check_weights_only(obj, what)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    try:
        loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # the unpickler raises several types; all mean the same here
        raise StoreError(
            f"{what}: does not round-trip through torch.load(weights_only=True): {e}"
        ) from e
    return data, loaded


def _read_verified(path: Path, expected: object, *, manifest: Path) -> bytes:
    """Read ``path`` and check it against its record ``{"sha256", "size"}`` in ``manifest``."""
    if (
        not isinstance(expected, dict)
        or not isinstance(expected.get("sha256"), str)
        or type(expected.get("size")) is not int
    ):
        raise _Corrupt(manifest, f"record for {path.name} is malformed: {expected!r}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _Corrupt(path, "file is missing") from None
    except OSError as e:
        raise _Corrupt(path, f"unreadable: {e}") from e
    if len(data) != expected["size"]:
        raise _Corrupt(
            path, f"size {len(data)} bytes, manifest says {expected['size']} (truncated?)"
        )
    digest = _sha256(data)
    if digest != expected["sha256"]:
        raise _Corrupt(
            path,
            f"sha256 mismatch: got {digest[:12]}…, manifest says {expected['sha256'][:12]}…",
        )
    return data


def _parse_json(path: Path, data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _Corrupt(path, f"unreadable JSON: {e}") from e
    if not isinstance(obj, dict):
        raise _Corrupt(path, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _torch_load(path: Path, data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:  # truncated zip, bad pickle, disallowed global: all corrupt
        raise _Corrupt(path, f"torch.load(weights_only=True) failed: {e}") from e


# --------------------------------------------------------------------------- the store


class Store:
    """Trained seeds on disk, keyed by (fingerprint, device_class, seed_key)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"store root {self.root} is unusable: {e}; choose another store directory "
                f"or fix its permissions"
            ) from e
        if not self.root.is_dir():  # pragma: no cover - mkdir(exist_ok) raises first
            raise StoreError(f"store root {self.root} is not a directory")

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---------------------------------------------------------------- paths

    def seed_dir(self, fingerprint: str, device_class: str, seed_key: str) -> Path:
        """``<root>/<fingerprint>/<device_class>/<seed_key>``; keys are validated."""
        return (
            self.root
            / _check_key("fingerprint", fingerprint)
            / _check_key("device_class", device_class)
            / _check_key("seed_key", seed_key)
        )

    def _mkdir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"could not create {path}: {e}; check that the store root {self.root} is "
                f"writable, or point the store elsewhere"
            ) from e

    # ---------------------------------------------------------------- seeds

    def _read_seed(self, d: Path, key: tuple[str, str, str]) -> SeedRecord | None:
        """Verify and load one seed dir. None if absent/incomplete; _Corrupt if corrupt."""
        manifest_path = d / MANIFEST
        try:
            raw = manifest_path.read_bytes()
        except FileNotFoundError:
            return None  # absent, or a crash before the manifest: not an entry yet
        except OSError as e:
            raise _Corrupt(manifest_path, f"unreadable: {e}") from e
        manifest = _parse_json(manifest_path, raw)
        schema = manifest.get("schema")
        if type(schema) is not int:
            raise _Corrupt(manifest_path, f"schema is {schema!r}, expected an int")
        if schema > SCHEMA_VERSION:
            raise StoreError(
                f"{manifest_path}: written by a newer seedstab (store schema {schema}, this "
                f"one reads up to {SCHEMA_VERSION}); upgrade seedstab or use another store"
            )
        found = tuple(manifest.get(k) for k in ("fingerprint", "device_class", "seed_key"))
        if found != key:
            raise _Corrupt(manifest_path, f"belongs to {found}, not to {key}")
        files = manifest.get("files")
        if not isinstance(files, dict):
            raise _Corrupt(manifest_path, "has no 'files' table")
        blobs = {
            name: _read_verified(d / name, files.get(name), manifest=manifest_path)
            for name in _SEED_FILES
        }
        state_dict = _torch_load(d / WEIGHTS, blobs[WEIGHTS])
        if not isinstance(state_dict, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
        ):
            raise _Corrupt(d / WEIGHTS, "is not a dict of str -> Tensor")
        return SeedRecord(
            fingerprint=key[0],
            device_class=key[1],
            seed_key=key[2],
            path=d,
            state_dict=state_dict,
            config=_parse_json(d / CONFIG, blobs[CONFIG]),
            log=_parse_json(d / LOG, blobs[LOG]),
        )

    def has_seed(self, fingerprint: str, device_class: str, seed_key: str) -> bool:
        """True iff the entry is complete and every checksum verifies. No side effects.

        Raises StoreError for an entry written by a newer store schema.
        """
        d = self.seed_dir(fingerprint, device_class, seed_key)
        try:
            return self._read_seed(d, (fingerprint, device_class, seed_key)) is not None
        except _Corrupt as e:
            logger.debug("store entry %s does not verify: %s", d, e)
            return False

    def load_seed(self, fingerprint: str, device_class: str, seed_key: str) -> SeedRecord | None:
        """The verified seed, or None if absent, incomplete or corrupt.

        A corrupt entry is logged as a WARNING naming the bad file and moved aside to
        ``<seed_dir>.corrupt-<timestamp>``, so the caller retrains into a clean dir.
        Raises StoreError for an entry written by a newer schema.
        """
        d = self.seed_dir(fingerprint, device_class, seed_key)
        try:
            return self._read_seed(d, (fingerprint, device_class, seed_key))
        except _Corrupt as e:
            aside = self._quarantine(d)
            logger.warning(
                "corrupt store entry: %s: %s; moved %s to %s; the seed will be retrained",
                e.path, e.reason, d, aside,
            )
            return None

    def _quarantine(self, d: Path) -> Path | str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = d.with_name(f"{d.name}{CORRUPT_MARKER}{stamp}")
        try:
            os.rename(d, aside)
            return aside
        except OSError as e:
            logger.debug("could not move %s aside (%s); deleting it", d, e)
        try:
            shutil.rmtree(d)
        except OSError as e:
            raise StoreError(
                f"corrupt store entry {d} could be neither moved aside nor deleted: {e}; "
                f"delete it by hand"
            ) from e
        return "nowhere (deleted)"

    def save_seed(
        self,
        fingerprint: str,
        device_class: str,
        seed_key: str,
        *,
        state_dict: dict[str, torch.Tensor],
        config: dict[str, Any],
        log: dict[str, Any],
    ) -> SeedRecord:
        """Write a complete seed entry atomically (manifest last), then drop its checkpoint.

        ``state_dict`` must map str -> Tensor; ``config`` and ``log`` must be JSON-
        serializable. Returns the record as a later :meth:`load_seed` will see it (CPU
        tensors, JSON-normalized dicts). Raises StoreError on bad input or a failed write;
        then no complete-looking entry is left behind.
        """
        d = self.seed_dir(fingerprint, device_class, seed_key)
        if type(state_dict) not in (dict, OrderedDict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
        ):
            raise StoreError(
                f"{d / WEIGHTS}: state_dict must be a dict of str -> Tensor "
                f"(pass model.state_dict())"
            )
        weights, loaded = _serialize(state_dict, what=f"{d / WEIGHTS}: state_dict")
        blobs = {
            WEIGHTS: weights,
            CONFIG: _json_bytes(config, what=f"{d / CONFIG}"),
            LOG: _json_bytes(log, what=f"{d / LOG}"),
        }
        self._mkdir(d)
        # Overwriting: drop the old manifest first so the dir never claims to be complete
        # while it holds a mix of old and new files.
        try:
            (d / MANIFEST).unlink(missing_ok=True)
        except OSError as e:
            raise StoreError(f"could not remove {d / MANIFEST}: {e}; fix permissions") from e
        for name, data in blobs.items():
            _atomic_write(d / name, data)
        manifest = {
            "schema": SCHEMA_VERSION,
            "created": _now_iso(),
            "fingerprint": fingerprint,
            "device_class": device_class,
            "seed_key": seed_key,
            "torch": torch.__version__,
            "files": {n: {"sha256": _sha256(b), "size": len(b)} for n, b in blobs.items()},
        }
        _atomic_write(d / MANIFEST, _json_bytes(manifest, what=str(d / MANIFEST)))
        self._remove_checkpoint(d)
        logger.info("saved seed %s (%d bytes)", d, sum(len(b) for b in blobs.values()))
        return SeedRecord(
            fingerprint=fingerprint,
            device_class=device_class,
            seed_key=seed_key,
            path=d,
            state_dict=loaded,
            config=json.loads(blobs[CONFIG]),
            log=json.loads(blobs[LOG]),
        )

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(
        self,
        fingerprint: str,
        device_class: str,
        seed_key: str,
        *,
        step: int,
        payload: dict[str, Any],
    ) -> None:
        """Atomically write a checksummed training checkpoint, replacing any older one.

        ``payload`` may hold only tensors, dicts, lists, tuples, int, float, str, bool and
        None (generator states as ByteTensors from ``Generator.get_state()``); anything else
        raises StoreError before touching the disk. A crash between the two file writes
        leaves a checkpoint that fails verification (and is discarded), never a wrong one.
        """
        d = self.seed_dir(fingerprint, device_class, seed_key)
        if type(step) is not int or step < 0:
            raise StoreError(f"{d / CHECKPOINT}: step must be an int >= 0, got {step!r}")
        data, _ = _serialize(payload, what=f"{d / CHECKPOINT}: payload")
        self._mkdir(d)
        _atomic_write(d / CHECKPOINT, data)
        meta = {
            "schema": SCHEMA_VERSION,
            "created": _now_iso(),
            "step": step,
            "sha256": _sha256(data),
            "size": len(data),
        }
        _atomic_write(d / CHECKPOINT_META, _json_bytes(meta, what=str(d / CHECKPOINT_META)))
        logger.debug("saved checkpoint %s at step %d", d / CHECKPOINT, step)

    def load_checkpoint(
        self, fingerprint: str, device_class: str, seed_key: str
    ) -> Checkpoint | None:
        """The verified checkpoint, or None if there is none or it is corrupt.

        A corrupt checkpoint is logged as a WARNING naming the file and deleted, so
        training restarts from step 0.
        """
        d = self.seed_dir(fingerprint, device_class, seed_key)
        meta_path = d / CHECKPOINT_META
        try:
            try:
                raw = meta_path.read_bytes()
            except FileNotFoundError:
                if (d / CHECKPOINT).exists():
                    raise _Corrupt(meta_path, "missing, but checkpoint.pt exists") from None
                return None
            except OSError as e:
                raise _Corrupt(meta_path, f"unreadable: {e}") from e
            meta = _parse_json(meta_path, raw)
            step = meta.get("step")
            if type(step) is not int or step < 0:
                raise _Corrupt(meta_path, f"step is {step!r}, expected an int >= 0")
            data = _read_verified(d / CHECKPOINT, meta, manifest=meta_path)
            payload = _torch_load(d / CHECKPOINT, data)
            if not isinstance(payload, dict):
                raise _Corrupt(d / CHECKPOINT, f"payload is a {type(payload).__name__}, not a dict")
        except _Corrupt as e:
            self._remove_checkpoint(d)
            logger.warning(
                "corrupt checkpoint: %s: %s; deleted it, training restarts from step 0",
                e.path, e.reason,
            )
            return None
        return Checkpoint(step=step, payload=payload)

    def _remove_checkpoint(self, d: Path) -> None:
        # The meta goes first: a checkpoint.pt without meta is treated as corrupt, never used.
        for name in (CHECKPOINT_META, CHECKPOINT):
            try:
                (d / name).unlink(missing_ok=True)
            except OSError as e:
                raise StoreError(f"could not remove {d / name}: {e}; delete it by hand") from e

    # ---------------------------------------------------------------- locking

    @contextlib.contextmanager
    def lock(
        self,
        fingerprint: str,
        device_class: str,
        seed_key: str,
        *,
        timeout: float | None = None,
    ) -> Iterator[Path]:
        """Cross-process exclusive lock on one seed (``<seed_dir>.lock``); yields the seed dir.

        Waits forever when ``timeout`` is None, else raises StoreError after ``timeout``
        seconds. The OS releases the lock if the holder dies, so a leftover lock file is
        harmless. The intended use: take the lock, then ``load_seed``; train and
        ``save_seed`` only if it returned None.
        """
        d = self.seed_dir(fingerprint, device_class, seed_key)
        if timeout is not None and not timeout >= 0:
            raise ValueError(f"lock timeout must be None or >= 0 seconds, got {timeout!r}")
        self._mkdir(d.parent)
        path = d.with_name(d.name + ".lock")
        flock = filelock.FileLock(path, timeout=-1 if timeout is None else timeout)
        t0 = time.monotonic()
        try:
            flock.acquire()
        except filelock.Timeout as e:
            raise StoreError(
                f"timed out after {timeout}s waiting for the lock {path}: another process "
                f"is training or writing this seed; wait for it, or raise the timeout"
            ) from e
        except OSError as e:
            raise StoreError(f"could not open the lock file {path}: {e}") from e
        waited = time.monotonic() - t0
        if waited > 1.0:
            logger.info("waited %.1fs for lock %s", waited, path)
        try:
            yield d
        finally:
            flock.release()

    @contextlib.contextmanager
    def try_lock(self, fingerprint: str, device_class: str, seed_key: str) -> Iterator[Path | None]:
        """:meth:`lock` without waiting: yields the seed dir if the lock was free (and holds
        it for the block), else None at once (another process holds it). This is how
        several processes asking for one family each take the next free seed."""
        d = self.seed_dir(fingerprint, device_class, seed_key)
        self._mkdir(d.parent)
        path = d.with_name(d.name + ".lock")
        flock = filelock.FileLock(path, timeout=0)
        try:
            flock.acquire()
        except filelock.Timeout:
            yield None
            return
        except OSError as e:
            raise StoreError(f"could not open the lock file {path}: {e}") from e
        try:
            yield d
        finally:
            flock.release()

    # ---------------------------------------------------------------- listing

    def entries(self) -> list[Entry]:
        """Every complete, verified seed entry, sorted by (fingerprint, device, seed_key).

        Read-only: entries that fail verification are skipped with a WARNING (a later
        ``load_seed`` moves them aside); incomplete ones are skipped silently.
        """
        out: list[Entry] = []
        for d in sorted(self.root.glob("*/*/*")):
            fp, dev, key = d.parent.parent.name, d.parent.name, d.name
            try:
                if not d.is_dir():
                    continue
                for kind, value in (("fingerprint", fp), ("device_class", dev), ("seed_key", key)):
                    _check_key(kind, value)
            except (ValueError, OSError):
                continue  # lock files, quarantined entries, foreign junk
            try:
                rec = self._read_seed(d, (fp, dev, key))
                manifest = json.loads((d / MANIFEST).read_bytes())
            except (_Corrupt, StoreError, OSError, ValueError) as e:
                logger.warning("skipping store entry %s: %s", d, e)
                continue
            if rec is None:
                continue
            files = manifest["files"]
            out.append(
                Entry(
                    fingerprint=fp,
                    device_class=dev,
                    seed_key=key,
                    path=d,
                    size_bytes=sum(int(files[n]["size"]) for n in _SEED_FILES),
                    created=str(manifest.get("created")),
                    name=rec.config.get("name"),
                    steps=rec.log.get("steps"),
                    final_loss=rec.log.get("final_loss"),
                )
            )
        return out

    # ---------------------------------------------------------------- family metadata

    def save_family_meta(self, fingerprint: str, *, config: dict[str, Any]) -> Path:
        """Atomically write ``<root>/<fingerprint>/family.json`` (sorted keys); its path."""
        d = self.root / _check_key("fingerprint", fingerprint)
        self._mkdir(d)
        path = d / FAMILY
        body = {"schema": SCHEMA_VERSION, "created": _now_iso(), "config": config}
        _atomic_write(path, _json_bytes(body, what=str(path)))
        return path

    def family_meta(self, fingerprint: str) -> dict[str, Any] | None:
        """The family's resolved config, or None if absent or unreadable (WARNING logged)."""
        path = self.root / _check_key("fingerprint", fingerprint) / FAMILY
        try:
            body = _parse_json(path, path.read_bytes())
            config = body.get("config")
            if not isinstance(config, dict):
                raise _Corrupt(path, "has no 'config' object")
        except FileNotFoundError:
            return None
        except OSError as e:
            logger.warning("unreadable family metadata %s: %s; ignoring it", path, e)
            return None
        except _Corrupt as e:
            logger.warning("corrupt family metadata %s: %s; ignoring it", e.path, e.reason)
            return None
        return config
