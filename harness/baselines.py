"""Stored baselines: one reviewable JSON file per reference family (or test) and device class.

Layout: ``<root>/<device-class>/<suite>/<test>.json``, ``<test>`` being the pytest node name
made safe for file names (``test_x[adam-8]`` -> ``test_x-adam-8``). A failing or missing
check writes ``<test>.obtained.json`` beside it (same format), so accepting a result is a
rename or a rerun with ``--update-baselines``.

File format (schema version :data:`SCHEMA_VERSION`), keys sorted, floats rounded to 6
significant digits, numeric lists on one line so a diff shows which layer moved::

    {
      "header": {"schema_version": 2, "fingerprints": {family: fp}, "probe_digests": {family: d},
                 "seeds": {family: [..]}, "seed_keys": {family: ["init0-data0", ..]},
                 "metric_digest": .., "training_digest": .., "analysis_options": {..},
                 "device_class": .., "device_name": .., "harness_version": ..,
                 "torch_version": .., "cuda_version": .., "cudnn_version": ..,
                 "numpy_version": .., "scipy_version": .., "python_version": .., "created": ..},
      "measurements": {family: {metric: Measurement.to_dict() (with pairwise / per_seed)}}
    }

``seed_keys`` name each seed by what it seeds (init and data order), so a check can pair a
candidate's seeds with the reference's; ``metric_digest`` and ``training_digest`` hash the
harness code that computed the numbers and trained the weights.

A baseline whose header no longer matches the run is *stale*: the schema, the device class,
the family set, a family's fingerprint, probe digest or seeds, the metric or training code,
an analysis option that changes the compared values, or the torch / CUDA / cuDNN version
(they change trained weights). :func:`stale_reasons` says why, and it is reported as such,
never as a regression. The harness, numpy, scipy and Python versions, the device name and
the interval options ``ci`` / ``ci_method`` are recorded for the reader and reported by
:func:`header_notes`, but do not make a baseline stale.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.results import Analysis, Measurement

__all__ = [
    "SCHEMA_VERSION",
    "HEADER_KEYS",
    "Baseline",
    "BaselineError",
    "sanitize_test_name",
    "baseline_path",
    "obtained_path",
    "make_header",
    "write_baseline",
    "read_baseline",
    "stale_reasons",
    "header_notes",
]

SCHEMA_VERSION = 2
SIGNIFICANT_DIGITS = 6
OBTAINED_SUFFIX = ".obtained.json"
VERSION_KEYS: tuple[str, ...] = (
    "harness_version", "torch_version", "cuda_version", "cudnn_version", "numpy_version",
    "scipy_version", "python_version",
)
# What decides the stored numbers besides the family itself: the code that computes them,
# the harness code that trained the seeds, and the analysis options.
PROVENANCE_KEYS: tuple[str, ...] = ("metric_digest", "training_digest", "analysis_options")
HEADER_KEYS: tuple[str, ...] = (
    "schema_version", "fingerprints", "probe_digests", "seeds", "seed_keys", "device_class",
    "device_name", "created", *PROVENANCE_KEYS, *VERSION_KEYS,
)
# A change in these versions changes trained weights (so the baseline no longer describes
# its reference); the others are recorded for the reader.
_STALE_VERSIONS = {"torch_version": "torch", "cuda_version": "CUDA", "cudnn_version": "cuDNN"}
# analysis options that shape only a row's printed interval, never the per-seed values a
# check compares: a change is a note, not staleness
_NOTE_OPTIONS = ("ci", "ci_method")
_FIX = "fix it by hand, or rewrite it by rerunning the test with --update-baselines"


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


# ----------------------------------------------------------------------------- paths


def sanitize_test_name(name: str) -> str:
    """A pytest node name as a file stem: ``test_x[p-1]`` -> ``test_x-p-1``; other characters
    outside ``[A-Za-z0-9_.-]`` become ``-`` (runs collapsed, none leading or trailing)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"test: expected a non-empty test name, got {name!r}")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.replace("]", ""))
    stem = re.sub(r"-{2,}", "-", stem).strip("-.")
    if not stem:
        raise ValueError(f"test: {name!r} leaves no usable file name")
    return stem


