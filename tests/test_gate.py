"""harness.gate: the order of decisions around the policy. The analyses are injected (crafted
Measurements), so every verdict state is reached deterministically, and a test can prove
that nothing was trained (``analyze`` raises if called)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.analysis import AnalysisOptions
from harness.checks import load_checks
from harness.config import FamilyConfig, fingerprint
from harness.gate import expected_header, options_record, reference_baseline_path, run_check
from harness.results import Analysis, Measurement

SUITE = """
suite: g
defaults:
  seeds: %(seeds)s
  model: {n_layers: 2, n_heads: 2, d_model: 16, attn_only: true}
  data: {vocab_size: 32, seq_len: 32}
  train: {steps: 10, batch_size: 4}
  probe: {n_prompts: 4}
families:
  ref: {}
  cand: {extends: ref, train: {lr: 3.0e-3}}
  fresh: {extends: ref, seeds: [100, 101, 102, 103, 104, 105]}
regression:
  alpha: 0.05
  tolerance: 0.03
  metrics: [head_stability.all_anchors, content_specific.all_anchors]
checks:
  self: {candidate: ref}
  change: {candidate: cand, reference: ref}
  fresh: {candidate: fresh, reference: ref}
"""
METRICS = ("head_stability.all_anchors", "content_specific.all_anchors")


def suite(tmp_path: Path, seeds=(0, 1, 2, 3, 4, 5)) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(SUITE % {"seeds": list(seeds)})
    return p


def pairwise_measurement(name: str, seeds, shift: float, seed: int) -> Measurement:
    M = len(seeds)
    r = np.random.default_rng(seed)
    eff = r.standard_normal((M, 2)) * 0.01
    x = 0.7 + shift + (eff[:, None] + eff[None, :]) / 2
    x = (x + x.transpose(1, 0, 2)) / 2
    x[np.arange(M), np.arange(M)] = np.nan
    v = np.nanmean(x.reshape(M * M, 2), axis=0)
    return Measurement(name, v, v, v, True, pairwise=x, n_seeds=M)


class Analyses:
    """A stand-in for training + analysis: crafted measurements per family, and a log of
    what was asked for."""

    def __init__(self, shifts: dict[str, float] | None = None, *, forbid: bool = False) -> None:
        self.shifts, self.forbid, self.calls = shifts or {}, forbid, []

    def __call__(self, cfg: FamilyConfig) -> Analysis:
        if self.forbid:
            raise AssertionError(f"{cfg.name} was trained, but this outcome must be decided first")
        self.calls.append(cfg.name)
        ms = {m: pairwise_measurement(m, cfg.seeds, self.shifts.get(cfg.name, 0.0),
                                      seed=sum(cfg.seeds) + i) for i, m in enumerate(METRICS)}
        return Analysis(family=cfg.name, fingerprint=fingerprint(cfg), seeds=tuple(cfg.seeds),
                        device_class="cpu", probe_digest="-", measurements=ms)


def go(tmp_path: Path, name: str, analyze, **kw):
    check = load_checks(suite(tmp_path, kw.pop("seeds", (0, 1, 2, 3, 4, 5))))[name]
    options = kw.pop("options", AnalysisOptions())
    return run_check(check, analyze=analyze, baselines_dir=tmp_path / "baselines", device_class="cpu",
                     options=options, update_command=f"pytest g.yaml::{name} --update-baselines", **kw)


def write_reference(tmp_path: Path, *, status: str = "pass", **kw) -> Path:
    out = go(tmp_path, "self", Analyses(), update=True, **kw)
    assert out.verdict.status == status and out.baseline.is_file()
    return out.baseline


def test_missing_trains_the_reference_and_writes_obtained(tmp_path: Path) -> None:
    a = Analyses()
    out = go(tmp_path, "change", a)
    assert out.verdict.status == "missing" and out.verdict.failed and a.calls == ["ref"]
    obtained = tmp_path / "baselines/cpu/g/ref.obtained.json"
    assert out.verdict.written == (str(obtained),) and obtained.is_file()
    assert "rename it to accept it" in out.report and "--update-baselines" in out.report


def test_update_writes_the_reference_once_and_then_compares(tmp_path: Path) -> None:
    done: set[str] = set()
    a = Analyses({"cand": -0.2})
    out = go(tmp_path, "change", a, update=True, already_updated=done)
    assert out.verdict.status == "regressed" and a.calls == ["ref", "cand"]
    assert out.baseline == tmp_path / "baselines/cpu/g/ref.json" and str(out.baseline) in done
    again = go(tmp_path, "self", a, update=True, already_updated=done)
    assert again.verdict.status == "pass" and a.calls == ["ref", "cand", "ref"]  # not rewritten


def test_pass_regressed_and_the_report(tmp_path: Path) -> None:
    write_reference(tmp_path)
    out = go(tmp_path, "change", Analyses({"cand": 0.0}))
    assert out.verdict.status == "pass" and not out.verdict.failed
    out = go(tmp_path, "change", Analyses({"cand": -0.2}))
    v = out.verdict
    assert v.status == "regressed" and len(v.rows) == 4 and all(r.regressed for r in v.rows)
    assert "paired on 6 seeds" in out.report and "check change: cand vs reference ref" in out.report
    # a change in another family is not accepted by rewriting the reference's baseline
    assert "pytest g.yaml::change --update-baselines" not in out.report
    assert any("make cand the reference" in n for n in v.notes)


def test_same_family_regression_writes_obtained_and_offers_the_update(tmp_path: Path) -> None:
    write_reference(tmp_path)
    out = go(tmp_path, "self", Analyses({"ref": -0.2}))
    assert out.verdict.status == "regressed"
    assert out.verdict.written == (str(tmp_path / "baselines/cpu/g/ref.obtained.json"),)
    assert out.report.splitlines()[-1].endswith("pytest g.yaml::self --update-baselines")


def test_fresh_seeds_are_unpaired(tmp_path: Path) -> None:
    write_reference(tmp_path)
    out = go(tmp_path, "fresh", Analyses())
    assert "unpaired, 6 vs 6 seeds" in out.verdict.design


def test_seed_offset_moves_the_candidate_only(tmp_path: Path) -> None:
    write_reference(tmp_path)
    a = Analyses()
    out = go(tmp_path, "self", a, seed_offset=1000)
    assert out.seeds_candidate == (1000, 1001, 1002, 1003, 1004, 1005)
    assert out.seeds_reference == (0, 1, 2, 3, 4, 5) and "unpaired" in out.verdict.design


@pytest.mark.parametrize("edit, reason", [
    (lambda p: p.write_text(p.read_text().replace("train: {steps: 10", "train: {steps: 11")),
     "fingerprint of family ref changed"),
    (lambda p: p.write_text(p.read_text().replace("probe: {n_prompts: 4}", "probe: {n_prompts: 5}")),
     "probe digest of family ref changed"),
])
def test_stale_is_decided_before_anything_trains(tmp_path: Path, edit, reason: str) -> None:
    write_reference(tmp_path)
    edit(tmp_path / "g.yaml")
    check = load_checks(tmp_path / "g.yaml")["change"]
    out = run_check(check, analyze=Analyses(forbid=True), baselines_dir=tmp_path / "baselines",
                    device_class="cpu", options=AnalysisOptions())
    assert out.verdict.status == "stale" and out.verdict.failed
    assert any(reason in r for r in out.verdict.reasons), out.verdict.reasons
    assert "not a regression" in out.report


def test_stale_on_provenance_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_reference(tmp_path)
    out = go(tmp_path, "change", Analyses(forbid=True), options=AnalysisOptions(null_shift=2))
    assert out.verdict.status == "stale"
    assert "analysis option null_shift changed: 1 -> 2" in out.verdict.reasons
    import harness.provenance as prov

    monkeypatch.setattr(prov, "metric_digest", lambda **kw: "00000000")
    out = go(tmp_path, "change", Analyses(forbid=True))
    assert any("the metric code changed" in r for r in out.verdict.reasons)
    monkeypatch.undo()
    path = reference_baseline_path(load_checks(tmp_path / "g.yaml")["self"],
                                   baselines_dir=tmp_path / "baselines", device_class="cpu")
    doc = json.loads(path.read_text())
    doc["header"]["torch_version"] = "1.0.0"
    path.write_text(json.dumps(doc))
    out = go(tmp_path, "change", Analyses(forbid=True))
    assert any("torch version changed: 1.0.0" in r for r in out.verdict.reasons)


def test_a_metric_the_baseline_lacks_is_stale(tmp_path: Path) -> None:
    write_reference(tmp_path)
    p = tmp_path / "g.yaml"
    p.write_text(p.read_text().replace("  fresh: {candidate: fresh, reference: ref}",
                                       "  fresh: {candidate: fresh, reference: ref, metrics: [gap.cka]}"))
    check = load_checks(p)["fresh"]
    out = run_check(check, analyze=Analyses(forbid=True), baselines_dir=tmp_path / "baselines",
                    device_class="cpu", options=AnalysisOptions())
    assert out.verdict.status == "stale"
    assert out.verdict.reasons == ("measurement gap.cka of reference ref is not in the baseline",)


def test_invalid_baseline_is_decided_before_anything_trains(tmp_path: Path) -> None:
    path = write_reference(tmp_path)
    path.write_text("{ not json")
    out = go(tmp_path, "change", Analyses(forbid=True))
    assert out.verdict.status == "invalid" and "invalid JSON at line 1" in out.verdict.reasons[0]


def test_underpowered_is_decided_before_anything_trains(tmp_path: Path) -> None:
    write_reference(tmp_path, seeds=(0, 1, 2, 3), status="underpowered")
    out = go(tmp_path, "change", Analyses(forbid=True), seeds=(0, 1, 2, 3))
    assert out.verdict.status == "underpowered" and out.verdict.failed
    assert "smallest attainable p-value is 0.0625" in out.report
    assert "at least 5 shared seeds" in out.report


def test_degenerate_candidate_is_invalid_not_a_crash(tmp_path: Path) -> None:
    write_reference(tmp_path)

    def broken(cfg: FamilyConfig) -> Analysis:
        a = Analyses()(cfg)
        m = a.measurements["content_specific.all_anchors"]
        pw = np.asarray(m.pairwise).copy()
        pw[:, :, 1] = np.nan  # a dead layer: raw - null undefined
        ms = dict(a.measurements)
        ms[m.name] = Measurement(m.name, m.value, m.lo, m.hi, True, pairwise=pw, n_seeds=m.n_seeds)
        return Analysis(a.family, a.fingerprint, a.seeds, "cpu", "-", ms)

    out = go(tmp_path, "change", broken)
    assert out.verdict.status == "invalid"
    assert "content_specific.all_anchors: the candidate has undefined (NaN)" in out.report


def test_expected_header_needs_no_training(tmp_path: Path) -> None:
    check = load_checks(suite(tmp_path))["self"]
    h = expected_header(check.reference, device_class="cpu", options=AnalysisOptions())
    assert h["fingerprints"] == {"ref": fingerprint(check.reference)}
    assert h["seed_keys"]["ref"] == [f"init{s}-data{s}" for s in range(6)]
    assert h["analysis_options"] == options_record(AnalysisOptions())
    assert "n_boot" not in h["analysis_options"] and h["metric_digest"] and h["training_digest"]
