"""The ``stability_baseline`` fixture: a Python test checks its analyses against its own
stored baseline, under the same gate policy as a YAML check (:func:`harness.verdict.decide`).

``stability_baseline.check(analyses, metrics=[...], tolerance=..., alpha=..., suite=...)``
compares with ``baselines/<device-class>/<suite>/<test>.json``. A missing, stale, invalid,
underpowered, regressed or (by default) inconclusive result fails the test with a report
and, where there is something to accept, writes ``<test>.obtained.json``;
``--seedstab-update-baselines`` rewrites the file. With several families in one check each
family is tested on its own seeds at ``alpha / n_families`` (Bonferroni over families, so the
check's error stays at ``alpha``).
"""

from __future__ import annotations

import shlex
import warnings
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pytest

from harness.baselines import (BaselineError, baseline_path, current_provenance, header_notes,
                               make_header, obtained_path, read_baseline, stale_reasons,
                               write_baseline)
from harness.results import Analysis, Measurement
from harness.verdict import (INCONCLUSIVE_DEFAULT, Row, Verdict, check_parameters, decide, plan,
                             resolve_tolerance)
from harness.verdict_report import format_report

__all__ = ["StabilityBaseline", "SeedstabInconclusive"]

P_STATUS, P_BASELINE, P_WRITTEN = "seedstab_status", "seedstab_baseline", "seedstab_written"


class SeedstabInconclusive(UserWarning):
    """A check worse than its tolerance that the seeds could not confirm (reported, not failed)."""


def _as_mapping(analyses: Mapping[str, Analysis] | Analysis) -> dict[str, Analysis]:
    if isinstance(analyses, Analysis):
        return {analyses.family: analyses}
    if isinstance(analyses, Mapping) and analyses and \
            all(isinstance(a, Analysis) for a in analyses.values()):
        return dict(analyses)
    raise TypeError("analyses: expected an Analysis or a non-empty mapping of family name -> "
                    f"Analysis, got {type(analyses).__name__}")


def _select(analyses: Mapping[str, Analysis],
            metrics: Sequence[str]) -> dict[str, dict[str, Measurement]]:
    """family -> metric -> Measurement. ``"metric"`` is taken from every family,
    ``"family:metric"`` from that family only."""
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics: expected a non-empty list of metric names, got {metrics!r}")
    out: dict[str, dict[str, Measurement]] = {fam: {} for fam in analyses}
    for spec in metrics:
        fam, _, metric = spec.rpartition(":")
        fams = [fam] if fam else list(analyses)
        if fam and fam not in analyses:
            raise ValueError(f"metrics: {spec!r} names family {fam!r}, but the analyses are of "
                             f"{', '.join(sorted(analyses))}")
        for f in fams:
            out[f][metric] = analyses[f][metric]  # KeyError lists what the analysis has
    return {f: ms for f, ms in out.items() if ms}


def _tolerances(tolerance: float | Mapping[str, float], selected: Mapping[str, Mapping[str, Any]],
                alpha: float) -> dict[str, dict[str, float]]:
    """family -> metric -> tolerance; a mapping may name ``family:metric``, ``metric`` or
    ``default``. Raises ValueError for bad values and for per-head measurements."""
    out: dict[str, dict[str, float]] = {}
    for fam, ms in selected.items():
        out[fam] = {}
        for metric, m in ms.items():
            label = f"{fam}:{metric}"
            t = tolerance
            if isinstance(tolerance, Mapping):
                t = {metric: tolerance[label]} if label in tolerance else tolerance
            out[fam][metric] = resolve_tolerance(t, metric)
            check_parameters(out[fam][metric], alpha)
            if np.ndim(m.value) > 1:  # not the baseline's fault: say so before anything else
                raise ValueError(f"metrics: {metric} has shape {np.shape(m.value)}; a baseline check "
                                 "tests scalars and per-layer [L] values, reduce per-head values to layers first")
    return out