def _component(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or value in (".", "..") or \
            re.search(r"[/\\\x00]", value):
        raise ValueError(f"{what}: expected a plain directory name (no '/', not empty), "
                         f"got {value!r}")
    return value


def baseline_path(root: str | os.PathLike[str], *, device_class: str, suite: str,
                  test: str) -> Path:
    """``<root>/<device_class>/<suite>/<sanitized test>.json``."""
    return (Path(root) / _component("device_class", device_class) / _component("suite", suite)
            / f"{sanitize_test_name(test)}.json")


def obtained_path(path: str | os.PathLike[str]) -> Path:
    """Where a result that is not (yet) the baseline goes: ``<test>.obtained.json``."""
    p = Path(path)
    stem = p.name[:-len(".json")] if p.name.endswith(".json") else p.name
    return p.with_name(stem + OBTAINED_SUFFIX)


# ----------------------------------------------------------------------------- header


def _versions() -> dict[str, str | None]:
    from harness.provenance import runtime_versions  # lazily: it imports torch

    v = runtime_versions()
    return {"harness_version": v.get("seedstab"), "torch_version": v.get("torch"),
            "cuda_version": v.get("cuda"), "cudnn_version": v.get("cudnn"),
            "numpy_version": v.get("numpy"), "scipy_version": v.get("scipy"),
            "python_version": v.get("python")}


def current_provenance(analysis_options: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance part of a header for this installation: the digests of the metric
    code and of the harness's training code, and ``analysis_options`` (the options that
    change stored values, as a plain mapping)."""
    from harness.provenance import harness_digest, metric_digest

    return {"metric_digest": metric_digest(), "training_digest": harness_digest(),
            "analysis_options": _round(dict(analysis_options))}


def _device_name(device_class: str) -> str:
    if device_class.startswith("cuda"):
        try:
            import torch
            if torch.cuda.is_available():
                return str(torch.cuda.get_device_name())
        except ImportError:  # pragma: no cover
            pass
    return platform.processor() or platform.machine() or "unknown"


def header(*, fingerprints: Mapping[str, str], probe_digests: Mapping[str, str],
           seeds: Mapping[str, Any], seed_keys: Mapping[str, Any], device_class: str,
           provenance: Mapping[str, Any], device_name: str | None = None,
           created: str | None = None,
           versions: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """A baseline header from what identifies its families (family name -> value) and how
    their numbers were made. ``provenance``: :data:`PROVENANCE_KEYS` (see
    :func:`current_provenance`); ``device_name`` defaults to the CUDA device's or the CPU's
    name; ``created`` to now (UTC, ISO 8601); ``versions`` (:data:`VERSION_KEYS`) to the
    installed ones. It can be built before anything trains, so staleness is decided first."""
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "fingerprints": {k: str(v) for k, v in sorted(fingerprints.items())},
        "probe_digests": {k: str(v) for k, v in sorted(probe_digests.items())},
        "seeds": {k: [int(s) for s in v] for k, v in sorted(seeds.items())},
        "seed_keys": {k: [str(s) for s in v] for k, v in sorted(seed_keys.items())},
        "device_class": device_class,
        "device_name": device_name or _device_name(device_class),
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    missing = [k for k in PROVENANCE_KEYS if k not in provenance]
    if missing:
        raise ValueError(f"provenance: missing {missing}; build it with current_provenance()")
    out.update({k: provenance[k] for k in PROVENANCE_KEYS})
    out.update(dict(versions) if versions is not None else _versions())
    missing = [k for k in HEADER_KEYS if k not in out]
    if missing:
        raise ValueError(f"versions: missing {missing}")
    return out


def make_header(analyses: Mapping[str, Analysis], *, provenance: Mapping[str, Any] | None = None,
                seed_keys: Mapping[str, Any] | None = None, device_name: str | None = None,
                created: str | None = None,
                versions: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The header for a baseline of ``analyses`` (family name -> Analysis, one or more).

    All analyses must share one device class. ``seed_keys`` (family -> the seeds'
    init/data keys) default to ``analysis.info["seed_keys"]``, else ``init{s}-data{s}``;
    ``device_name`` to ``analysis.info["device_name"]``; ``provenance`` to this
    installation's with the default analysis options; the rest as in :func:`header`.
    """
    if not isinstance(analyses, Mapping) or not analyses:
        raise ValueError("analyses: expected a non-empty mapping of family name -> Analysis")
    for key, a in analyses.items():
        if not isinstance(a, Analysis):
            raise TypeError(f"analyses[{key!r}]: expected an Analysis, got {type(a).__name__}")
    classes = sorted({a.device_class for a in analyses.values()})
    if len(classes) != 1:
        raise ValueError(f"analyses: families ran on different device classes {classes}; one "
                         "baseline file holds one device class")
    if device_name is None:
        names = {str(a.info["device_name"]) for a in analyses.values() if "device_name" in a.info}
        device_name = names.pop() if len(names) == 1 else None
    if provenance is None:
        from harness.analysis import AnalysisOptions  # lazily: it imports torch
        from harness.gate import options_record

        provenance = current_provenance(options_record(AnalysisOptions()))
    keys = dict(seed_keys or {})
    for k, a in analyses.items():
        keys.setdefault(k, a.info.get("seed_keys") or [f"init{s}-data{s}" for s in a.seeds])
    return header(fingerprints={k: a.fingerprint for k, a in analyses.items()},
                  probe_digests={k: a.probe_digest for k, a in analyses.items()},
                  seeds={k: a.seeds for k, a in analyses.items()}, seed_keys=keys,
                  device_class=classes[0], provenance=provenance, device_name=device_name,
                  created=created, versions=versions)


def _short(x: Any) -> str:
    s = str(x)
    return s if len(s) <= 12 else s[:12] + "…"


def stale_reasons(stored_header: Mapping[str, Any], current_header: Mapping[str, Any], *,
                  seeds: bool = True) -> list[str]:
    """Why a stored baseline no longer describes its families (empty: it does). One line
    each, e.g. ``fingerprint of family adam changed: 1a2b3c4d5e6f… -> 9f8e7d6c5b4a…``.

    Stale: the schema, the device class, the family set, a family's fingerprint, probe
    digest or seeds, the metric code, the harness's training code, the analysis options,
    and the torch / CUDA / cuDNN versions (they change trained weights). ``seeds=False``
    when the current header describes a candidate tested against the stored one (other seeds
    are then the point, not staleness)."""
    out: list[str] = []
    s_v, c_v = stored_header.get("schema_version"), current_header.get("schema_version")
    if s_v != c_v:
        out.append(f"schema version changed: {s_v} -> {c_v}")
        return out  # nothing else in an old-schema header is comparable
    s_dc, c_dc = stored_header.get("device_class"), current_header.get("device_class")
    if s_dc != c_dc:
        out.append(f"device class changed: {s_dc} -> {c_dc}")
    s_fp = dict(stored_header.get("fingerprints") or {})
    c_fp = dict(current_header.get("fingerprints") or {})
    for fam in sorted(set(c_fp) - set(s_fp)):
        out.append(f"family {fam} is not in the baseline")
    for fam in sorted(set(s_fp) - set(c_fp)):
        out.append(f"family {fam} is in the baseline but not in this run")
    for fam in sorted(set(s_fp) & set(c_fp)):
        for key, what in (("fingerprints", "fingerprint"), ("probe_digests", "probe digest")):
            s_x = (stored_header.get(key) or {}).get(fam)
            c_x = (current_header.get(key) or {}).get(fam)
            if s_x != c_x:
                out.append(f"{what} of family {fam} changed: {_short(s_x)} -> {_short(c_x)}")
        for key in ("seed_keys", "seeds") if seeds else ():
            s_x = (stored_header.get(key) or {}).get(fam)
            c_x = (current_header.get(key) or {}).get(fam)
            if s_x != c_x:
                out.append(f"seeds of family {fam} changed: {s_x} -> {c_x}")
                break
    for key, what in (("metric_digest", "the metric code"),
                      ("training_digest", "the harness's training code")):
        if stored_header.get(key) != current_header.get(key):
            out.append(f"{what} changed ({key} {stored_header.get(key)} -> "
                       f"{current_header.get(key)}): the stored numbers were made by other code")
    s_o = dict(stored_header.get("analysis_options") or {})
    c_o = dict(current_header.get("analysis_options") or {})
    for k in sorted(set(s_o) | set(c_o)):
        if k not in _NOTE_OPTIONS and s_o.get(k) != c_o.get(k):
            out.append(f"analysis option {k} changed: {s_o.get(k)!r} -> {c_o.get(k)!r}")
    for key, label in _STALE_VERSIONS.items():
        if stored_header.get(key) != current_header.get(key):
            out.append(f"{label} version changed: {stored_header.get(key)} -> "
                       f"{current_header.get(key)} (it changes trained weights)")
    return out


def header_notes(stored_header: Mapping[str, Any], current_header: Mapping[str, Any]) -> list[str]:
    """Differences worth a line in the report that do not make a baseline stale
    (harness, numpy, scipy and Python versions, device name, the interval options ``ci`` and
    ``ci_method``, which change a row's printed interval but not the per-seed values compared)."""
    out = []
    for key in (*[k for k in VERSION_KEYS if k not in _STALE_VERSIONS], "device_name"):
        label = key.replace("_version", "").replace("_", " ")
        if stored_header.get(key) != current_header.get(key):
            out.append(f"{label} differs from the baseline's: {stored_header.get(key)} -> "
                       f"{current_header.get(key)}")
    s_o = dict(stored_header.get("analysis_options") or {})
    c_o = dict(current_header.get("analysis_options") or {})
    for k in _NOTE_OPTIONS:
        if s_o.get(k) != c_o.get(k):
            out.append(f"analysis option {k} differs from the baseline's: {s_o.get(k)!r} -> "
                       f"{c_o.get(k)!r} (intervals only; the compared values are unchanged)")
    return out


# ----------------------------------------------------------------------------- writing


def _round(x: Any) -> Any:
    """Floats to SIGNIFICANT_DIGITS significant digits (NaN/inf -> None), recursively."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return float(f"{v:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Mapping):
        return {str(k): _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    if isinstance(x, np.ndarray):
        return _round(x.tolist())
    raise TypeError(f"cannot store a {type(x).__name__} in a baseline: {x!r}")


def _dump(x: Any, indent: int = 0) -> str:
    """JSON with sorted keys, two-space indent, and lists of scalars on one line."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(x, dict):
        if not x:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_dump(x[k], indent + 1)}" for k in sorted(x)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(x, list):
        if all(not isinstance(v, (dict, list)) for v in x):
            return "[" + ", ".join(json.dumps(v) for v in x) + "]"
        return "[\n" + ",\n".join(inner + _dump(v, indent + 1) for v in x) + "\n" + pad + "]"
    return json.dumps(x, allow_nan=False)


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
                            "with --update-baselines") from None
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
