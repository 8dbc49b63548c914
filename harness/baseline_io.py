"""Baseline files on disk: written atomically, read back with every problem named.

:func:`write_baseline` writes a header and measurements in the format of
:mod:`harness.baseline_format`; :func:`read_baseline` parses a file and validates it (JSON,
header keys and types, each measurement's shapes and seed counts), raising
:class:`BaselineError` with the file, the key, what is wrong and how to fix it. Whether a
valid baseline is stale is decided from its header (:mod:`harness.baseline_header`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.baseline_format import HEADER_KEYS, SCHEMA_VERSION, _dump, _round
from harness.results import Measurement

__all__ = ["Baseline", "BaselineError", "write_baseline", "read_baseline"]

_FIX = "fix it by hand, or rewrite it by rerunning the test with --seedstab-update-baselines"


class BaselineError(Exception):
    """A baseline file that cannot be used; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class Baseline:
    """A parsed baseline file. ``measurements``: family -> metric -> Measurement; empty when
    the file's schema version is not :data:`SCHEMA_VERSION` (the body is not read then, and
    :func:`stale_reasons` reports the schema change)."""

    path: Path
    header: Mapping[str, Any]
    measurements: Mapping[str, Mapping[str, Measurement]]


# ----------------------------------------------------------------------------- writing


def write_baseline(path: str | os.PathLike[str], *, header: Mapping[str, Any],
                   measurements: Mapping[str, Mapping[str, Measurement]]) -> None:
    """Write a baseline (or an obtained file) atomically: temp file in the same directory,
    fsync, ``os.replace``; parent directories are created.

    ``measurements``: family -> metric name -> Measurement (seed-level values included).
    """
    path = Path(path)
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise ValueError(f"header: missing {missing}; build it with make_header()")
    body: dict[str, Any] = {}
    for fam, ms in measurements.items():
        body[str(fam)] = {}
        for metric, m in ms.items():
            if not isinstance(m, Measurement):
                raise TypeError(f"measurements[{fam!r}][{metric!r}]: expected a Measurement, "
                                f"got {type(m).__name__}")
            body[str(fam)][str(metric)] = m.to_dict()
    text = _dump(_round({"header": dict(header), "measurements": body})) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ----------------------------------------------------------------------------- reading


def _fail(path: Path, what: str) -> BaselineError:
    return BaselineError(f"{path}: {what}; {_FIX}")


def _check_header(path: Path, header: Any) -> None:
    if not isinstance(header, dict):
        raise _fail(path, f"'header' must be an object, got {type(header).__name__}")
    v = header.get("schema_version")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(path, f"header.schema_version must be an integer, got {v!r}")
    if v != SCHEMA_VERSION:
        return  # another schema: stale, and nothing else of it is read
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise _fail(path, f"header lacks {', '.join(missing)}")
    if not isinstance(header["device_class"], str):
        raise _fail(path, f"header.device_class must be a string, got {header['device_class']!r}")
    for key in ("fingerprints", "probe_digests"):
        d = header[key]
        if not isinstance(d, dict) or not all(isinstance(x, str) for x in d.values()):
            raise _fail(path, f"header.{key} must map family names to strings, got {d!r}")
    seeds = header["seeds"]
    if not isinstance(seeds, dict) or not all(
            isinstance(s, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in s)
            for s in seeds.values()):
        raise _fail(path, f"header.seeds must map family names to lists of integers, got {seeds!r}")
    keys = header["seed_keys"]
    if not isinstance(keys, dict) or not all(
            isinstance(k, list) and all(isinstance(x, str) for x in k) for k in keys.values()):
        raise _fail(path, f"header.seed_keys must map family names to lists of strings, got {keys!r}")
    for fam, k in keys.items():
        if fam in seeds and len(k) != len(seeds[fam]):
            raise _fail(path, f"header.seed_keys.{fam} lists {len(k)} seeds but header.seeds.{fam} "
                              f"{len(seeds[fam])}")


def _none_to_nan(x: Any) -> Any:
    if x is None:
        return np.nan
    return [_none_to_nan(v) for v in x] if isinstance(x, list) else x


def _array(path: Path, where: str, d: Mapping[str, Any], key: str) -> np.ndarray:
    """d[key] as a float array (JSON null -> NaN); a ragged or non-numeric list is an error."""
    try:
        a = np.asarray(_none_to_nan(d[key]), dtype=float)
    except (TypeError, ValueError) as e:
        raise _fail(path, f"{where}.{key} is not a rectangular array of numbers ({e})") from None
    return a


# A seed-level test needs at least this many seeds (harness.stats): a pairwise statistic
# with 2 seeds has a single pair and nothing to compare it with.
_MIN_SEEDS = {"per_seed": 2, "pairwise": 3}