def _keys(analysis: Analysis) -> list[str]:
    return list(analysis.info.get("seed_keys") or [f"init{s}-data{s}" for s in analysis.seeds])


class StabilityBaseline:
    """What the ``stability_baseline`` fixture returns; see :meth:`check`."""

    def __init__(self, node: pytest.Item, *, baselines_dir: Path, update: bool,
                 claimed: dict[str, str], analysis_options: Mapping[str, Any],
                 inconclusive: str | None) -> None:
        self._node = node
        self._dir, self._update, self._claimed = baselines_dir, update, claimed
        self._options, self._inconclusive = dict(analysis_options), inconclusive

    @property
    def update_command(self) -> str:
        from harness.plugin import update_command

        return update_command(self._node.nodeid)

    def path_for(self, *, device_class: str, suite: str) -> Path:
        """Where this test's baseline for ``device_class`` and ``suite`` lives."""
        return baseline_path(self._dir, device_class=device_class, suite=suite, test=self._node.name)

    def _claim(self, path: Path) -> None:
        key, nodeid = str(path.resolve()), self._node.nodeid
        other = self._claimed.setdefault(key, nodeid)
        if other != nodeid:
            raise ValueError(f"{path}: tests {other} and {nodeid} map to the same baseline file; "
                             "rename one of them or give it another suite")

    def _record(self, status: str, written: Sequence[Path | str] = ()) -> None:
        props = self._node.user_properties
        props.append((P_STATUS, status))
        props.extend((P_WRITTEN, str(w)) for w in written)

    def _finish(self, verdict: Verdict, seeds_ref: Any, seeds: Any) -> Verdict:
        __tracebackhide__ = True
        from harness.session_tracking import VERDICTS

        self._node.stash.setdefault(VERDICTS, []).append(verdict)  # its rows reach the MLflow run
        self._record(verdict.status, verdict.written)
        report = format_report(verdict, seeds_reference=seeds_ref, seeds_candidate=seeds,
                               update_command=self.update_command)
        if verdict.failed:
            raise pytest.fail.Exception(report, pytrace=False) from None
        if verdict.status == "inconclusive":
            warnings.warn(SeedstabInconclusive(report), stacklevel=3)
        return verdict

    def check(self, analyses: Mapping[str, Analysis] | Analysis, *, metrics: Sequence[str],
              tolerance: float | Mapping[str, float], alpha: float, suite: str,
              n_perm: int = 2000, inconclusive: str | None = None) -> Verdict:
        """Compare ``metrics`` of ``analyses`` with this test's stored baseline.

        ``metrics``: names taken from every family, or ``"family:metric"``. ``tolerance``:
        absolute, one number or per metric name (``"default"`` allowed). ``inconclusive``:
        ``"fail"`` (default) or ``"pass"``; the command line's ``--seedstab-inconclusive``
        overrides it. Returns the Verdict when the check passes (or the baseline was
        rewritten); fails the test with a report otherwise.
        """
        __tracebackhide__ = True
        policy = self._inconclusive or inconclusive or INCONCLUSIVE_DEFAULT
        fams = _as_mapping(analyses)
        selected = _select(fams, metrics)
        tolerances = _tolerances(tolerance, selected, alpha)
        hdr = make_header(fams, provenance=current_provenance(self._options))
        path = self.path_for(device_class=hdr["device_class"], suite=suite)
        self._claim(path)
        self._node.user_properties.append((P_BASELINE, str(path)))
        seeds = {f: list(a.seeds) for f, a in fams.items()}
        level = alpha / len(selected)
        base = dict(baseline_path=str(path), inconclusive_policy=policy)
        obtained = obtained_path(path)
        stored = None
        if not self._update and path.exists():
            try:
                stored = read_baseline(path)
            except BaselineError as e:
                write_baseline(obtained, header=hdr, measurements=selected)
                return self._finish(Verdict("invalid", reasons=(str(e),), written=(str(obtained),), **base),
                                    None, seeds)
        for fam, ms in selected.items():  # a check that can never fail is refused up front
            keys = _keys(fams[fam])
            ref_keys = (stored.header.get("seed_keys") or {}).get(fam, keys) if stored else keys
            ref_ms = stored.measurements.get(fam, ms) if stored else ms
            try:
                p = plan(ref_ms, metrics=list(ms), reference_keys=ref_keys, candidate_keys=keys,
                         alpha=level, n_perm=n_perm)
            except (KeyError, ValueError):
                continue  # the comparison names what is wrong
            if p.underpowered:
                return self._finish(Verdict("underpowered", reasons=(f"{fam}: {p.refusal()}",), **base),
                                    None, seeds)
        if self._update:
            write_baseline(path, header=hdr, measurements=selected)
            return self._finish(Verdict("updated", written=(str(path),), **base), None, seeds)
        if stored is None:
            write_baseline(obtained, header=hdr, measurements=selected)
            return self._finish(Verdict("missing", written=(str(obtained),), reasons=(
                f"to accept the obtained result, rename it: mv {shlex.quote(str(obtained))} "
                f"{shlex.quote(str(path))}",), **base), None, seeds)
        reasons = stale_reasons(stored.header, hdr, seeds=False)
        if not reasons:
            reasons = [f"measurement {m} of family {fam} is not in the baseline"
                       for fam, ms in selected.items() for m in ms
                       if m not in stored.measurements.get(fam, {})]
        if reasons:
            write_baseline(obtained, header=hdr, measurements=selected)
            return self._finish(Verdict("stale", reasons=reasons, written=(str(obtained),), **base),
                                stored.header.get("seeds"), seeds)
        generator = np.random.default_rng(zlib.crc32(self._node.nodeid.encode()))
        verdicts = []
        for fam, ms in selected.items():
            verdicts.append(decide(stored.measurements[fam], ms, metrics=list(ms),
                                   tolerance=tolerances[fam], alpha=level,
                                   reference_keys=stored.header["seed_keys"][fam],
                                   candidate_keys=_keys(fams[fam]), generator=generator,
                                   n_perm=n_perm, inconclusive=policy))  # type: ignore[arg-type]
        verdict = _combine(verdicts, list(selected), notes=header_notes(stored.header, hdr), **base)
        if verdict.failed and verdict.status in ("regressed", "inconclusive", "invalid"):
            write_baseline(obtained, header=hdr, measurements=selected)
            verdict = Verdict(**{**_fields(verdict), "written": (str(obtained),)})
        return self._finish(verdict, stored.header.get("seeds"), seeds)


