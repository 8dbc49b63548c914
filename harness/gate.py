"""Run one check: read the reference's baseline, decide what can be decided before training,
train (or load) the candidate, and apply the gate policy (:func:`harness.verdict.decide`).

Order matters, so a bad reference never costs a training run:

1. the reference's baseline is located (``baselines/<device-class>/<suite>/<family>.json``);
   with ``update`` it is rewritten first (the reference is trained or loaded and analysed);
2. MISSING: there is none: the reference is trained, its result written beside it as
   ``<family>.obtained.json``, and the check fails;
3. INVALID: the file cannot be used (nothing trains);
4. STALE: its header no longer describes the reference as the YAML and this installation
   would make it (spec, seeds, probe set, metric code, training code, analysis options,
   torch/CUDA, device class) or it lacks a metric the check needs (nothing trains);
5. UNDERPOWERED: the check could never fail at its seed counts (nothing trains);
6. the candidate is trained or loaded, analysed and compared: PASS, REGRESSED, INCONCLUSIVE,
   or INVALID when its values are undefined.

The candidate and the reference differ in fingerprint by design; only the reference's own
header decides staleness. ``analyze`` is the caller's: a function from a family config to its
:class:`~harness.results.Analysis` (the pytest plugin passes its session cache).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from harness.baselines import (BaselineError, baseline_path, current_provenance, header,
                               header_notes, obtained_path, read_baseline, stale_reasons,
                               write_baseline)
from harness.checks import CheckSpec
from harness.config import FamilyConfig, fingerprint
from harness.results import Analysis, Measurement
from harness.verdict import Verdict, decide, plan
from harness.verdict_report import format_report

log = logging.getLogger(__name__)

__all__ = ["Outcome", "run_check", "reference_baseline_path", "expected_header",
           "options_record", "fresh_seeds", "baseline_metrics"]

# AnalysisOptions fields that do not change a stored value (resampling counts, which
# optional measurements are computed: a missing one is reported by name instead).
_NOT_RECORDED = {"n_boot", "seed", "step0", "importance", "cross_layer"}


@dataclass(frozen=True)
class Outcome:
    """A check's verdict, its report, and what it touched: ``analysed`` lists the family
    configs that were trained or loaded and analysed (for MLflow)."""

    check: CheckSpec
    verdict: Verdict
    report: str
    baseline: Path
    analysed: tuple[FamilyConfig, ...] = ()
    seeds_reference: tuple[int, ...] = ()
    seeds_candidate: tuple[int, ...] = ()
    timings: Mapping[str, float] = field(default_factory=dict)


def options_record(options: Any) -> dict[str, Any]:
    """The analysis options that change stored values, as a plain mapping for headers."""
    d = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(d.items())
            if k not in _NOT_RECORDED}


def fresh_seeds(cfg: FamilyConfig, offset: int | None) -> FamilyConfig:
    """``cfg`` with every seed shifted by ``offset`` (same config, fresh seeds)."""
    return cfg if not offset else cfg.replace(seeds=[s + offset for s in cfg.seeds])


def seed_keys(cfg: FamilyConfig) -> list[str]:
    return [cfg.seed_key(s) for s in cfg.seeds]


def baseline_metrics(check: CheckSpec, others: Sequence[CheckSpec] = ()) -> list[str]:
    """Every metric the reference's baseline must hold: those of ``check``, of every other
    check of the reference's own suite file against it, and of ``others`` against it (a
    reference is identified by its file and family name)."""
    from harness.checks import load_checks

    def same(c: CheckSpec) -> bool:
        return (Path(c.reference_source).resolve(), c.reference.name) == \
            (Path(check.reference_source).resolve(), check.reference.name)

    out = list(check.metrics)
    for c in [*load_checks(check.reference_source).values(), *others]:
        if same(c):
            out += [m for m in c.metrics if m not in out]
    return out


def reference_baseline_path(check: CheckSpec, *, baselines_dir: Path, device_class: str) -> Path:
    """Where the reference family's baseline lives."""
    return baseline_path(baselines_dir, device_class=device_class, suite=check.reference_suite,
                         test=check.reference.name)


