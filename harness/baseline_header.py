"""A baseline's header: what identifies its families and how their numbers were made, and
whether a stored header still describes the current run.

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

import platform
from datetime import datetime, timezone
from typing import Any, Mapping

from harness.baseline_format import (HEADER_KEYS, PROVENANCE_KEYS, SCHEMA_VERSION, VERSION_KEYS,
                                     _round)
from harness.results import Analysis

__all__ = ["current_provenance", "header", "make_header", "stale_reasons", "header_notes"]

# A change in these versions changes trained weights (so the baseline no longer describes
# its reference); the others are recorded for the reader.
_STALE_VERSIONS = {"torch_version": "torch", "cuda_version": "CUDA", "cudnn_version": "cuDNN"}
# analysis options that shape only a row's printed interval, never the per-seed values a
# check compares: a change is a note, not staleness
_NOTE_OPTIONS = ("ci", "ci_method")


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


# ----------------------------------------------------------------------------- staleness


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
