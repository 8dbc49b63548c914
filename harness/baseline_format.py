"""The baseline file format: where the files live and how their values are written down.

Layout: ``<root>/<device-class>/<suite>/<test>.json``, ``<test>`` being the pytest node name
made safe for file names (``test_x[adam-8]`` -> ``test_x-adam-8``). A failing or missing
check writes ``<test>.obtained.json`` beside it (same format), so accepting a result is a
rename or a rerun with ``--seedstab-update-baselines``.

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

Writing and reading the files: :mod:`harness.baseline_io`; the header's contents and when a
baseline is stale: :mod:`harness.baseline_header`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["SCHEMA_VERSION", "SIGNIFICANT_DIGITS", "OBTAINED_SUFFIX", "VERSION_KEYS",
           "PROVENANCE_KEYS", "HEADER_KEYS", "sanitize_test_name", "baseline_path",
           "obtained_path"]

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


# ----------------------------------------------------------------------------- encoding


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