def expected_header(cfg: FamilyConfig, *, device_class: str, options: Any) -> dict[str, Any]:
    """The header a baseline of ``cfg`` written now would carry; built without training."""
    from harness import data as data_mod
    from harness.analysis import probe_tokens

    name = cfg.name
    return header(fingerprints={name: fingerprint(cfg)},
                  probe_digests={name: data_mod.digest(probe_tokens(cfg))},
                  seeds={name: cfg.seeds}, seed_keys={name: seed_keys(cfg)},
                  device_class=device_class, provenance=current_provenance(options_record(options)))


def _measurements(a: Analysis, metrics: Sequence[str], *,
                  optional: Sequence[str] = ()) -> dict[str, Measurement]:
    """``metrics`` (KeyError naming those the analysis lacks) and whichever of ``optional``
    it has, each only if it can be tested against (seed-level values, baselinable)."""
    missing = [m for m in metrics if m not in a.measurements]
    if missing:
        raise KeyError(f"not measured: {', '.join(missing)}; the analysis has: "
                       f"{', '.join(sorted(a.measurements))}")
    names = list(dict.fromkeys([*metrics, *(m for m in optional if m in a.measurements)]))
    return {m: a.measurements[m] for m in names}


def run_check(check: CheckSpec, *, analyze: Callable[[FamilyConfig], Analysis], baselines_dir: Path,
              device_class: str, options: Any, update: bool = False,
              baseline_metrics: Sequence[str] = (), seed_offset: int | None = None,
              inconclusive: str | None = None, n_perm: int = 2000,
              update_command: str | None = None, already_updated: set[str] | None = None,
              baseline: Path | None = None) -> Outcome:
    """Run ``check`` (see the module docstring for the order of decisions).

    ``device_class``: where the candidate will train (the baseline directory); ``options``:
    the AnalysisOptions the session analyses with; ``baseline_metrics``: every metric the
    reference's baseline must hold (all checks naming it), written with ``update``;
    ``seed_offset`` shifts the candidate's seeds (fresh seeds; the reference keeps its own);
    ``inconclusive`` overrides the check's policy; ``already_updated``: baseline paths this
    run rewrote already (a reference shared by several checks is written once); ``baseline``:
    the reference's baseline file, instead of its place under ``baselines_dir``.
    """
    import time

    t0 = time.perf_counter()
    ref_cfg = check.reference
    cand_cfg = fresh_seeds(check.candidate, seed_offset)
    policy = inconclusive or check.inconclusive
    path = Path(baseline) if baseline is not None else \
        reference_baseline_path(check, baselines_dir=baselines_dir, device_class=device_class)
    metrics = list(check.metrics)
    to_store = list(dict.fromkeys([*metrics, *baseline_metrics]))
    if update and path.is_file():  # a rewrite keeps what the old baseline held for other checks
        try:
            to_store += [m for m in read_baseline(path).measurements.get(ref_cfg.name, {}) if m not in to_store]
        except BaselineError:
            pass
    analysed: list[FamilyConfig] = []
    seeds_ref, seeds_cand = tuple(ref_cfg.seeds), tuple(cand_cfg.seeds)
    title = f"check {check.name}: {cand_cfg.name} vs reference {ref_cfg.name}"
    written: list[str] = []

    def done(verdict: Verdict, **kw: Any) -> Outcome:
        report = format_report(verdict, title=title, seeds_reference=list(seeds_ref),
                               seeds_candidate=list(seeds_cand), update_command=kw.pop("cmd", update_command))
        return Outcome(check=check, verdict=verdict, report=report, baseline=path,
                       analysed=tuple(analysed), seeds_reference=seeds_ref, seeds_candidate=seeds_cand,
                       timings={"total_s": round(time.perf_counter() - t0, 3)})

    current = expected_header(ref_cfg, device_class=device_class, options=options)

    def reference_measurements(required: Sequence[str]) -> dict[str, Measurement]:
        a = analyze(ref_cfg)
        analysed.append(ref_cfg)
        if a.device_class != device_class:
            raise RuntimeError(f"the reference trained on {a.device_class}, not {device_class}")
        return _measurements(a, required, optional=to_store)

    if update and str(path) not in (already_updated or set()):
        try:
            ms = reference_measurements(metrics)
        except KeyError as e:
            return done(Verdict("invalid", reasons=(f"reference {ref_cfg.name}: {e.args[0]}",),
                                inconclusive_policy=policy))
        write_baseline(path, header=current, measurements={ref_cfg.name: ms})
        written.append(str(path))
        if already_updated is not None:
            already_updated.add(str(path))
    elif not path.exists():
        try:
            ms = reference_measurements(metrics)
        except KeyError as e:
            return done(Verdict("invalid", reasons=(f"reference {ref_cfg.name}: {e.args[0]}",),
                                inconclusive_policy=policy))
        obtained = obtained_path(path)
        write_baseline(obtained, header=current, measurements={ref_cfg.name: ms})
        return done(Verdict("missing", baseline_path=str(path), written=(str(obtained),),
                            reasons=(f"no baseline for reference {ref_cfg.name}; this run's result is "
                                     f"in {obtained} (rename it to accept it)",),
                            inconclusive_policy=policy))
    try:
        stored = read_baseline(path)
    except BaselineError as e:
        return done(Verdict("invalid", reasons=(str(e),), baseline_path=str(path), inconclusive_policy=policy))
    seeds_ref = tuple(stored.header.get("seeds", {}).get(ref_cfg.name, seeds_ref))
    reasons = stale_reasons(stored.header, current)
    ref_ms = dict(stored.measurements.get(ref_cfg.name, {}))
    if not reasons:
        reasons += [f"measurement {m} of reference {ref_cfg.name} is not in the baseline"
                    for m in metrics if m not in ref_ms]
    if reasons:
        return done(Verdict("stale", reasons=reasons, baseline_path=str(path), inconclusive_policy=policy))
    ref_keys = list(stored.header["seed_keys"][ref_cfg.name])
    cand_keys = seed_keys(cand_cfg)
    try:
        p = plan(ref_ms, metrics=metrics, reference_keys=ref_keys, candidate_keys=cand_keys,
                 alpha=check.alpha, tolerance=check.tolerance, n_perm=n_perm)
    except ValueError as e:
        return done(Verdict("invalid", reasons=(f"{path}: {e}",), baseline_path=str(path),
                            inconclusive_policy=policy))
    if p.underpowered:
        return done(Verdict("underpowered", reasons=(p.refusal(),), notes=p.notes, baseline_path=str(path),
                            design=p.design, inconclusive_policy=policy), cmd=None)
    try:
        cand = analyze(cand_cfg)
    except (ValueError, RuntimeError) as e:  # a diverged seed, a family the analysis refuses
        return done(Verdict("invalid", reasons=(f"candidate {cand_cfg.name}: {e}",), baseline_path=str(path),
                            inconclusive_policy=policy), cmd=None)
    analysed.append(cand_cfg)
    if cand.device_class != stored.header["device_class"]:
        return done(Verdict("invalid", reasons=(f"the candidate ran on {cand.device_class} but the "
                                                f"baseline is for {stored.header['device_class']}",),
                            baseline_path=str(path), inconclusive_policy=policy))
    # seeded by the check's identity, not its path: the CLI and pytest give the same p-values
    generator = np.random.default_rng(zlib.crc32(f"{check.suite}::{check.name}".encode()))
    verdict = decide(ref_ms, cand.measurements, metrics=metrics, tolerance=check.tolerance,
                     alpha=check.alpha, reference_keys=ref_keys, candidate_keys=cand_keys,
                     generator=generator, n_perm=n_perm, inconclusive=policy)  # type: ignore[arg-type]
    notes = list(verdict.notes) + header_notes(stored.header, current)
    if update:
        notes.append(f"the reference's baseline was rewritten by --seedstab-update-baselines before this comparison")
    if check.same_family and verdict.status in ("regressed", "inconclusive"):
        # what would be the new baseline: the candidate's seeds in the header, not the reference's
        obtained = obtained_path(path)
        write_baseline(obtained, header=expected_header(cand_cfg, device_class=device_class, options=options),
                       measurements={ref_cfg.name: _safe(cand, to_store)})
        written.append(str(obtained))
    verdict = dataclasses.replace(verdict, notes=tuple(notes), baseline_path=str(path),
                                  written=tuple(written))
    cmd = update_command if verdict.status != "invalid" else None
    if not check.same_family and verdict.status in ("regressed", "inconclusive"):
        cmd = None  # rewriting the reference does not accept a change made in another family
        verdict = dataclasses.replace(verdict, notes=verdict.notes + (
            f"if the change is intended, make {cand_cfg.name} the reference (the check's "
            f"`reference:`) and write its baseline with --seedstab-update-baselines",))
    return done(verdict, cmd=cmd)


def _safe(a: Analysis, metrics: Sequence[str]) -> dict[str, Measurement]:
    return {m: a.measurements[m] for m in metrics if m in a.measurements}

