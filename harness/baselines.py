"""Stored baselines: one reviewable JSON file per reference family (or test) and device class.
One import for them; each job has its module:

- :mod:`harness.baseline_format`: where the files live (``<root>/<device-class>/<suite>/
  <test>.json``, ``<test>.obtained.json`` beside it), the schema and how values are written
  down (keys sorted, 6 significant digits, numeric lists on one line);
- :mod:`harness.baseline_io`: :func:`write_baseline` (atomic) and :func:`read_baseline`,
  which validates every key and raises :class:`BaselineError` naming the file, the key and
  the fix;
- :mod:`harness.baseline_header`: what a header records (:func:`make_header`) and when a
  stored one no longer describes the run (:func:`stale_reasons`, :func:`header_notes`).
"""

from __future__ import annotations

# ``baselines.os`` is patched by tests to make the atomic replace fail; SIGNIFICANT_DIGITS,
# OBTAINED_SUFFIX, VERSION_KEYS, PROVENANCE_KEYS, header and current_provenance are used as
# ``baselines.<name>`` too, though not in __all__.
import os  # noqa: F401

from harness.baseline_format import (HEADER_KEYS, OBTAINED_SUFFIX, PROVENANCE_KEYS, SCHEMA_VERSION,
                                     SIGNIFICANT_DIGITS, VERSION_KEYS, baseline_path, obtained_path,
                                     sanitize_test_name)
from harness.baseline_header import (current_provenance, header, header_notes, make_header,
                                     stale_reasons)
from harness.baseline_io import Baseline, BaselineError, read_baseline, write_baseline

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
