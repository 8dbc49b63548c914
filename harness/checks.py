"""Checks declared in a suite file: "is the candidate family less stable than its reference?"

A suite file's ``checks:`` section names, per check, a candidate family (the change) and a
reference family (what it must not be worse than)::

    regression:                      # defaults for every check of the file
      alpha: 0.05
      tolerance: {default: 0.03, head_cka.debiased: 0.05}
      metrics: [head_stability.all_anchors, content_specific.all_anchors]
    checks:
      adam: {candidate: adam}        # reference defaults to the candidate: "same family, code edited"
      lion_vs_adam: {candidate: lion, reference: adam, tolerance: 0.03}
      mine_vs_smoke: {candidate: mine, reference: ../smoke/smoke.yaml::adam}

Keys of a check: ``candidate`` (a family of this file, or ``FILE::FAMILY`` relative to it),
``reference`` (the same forms; default: the candidate), ``metrics``, ``tolerance`` (one
number, or per metric with an optional ``default``), ``alpha``, ``inconclusive`` (``fail``
or ``pass``: whether a check that is worse than its tolerance without a significant test
fails), ``description``. Missing keys come from the file's ``regression:`` section.

Every bad input raises one :class:`~harness.config.ConfigError` naming the file and the key,
e.g. ``suites/x.yaml: checks.lion_vs_adam.reference: no family 'adma'; this file has: …``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.config import ConfigError, FamilyConfig, Suite, load_suite
from harness.verdict import INCONCLUSIVE_DEFAULT

__all__ = ["CheckSpec", "load_checks", "default_check", "default_tolerance", "CHECK_KEYS",
           "INCONCLUSIVE_DEFAULT"]

CHECK_KEYS = {"candidate", "reference", "metrics", "tolerance", "alpha", "inconclusive", "description"}
_METRIC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


@dataclass(frozen=True)
class CheckSpec:
    """One declared check, validated. ``reference_suite``: the suite name of the file that
    defines the reference (its baseline lives under ``baselines/<device>/<reference_suite>/``).
    ``tolerance``: per metric name, every metric present."""

    name: str
    source: str
    suite: str
    candidate: FamilyConfig
    reference: FamilyConfig
    reference_suite: str
    reference_source: str
    metrics: tuple[str, ...]
    tolerance: Mapping[str, float]
    alpha: float
    inconclusive: str = INCONCLUSIVE_DEFAULT
    description: str = ""
    same_family: bool = field(default=False)

    @property
    def key(self) -> str:
        return f"checks.{self.name}"


def _family(suite: Suite, spec: Any, *, key: str) -> tuple[FamilyConfig, str, str]:
    """(family, suite name, source file) for ``name`` or ``FILE::NAME``."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(suite.source, key, f"expected a family name or FILE::FAMILY, got {spec!r}")
    if "::" in spec:
        file, _, name = spec.partition("::")
        path = Path(file)
        if not path.is_absolute():
            path = Path(suite.source).parent / path
        if not path.is_file():
            raise ConfigError(suite.source, key, f"file {str(path)!r} does not exist")
        try:
            other = load_suite(path)
        except ConfigError as e:
            raise ConfigError(suite.source, key, f"cannot load {file!r}: {e}") from None
        if name not in other.families:
            raise ConfigError(suite.source, key, f"{file!r} has no family {name!r}; it has: "
                              f"{', '.join(other.families)}")
        return other.families[name], other.name, other.source
    if spec not in suite.families:
        raise ConfigError(suite.source, key, f"no family {spec!r}; this file has: "
                          f"{', '.join(suite.families)}")
    return suite.families[spec], suite.name, suite.source


