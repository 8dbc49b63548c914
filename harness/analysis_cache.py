"""Analyses kept on disk by a content key, so a rerun over the same trained seeds computes
nothing.

An analysis is a pure function of the trained models, the probe prompts, the analysis
options and the code that measures (plus the library versions that run it). The key is a
sha256 over exactly those, each named in the entry's ``parts`` so a miss can be explained:

* ``seeds``: the store keys the family's seeds were filed under (the store fingerprint of
  :func:`harness.provenance.store_fingerprint`, each seed's ``init<i>-data<d>`` key) and a
  digest of the weights the models hold now, which also tells apart what the device key
  does (device, thread count, packed training) and a model edited in memory;
* ``probe``: the probe tokens' digest and shape;
* ``options``: every field of :class:`harness.analysis.AnalysisOptions`;
* ``metric_code``: :func:`harness.provenance.metric_digest`; ``versions``: numpy, scipy,
  torch and Python.

Layout: ``<cache_dir>/<key>.json`` (the store puts it at ``<store root>/analyses``), one
JSON object with the schema, the key, its parts, the sha256 of the serialised Analysis and
the Analysis itself (:meth:`harness.results.Analysis.to_dict`, which reads back exactly).
Entries are written atomically (temp file, fsync, rename). An entry that is unreadable,
fails its checksum or holds another key is recomputed and replaced, with a WARNING; a
cache that cannot be written costs the next run a recomputation, never this one its result.
Concurrent runs (pytest-xdist workers) take a per-key file lock, so one computes and the
others read its entry.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

import filelock
import torch

from harness import data as data_mod
from harness.analysis import analyze
from harness.analysis.options import AnalysisOptions
from harness.family import Family
from harness.provenance import metric_digest, runtime_versions, store_fingerprint
from harness.results import Analysis
from harness.store import StoreError, _atomic_write

log = logging.getLogger(__name__)

SCHEMA = 1
LOCK_TIMEOUT_S = 600.0  # a worker waits this long for another one computing the same analysis


def weights_digest(family: Family) -> str:
    """sha256 over every seed's state dict (names, dtypes, shapes and bytes, in seed order)."""
    h = hashlib.sha256()
    for s in family.seeds:
        for name, t in s.model.state_dict().items():
            a = t.detach().to("cpu").contiguous()
            h.update(f"{s.seed}\0{name}\0{a.dtype}\0{tuple(a.shape)}\0".encode())
            h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _metric_code() -> str:
    """The metric code's digest, once per process (it parses every measuring module)."""
    return metric_digest()


_STORE_FINGERPRINTS: dict[str, str] = {}


def _store_fingerprint(family: Family) -> str:
    """The family's store fingerprint, once per process and family (it digests code)."""
    fp = family.fingerprint
    if fp not in _STORE_FINGERPRINTS:
        _STORE_FINGERPRINTS[fp] = store_fingerprint(family.config)
    return _STORE_FINGERPRINTS[fp]


def key_parts(family: Family, *, options: AnalysisOptions, tokens: torch.Tensor) -> dict[str, Any]:
    """Everything the Analysis of ``family`` depends on, as plain JSON values."""
    cfg = family.config
    versions = runtime_versions()
    return {
        "schema": SCHEMA,
        "family": {"name": cfg.name, "fingerprint": family.fingerprint, "device_class": family.device_class},
        "seeds": {"store_fingerprint": _store_fingerprint(family),
                  "seed_keys": [[s.seed, s.seed_key] for s in family.seeds],
                  "weights": weights_digest(family)},
        "probe": {"digest": data_mod.digest(tokens), "shape": list(tokens.shape)},
        "options": json.loads(json.dumps(dataclasses.asdict(options))),
        "metric_code": _metric_code(),
        "versions": {k: versions.get(k) for k in ("numpy", "scipy", "torch", "python")},
    }


def cache_key(parts: dict[str, Any]) -> str:
    """32 hex digits of sha256 over the canonical JSON of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _checksum(analysis: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(analysis, sort_keys=True).encode()).hexdigest()


def _read(path: Path, key: str) -> Analysis | None:
    """The entry's Analysis; None when absent; raises ValueError saying why it is unusable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"unreadable ({e})") from None
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("analysis"), dict):
        raise ValueError("not an analysis cache entry (no 'analysis' object)")
    if entry.get("schema") != SCHEMA or entry.get("key") != key:
        raise ValueError(f"schema {entry.get('schema')!r} / key {entry.get('key')!r}, expected {SCHEMA} / {key}")
    if entry.get("sha256") != _checksum(entry["analysis"]):
        raise ValueError("checksum mismatch (the file was changed or cut short)")
    try:
        return Analysis.from_dict(entry["analysis"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed analysis ({type(e).__name__}: {e})") from None


def _write(path: Path, key: str, parts: dict[str, Any], analysis: Analysis) -> None:
    body = analysis.to_dict()
    entry = {"schema": SCHEMA, "key": key, "parts": parts, "sha256": _checksum(body), "analysis": body}
    try:
        _atomic_write(path, (json.dumps(entry, sort_keys=True) + "\n").encode())
    except (StoreError, TypeError, ValueError) as e:
        log.warning("analysis cache: could not write %s (%s); the next run recomputes this analysis", path, e)


def analyze_cached(family: Family, *, options: AnalysisOptions = AnalysisOptions(),
                   cache_dir: str | Path | None,
                   progress: Callable[[str], None] | None = None) -> Analysis:
    """:func:`harness.analysis.analyze_family` of ``family``, read from ``cache_dir`` when an
    entry with the same content key is there, else computed and stored (``cache_dir`` None:
    always computed, nothing stored). A corrupt entry is recomputed and replaced with a
    WARNING naming the file and what is wrong with it."""
    tokens = analyze.probe_tokens(family.config)
    if cache_dir is None:
        return analyze.analyze_family(family, options=options, progress=progress, tokens=tokens)
    directory = Path(cache_dir)
    parts = key_parts(family, options=options, tokens=tokens)
    key = cache_key(parts)
    path = directory / f"{key}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(directory / f"{key}.lock"), timeout=LOCK_TIMEOUT_S)
        lock.acquire()
    except (OSError, filelock.Timeout) as e:
        log.warning("analysis cache: cannot use %s (%s); computing %s without it", directory, e,
                    family.config.name)
        return analyze.analyze_family(family, options=options, progress=progress, tokens=tokens)
    try:
        try:
            cached = _read(path, key)
        except ValueError as e:
            log.warning("analysis cache: entry %s is unusable: %s; recomputing and replacing it", path, e)
            cached = None
        if cached is not None:
            log.info("%s: analysis read from the cache (%s)", family.config.name, path)
            return cached
        analysis = analyze.analyze_family(family, options=options, progress=progress, tokens=tokens)
        _write(path, key, parts, analysis)
        return analysis
    finally:
        lock.release()


__all__ = ["SCHEMA", "analyze_cached", "cache_key", "key_parts", "weights_digest"]