def _fields(v: Verdict) -> dict[str, Any]:
    return {k: getattr(v, k) for k in v.__dataclass_fields__}


_ORDER = ("invalid", "underpowered", "regressed", "inconclusive", "pass")


def _combine(verdicts: Sequence[Verdict], families: Sequence[str], *, notes: Sequence[str],
             **base: Any) -> Verdict:
    """One verdict from per-family verdicts: the worst status; rows and notes labelled."""
    if len(verdicts) == 1:
        v = verdicts[0]
        return Verdict(**{**_fields(v), "notes": tuple(v.notes) + tuple(notes), **base})
    status = min((v.status for v in verdicts), key=_ORDER.index)
    rows: list[Row] = []
    out_notes: list[str] = []
    reasons: list[str] = []
    for fam, v in zip(families, verdicts):
        rows += [Row(**{**{k: getattr(r, k) for k in r.__dataclass_fields__}, "metric": f"{fam}:{r.metric}"})
                 for r in v.rows]
        out_notes += [f"{fam}: {n}" for n in v.notes]
        reasons += [f"{fam}: {r}" for r in v.reasons]
    settle = [v.seeds_to_settle for v in verdicts if v.seeds_to_settle]
    return Verdict(status, rows=rows, reasons=reasons, notes=out_notes + list(notes),  # type: ignore[arg-type]
                   design=f"each of {len(verdicts)} families at alpha/{len(verdicts)}; " + verdicts[0].design,
                   seeds_to_settle=max(settle) if settle else None, **base)