def _metrics(value: Any, source: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(source, key, f"expected a non-empty list of metric names, got {value!r}")
    for m in value:
        if not isinstance(m, str) or not _METRIC_RE.match(m):
            raise ConfigError(source, key, f"expected metric names like head_stability.all_anchors, "
                              f"got {m!r}")
    if len(set(value)) != len(value):
        raise ConfigError(source, key, f"metrics repeat: {list(value)}")
    return tuple(value)


def _number(value: Any, source: str, key: str, *, what: str, low: float, high: float | None,
            open_low: bool) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (high is None or value < high)
    if not ok:
        raise ConfigError(source, key, f"expected {what}, got {value!r}")
    return float(value)


def _tolerance(value: Any, metrics: tuple[str, ...], source: str, key: str) -> dict[str, float]:
    what = "a number >= 0 (absolute, in the metric's units)"
    if isinstance(value, Mapping):
        # entries for metrics a check does not use are allowed: the file's defaults are shared
        per = {k: _number(v, source, f"{key}.{k}", what=what, low=0.0, high=None, open_low=False)
               for k, v in value.items()}
        out = {}
        for m in metrics:
            if m in per:
                out[m] = per[m]
            elif "default" in per:
                out[m] = per["default"]
            else:
                raise ConfigError(source, key, f"no tolerance for {m!r}; add it or a 'default'")
        return out
    t = _number(value, source, key, what=what, low=0.0, high=None, open_low=False)
    return {m: t for m in metrics}


def _check(suite: Suite, name: str, raw: Any, defaults: Mapping[str, Any]) -> CheckSpec:
    key = f"checks.{name}"
    src = suite.source
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(src, key, f"expected a mapping of check keys, got {raw!r}")
    for k in raw:
        if k not in CHECK_KEYS:
            raise ConfigError(src, f"{key}.{k}", f"unknown key; expected one of: {', '.join(sorted(CHECK_KEYS))}")
    if "candidate" not in raw:
        raise ConfigError(src, f"{key}.candidate", "required: the family that holds the change")
    cand, _, cand_source = _family(suite, raw["candidate"], key=f"{key}.candidate")
    ref_spec = raw.get("reference", raw["candidate"])
    ref, ref_suite, ref_source = _family(suite, ref_spec, key=f"{key}.reference")

    def pick(k: str) -> tuple[Any, str]:
        if k in raw:
            return raw[k], f"{key}.{k}"
        if k in defaults:
            return defaults[k], f"regression.{k}"
        raise ConfigError(src, f"{key}.{k}", "required (here or in the file's regression: section)")

    value, where = pick("metrics")
    metrics = _metrics(value, src, where)
    value, where = pick("tolerance")
    tolerance = _tolerance(value, metrics, src, where)
    value, where = pick("alpha")
    alpha = _number(value, src, where, what="a level strictly between 0 and 1 (e.g. 0.05)",
                    low=0.0, high=1.0, open_low=True)
    inconclusive = raw.get("inconclusive", defaults.get("inconclusive", INCONCLUSIVE_DEFAULT))
    if inconclusive not in ("fail", "pass"):
        where = f"{key}.inconclusive" if "inconclusive" in raw else "regression.inconclusive"
        raise ConfigError(src, where, f"expected fail or pass, got {inconclusive!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(src, f"{key}.description", f"expected a string, got {description!r}")
    return CheckSpec(name=name, source=src, suite=suite.name, candidate=cand, reference=ref,
                     reference_suite=ref_suite, reference_source=ref_source, metrics=metrics,
                     tolerance=tolerance, alpha=alpha, inconclusive=inconclusive,
                     description=description,
                     same_family=(Path(ref_source).resolve() == Path(cand_source).resolve()
                                  and ref.name == cand.name))


def _defaults(suite: Suite) -> dict[str, Any]:
    reg = dict(suite.regression or {})
    for k in reg:
        if k not in {"metrics", "tolerance", "alpha", "inconclusive"}:
            raise ConfigError(suite.source, f"regression.{k}",
                              "unknown key; expected one of: alpha, inconclusive, metrics, tolerance")
    return reg


def load_checks(suite: Suite | str | Path) -> dict[str, CheckSpec]:
    """The checks of a suite file, in file order; ConfigError naming file and key."""
    s = suite if isinstance(suite, Suite) else load_suite(suite)
    defaults = _defaults(s)
    out: dict[str, CheckSpec] = {}
    for name, raw in (s.checks or {}).items():
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", name):
            raise ConfigError(s.source, "checks", f"check names must be plain words "
                              f"(letters, digits, _ . -), got {name!r}")
        out[name] = _check(s, name, raw, defaults)
    _unused_tolerances(s, out)
    return out


def _unused_tolerances(suite: Suite, checks: Mapping[str, CheckSpec]) -> None:
    """A tolerance for a metric that no check of the file measures is a typo (it would leave
    the real metric on the default silently): ConfigError naming it."""
    used = {m for c in checks.values() for m in c.metrics}
    used |= set((suite.regression or {}).get("metrics") or [])
    sources = [("regression.tolerance", (suite.regression or {}).get("tolerance"))]
    sources += [(f"checks.{n}.tolerance", (raw or {}).get("tolerance"))
                for n, raw in (suite.checks or {}).items() if isinstance(raw, Mapping)]
    for where, tol in sources:
        if isinstance(tol, Mapping):
            for k in tol:
                if k != "default" and k not in used:
                    raise ConfigError(suite.source, f"{where}.{k}", "no check of this file measures "
                                      f"{k!r}; a typo? metrics checked: {', '.join(sorted(used)) or 'none'}")


def default_check(suite: Suite, candidate: str, reference: str | None = None, *,
                  overrides: Mapping[str, Any] | None = None) -> CheckSpec:
    """A check built from the file's ``regression:`` defaults for ``candidate`` against
    ``reference`` (default: itself): what ``seedstab check FILE::FAMILY`` runs."""
    raw: dict[str, Any] = {"candidate": candidate}
    if reference is not None:
        raw["reference"] = reference
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    name = candidate if reference is None else f"{candidate}_vs_{reference.rpartition('::')[2]}"
    return _check(suite, name, raw, _defaults(suite))


def default_tolerance(check: CheckSpec, metric: str) -> float:
    """The tolerance the check's file gives ``metric`` (its ``regression.tolerance``:
    the metric's entry, else ``default``); ConfigError when it gives none."""
    suite = load_suite(check.source)
    value = (suite.regression or {}).get("tolerance")
    if value is None:
        raise ConfigError(check.source, "regression.tolerance", f"no tolerance for {metric!r}; "
                          "give one with --tolerance")
    return _tolerance(value, (metric,), check.source, "regression.tolerance")[metric]