def _check_seed_count(path: Path, where: str, key: str, m: int, fam: str,
                      seeds: list[int]) -> None:
    """The leading seed axis of ``where.key`` must match the header's seeds of ``fam`` and be
    large enough for a seed-level test."""
    if m != len(seeds):
        raise _fail(path, f"{where}.{key} holds values for {m} seed(s) but header.seeds.{fam} "
                          f"lists {len(seeds)}; the values and the header must describe the same "
                          "seeds")
    if m < _MIN_SEEDS[key]:
        raise _fail(path, f"{where}.{key} holds values for {m} seed(s); a seed-level test on it "
                          f"needs at least {_MIN_SEEDS[key]}")


def _parse_measurement(path: Path, fam: str, metric: str, d: Any,
                       seeds: list[int]) -> Measurement:
    """One measurement; ``seeds``: the header's seeds of ``fam``."""
    where = f"measurements.{fam}.{metric}"
    if not isinstance(d, dict):
        raise _fail(path, f"{where} must be an object, got {type(d).__name__}")
    missing = [k for k in ("name", "value", "lo", "hi", "higher_is_better") if k not in d]
    if missing:
        raise _fail(path, f"{where} lacks {', '.join(missing)}")
    if d["name"] != metric:
        raise _fail(path, f"{where}.name is {d['name']!r}, expected {metric!r}")
    if not isinstance(d["higher_is_better"], bool):
        raise _fail(path, f"{where}.higher_is_better must be true or false, got "
                          f"{d['higher_is_better']!r}")
    if d.get("per_seed") is None and d.get("pairwise") is None:
        raise _fail(path, f"{where} keeps neither per_seed nor pairwise values, so it cannot be "
                          "tested against")
    value = _array(path, where, d, "value")
    for key in ("lo", "hi"):
        if _array(path, where, d, key).shape != value.shape:
            raise _fail(path, f"{where}.{key} has a different shape from value {value.shape}")
    if d.get("per_seed") is not None:
        ps = _array(path, where, d, "per_seed")
        if ps.ndim < 1 or ps.shape[1:] != value.shape:
            raise _fail(path, f"{where}.per_seed has shape {ps.shape}, expected [M, *{value.shape}]")
        if not np.isfinite(ps).all():
            raise _fail(path, f"{where}.per_seed holds null/NaN; every seed needs a value")
        _check_seed_count(path, where, "per_seed", ps.shape[0], fam, seeds)
    if d.get("pairwise") is not None:
        pw = _array(path, where, d, "pairwise")
        if pw.ndim < 2 or pw.shape[0] != pw.shape[1] or pw.shape[2:] != value.shape:
            raise _fail(path, f"{where}.pairwise has shape {pw.shape}, expected "
                              f"[M, M, *{value.shape}]")
        off = ~np.eye(pw.shape[0], dtype=bool)
        if not np.isfinite(pw[off]).all():
            raise _fail(path, f"{where}.pairwise holds null/NaN off the diagonal; every seed "
                              "pair needs a value")
        _check_seed_count(path, where, "pairwise", pw.shape[0], fam, seeds)
    try:
        return Measurement.from_dict(d)
    except (TypeError, ValueError, KeyError) as e:  # pragma: no cover - checked above
        raise _fail(path, f"{where} does not parse ({e})") from None


def read_baseline(path: str | os.PathLike[str]) -> Baseline:
    """Parse and check a baseline file; every problem raises :class:`BaselineError` naming the
    file, the JSON key, what is wrong and what to do: JSON syntax (line and column), missing
    header keys, wrong types, a measurement that does not parse, shapes that disagree
    (value / lo / hi / per_seed [M, ...] / pairwise [M, M, ...]), a seed axis whose length M
    is not the number of the family's seeds in the header, or too few seeds for a seed-level
    test (per_seed: 2, pairwise: 3).

    What needs the run to check (a metric's direction or layer count changed) is left to the
    comparison."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such baseline file; create it by rerunning the test "
                            "with --seedstab-update-baselines") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(path, f"cannot be read ({e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(doc, dict):
        raise _fail(path, f"expected a JSON object with 'header' and 'measurements', got "
                          f"{type(doc).__name__}")
    missing = [k for k in ("header", "measurements") if k not in doc]
    if missing:
        raise _fail(path, f"lacks {' and '.join(repr(k) for k in missing)}")
    header = doc["header"]
    _check_header(path, header)
    if header["schema_version"] != SCHEMA_VERSION:
        return Baseline(path=path, header=header, measurements={})
    body = doc["measurements"]
    if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
        raise _fail(path, "'measurements' must map family names to objects of metrics")
    for fam in body:
        if fam not in header["seeds"]:
            raise _fail(path, f"measurements.{fam} has no header.seeds.{fam}; the header must "
                              "list the seeds of every family it holds values for")
    ms = {fam: {metric: _parse_measurement(path, fam, metric, d, header["seeds"][fam])
                for metric, d in fm.items()}
          for fam, fm in body.items()}
    return Baseline(path=path, header=header, measurements=ms)
