"""Tests for harness.baselines' headers: what they record, and when a stored one is stale
(one line per change) or only worth a note."""

from __future__ import annotations

import pytest

from harness import baselines as bl
from harness.baselines import (SCHEMA_VERSION, current_provenance, header_notes, make_header,
                               stale_reasons)
from baseline_samples import KEYS, PROVENANCE, VERSIONS, analysis, header


# ----------------------------------------------------------------------------- header


def test_versions_constant_covers_every_version_key() -> None:
    # the headers below are built from VERSIONS; a version key it lacked would fail them all
    assert set(VERSIONS) == set(bl.VERSION_KEYS), sorted(set(bl.VERSION_KEYS) ^ set(VERSIONS))
    assert set(PROVENANCE) == set(bl.PROVENANCE_KEYS)


def test_make_header_records_every_family() -> None:
    h = header()
    assert set(h) == set(bl.HEADER_KEYS)
    assert h["schema_version"] == SCHEMA_VERSION
    assert h["fingerprints"] == {"adam": "fp-adam", "adamw": "fp-adamw"}
    assert h["probe_digests"] == {"adam": "probe-1", "adamw": "probe-1"}
    assert h["seeds"] == {"adam": [0, 1, 2, 3, 4], "adamw": [0, 1, 2, 3, 4]}
    assert h["seed_keys"] == {"adam": KEYS, "adamw": KEYS}  # init{s}-data{s} by default
    assert (h["device_class"], h["device_name"]) == ("cpu", "test-cpu")
    assert {k: h[k] for k in bl.PROVENANCE_KEYS} == PROVENANCE
    assert {k: h[k] for k in bl.VERSION_KEYS} == VERSIONS


def test_make_header_defaults() -> None:
    import torch

    from harness.analysis import AnalysisOptions
    from harness.gate import options_record
    from harness.provenance import runtime_versions

    h = make_header({"adam": analysis(info={"device_name": "my box"})})
    assert h["device_name"] == "my box"
    assert h["torch_version"] == str(torch.__version__)
    assert h["cuda_version"] == torch.version.cuda
    v = runtime_versions()
    assert {k: h[k] for k in ("cudnn_version", "numpy_version", "scipy_version",
                              "python_version", "harness_version")} == {
        "cudnn_version": v["cudnn"], "numpy_version": v["numpy"], "scipy_version": v["scipy"],
        "python_version": v["python"], "harness_version": v["seedstab"]}
    assert h["created"].startswith("20") and h["created"].endswith("+00:00")
    # provenance: this installation's, with the default analysis options
    assert {k: h[k] for k in bl.PROVENANCE_KEYS} == \
        current_provenance(options_record(AnalysisOptions()))
    assert make_header({"adam": analysis()})["device_name"]  # falls back to the CPU's name


def test_make_header_seed_keys() -> None:
    info_keys = [f"init{s}-data7" for s in range(5)]
    h = make_header({"adam": analysis(info={"seed_keys": info_keys}),
                     "adamw": analysis("adamw", "fp-adamw"),
                     "lion": analysis("lion", "fp-lion", info={"seed_keys": info_keys})},
                    seed_keys={"lion": ["a", "b", "c", "d", "e"]}, provenance=PROVENANCE,
                    versions=VERSIONS)
    assert h["seed_keys"] == {"adam": info_keys,  # from the analysis
                              "adamw": KEYS,  # the default
                              "lion": ["a", "b", "c", "d", "e"]}  # the argument wins


def test_header_needs_no_analysis() -> None:
    h = bl.header(fingerprints={"adamw": "fp-adamw", "adam": "fp-adam"},
                  probe_digests={"adam": "probe-1", "adamw": "probe-1"},
                  seeds={"adam": (0, 1, 2, 3, 4), "adamw": range(5)},
                  seed_keys={"adam": KEYS, "adamw": tuple(KEYS)}, device_class="cpu",
                  provenance=PROVENANCE, device_name="test-cpu",
                  created="2026-11-25T00:00:00+00:00", versions=VERSIONS)
    assert h == header()  # the same header make_header builds from the analyses
    assert list(h["fingerprints"]) == ["adam", "adamw"]  # families sorted


@pytest.mark.parametrize("provenance, missing", [
    ({}, "['metric_digest', 'training_digest', 'analysis_options']"),
    ({"metric_digest": "m1", "training_digest": "t1"}, "['analysis_options']"),
    ({"analysis_options": {}}, "['metric_digest', 'training_digest']"),
])
def test_header_names_missing_provenance(provenance: dict, missing: str) -> None:
    kw = dict(fingerprints={"adam": "fp"}, probe_digests={"adam": "p"}, seeds={"adam": [0]},
              seed_keys={"adam": ["init0-data0"]}, device_class="cpu", versions=VERSIONS)
    with pytest.raises(ValueError) as e:
        bl.header(provenance=provenance, **kw)
    assert str(e.value).startswith(f"provenance: missing {missing}"), str(e.value)
    with pytest.raises(ValueError, match=r"provenance: missing"):
        make_header({"adam": analysis()}, provenance=provenance, versions=VERSIONS)


def test_current_provenance() -> None:
    from harness.provenance import harness_digest, metric_digest

    p = current_provenance({"ci": 0.95, "prompt_lengths": (0.5, 1 / 3), "kernels": ("rbf",)})
    assert p == {"metric_digest": metric_digest(), "training_digest": harness_digest(),
                 "analysis_options": {"ci": 0.95, "prompt_lengths": [0.5, 0.333333],
                                      "kernels": ["rbf"]}}  # as a written header holds them


@pytest.mark.parametrize("arg, err, match", [
    ({}, ValueError, "non-empty mapping"),
    ([analysis()], ValueError, "non-empty mapping"),
    ({"adam": "not an analysis"}, TypeError, r"analyses\['adam'\]: expected an Analysis"),
    ({"adam": analysis(), "gpu": analysis("gpu", device_class="cuda-x")}, ValueError,
     "different device classes"),
])
def test_make_header_errors(arg, err, match) -> None:
    with pytest.raises(err, match=match):
        make_header(arg, provenance=PROVENANCE, versions=VERSIONS)


def test_make_header_rejects_incomplete_versions() -> None:
    with pytest.raises(ValueError, match=r"versions: missing \['harness_version', 'cuda_version'"):
        make_header({"adam": analysis()}, provenance=PROVENANCE, versions={"torch_version": "x"})
    partial = {k: v for k, v in VERSIONS.items() if k != "cudnn_version"}
    with pytest.raises(ValueError, match=r"versions: missing \['cudnn_version'\]"):
        make_header({"adam": analysis()}, provenance=PROVENANCE, versions=partial)


# ----------------------------------------------------------------------------- staleness


def test_stale_reasons_same_header_is_fresh() -> None:
    assert stale_reasons(header(), header()) == []
    # recorded for the reader only: the creation time, the device name, and the harness,
    # numpy, scipy and Python versions
    assert stale_reasons(header(), header(created="later", device_name="other box",
                                          harness_version="0.2.0", numpy_version="3.0",
                                          scipy_version="2.0", python_version="3.13")) == []


def test_stale_reasons_seeds_false_ignores_seeds() -> None:
    other = {"seeds": {"adam": [9, 10, 11], "adamw": [0, 1, 2, 3, 4]},
             "seed_keys": {"adam": ["init9-data9", "init10-data10", "init11-data11"],
                           "adamw": KEYS}}
    assert stale_reasons(header(), header(**other), seeds=False) == []
    # only the seeds are ignored: any other change is still reported
    assert stale_reasons(header(), header(**other, torch_version="2.14.0"), seeds=False) == [
        "torch version changed: 2.13.0 -> 2.14.0 (it changes trained weights)"]
    assert stale_reasons(header(), header(**other)) == [
        "seeds of family adam changed: ['init0-data0', 'init1-data1', 'init2-data2', "
        "'init3-data3', 'init4-data4'] -> ['init9-data9', 'init10-data10', 'init11-data11']"]


def test_stale_reasons_explain_each_change() -> None:
    stored = header(fingerprints={"adam": "1a2b3c4d5e6f7a8b", "adamw": "fp-adamw"})
    current = header(fingerprints={"adam": "9f8e7d6c5b4a3928", "lion": "fp-lion"},
                     probe_digests={"adam": "probe-2", "lion": "p"}, device_class="cuda-x")
    assert stale_reasons(stored, current) == [
        "device class changed: cpu -> cuda-x",
        "family lion is not in the baseline",
        "family adamw is in the baseline but not in this run",
        "fingerprint of family adam changed: 1a2b3c4d5e6f… -> 9f8e7d6c5b4a…",
        "probe digest of family adam changed: probe-1 -> probe-2",
    ]


_SEVEN = [0, 1, 2, 3, 7]
_SEVEN_KEYS = [f"init{s}-data{s}" for s in _SEVEN]


@pytest.mark.parametrize("over, line", [
    ({"seeds": {"adam": _SEVEN, "adamw": [0, 1, 2, 3, 4]},
      "seed_keys": {"adam": _SEVEN_KEYS, "adamw": KEYS}},
     f"seeds of family adam changed: {KEYS} -> {_SEVEN_KEYS}"),
    # the same seed numbers with other init/data seeds are other seeds
    ({"seed_keys": {"adam": KEYS, "adamw": [f"init{s}-data0" for s in range(5)]}},
     f"seeds of family adamw changed: {KEYS} -> {[f'init{s}-data0' for s in range(5)]}"),
    ({"seeds": {"adam": _SEVEN, "adamw": [0, 1, 2, 3, 4]}},
     f"seeds of family adam changed: [0, 1, 2, 3, 4] -> {_SEVEN}"),
    ({"metric_digest": "m2"},
     "the metric code changed (metric_digest m1 -> m2): the stored numbers were made by other "
     "code"),
    ({"training_digest": "t2"},
     "the harness's training code changed (training_digest t1 -> t2): the stored numbers were "
     "made by other code"),
    ({"analysis_options": {**PROVENANCE["analysis_options"], "kernels": ["linear"]}},
     "analysis option kernels changed: ['debiased'] -> ['linear']"),
    ({"analysis_options": {**PROVENANCE["analysis_options"], "prompt_lengths": [1.0]}},
     "analysis option prompt_lengths changed: None -> [1.0]"),
    ({"analysis_options": {"ci": 0.95, "kernels": ["debiased"]}},
     "analysis option null_shift changed: 1 -> None"),
    ({"torch_version": "2.14.0"},
     "torch version changed: 2.13.0 -> 2.14.0 (it changes trained weights)"),
    ({"cuda_version": "12.8"}, "CUDA version changed: None -> 12.8 (it changes trained weights)"),
    ({"cudnn_version": "91002"},
     "cuDNN version changed: None -> 91002 (it changes trained weights)"),
], ids=["seeds", "seed-keys", "seed-numbers", "metric-digest", "training-digest",
        "option-changed", "option-added", "option-removed", "torch", "cuda", "cudnn"])
def test_stale_reasons_explain_each_new_kind_of_change(over: dict, line: str) -> None:
    assert stale_reasons(header(), header(**over)) == [line]
    assert header_notes(header(), header(**over)) == []  # stale, so not merely a note


def test_stale_reasons_one_line_per_change() -> None:
    reasons = stale_reasons(header(), header(
        seeds={"adam": _SEVEN, "adamw": _SEVEN}, seed_keys={"adam": _SEVEN_KEYS, "adamw": _SEVEN_KEYS},
        metric_digest="m2", training_digest="t2", torch_version="2.14.0", cuda_version="12.8",
        analysis_options={**PROVENANCE["analysis_options"], "ci": 0.9, "kernels": ["rbf"],
                          "null_shift": 1}))
    assert reasons == [
        f"seeds of family adam changed: {KEYS} -> {_SEVEN_KEYS}",
        f"seeds of family adamw changed: {KEYS} -> {_SEVEN_KEYS}",
        "the metric code changed (metric_digest m1 -> m2): the stored numbers were made by "
        "other code",
        "the harness's training code changed (training_digest t1 -> t2): the stored numbers "
        "were made by other code",
        "analysis option kernels changed: ['debiased'] -> ['rbf']",
        "torch version changed: 2.13.0 -> 2.14.0 (it changes trained weights)",
        "CUDA version changed: None -> 12.8 (it changes trained weights)",
    ], reasons


def test_header_notes_versions_only() -> None:
    assert header_notes(header(), header()) == []
    notes = header_notes(header(), header(
        harness_version="0.2.0", numpy_version="2.5.0", scipy_version="1.18.0",
        python_version="3.12", device_name="other",
        # none of these is a note: they make the baseline stale, or (created) change every run
        torch_version="2.14.0", cuda_version="12.8", cudnn_version="91002",
        metric_digest="m2", training_digest="t2", created="later",
        fingerprints={"adam": "fp-x", "adamw": "fp-adamw"}))
    assert notes == ["harness differs from the baseline's: 0.1.0 -> 0.2.0",
                     "numpy differs from the baseline's: 2.4.0 -> 2.5.0",
                     "scipy differs from the baseline's: 1.17.0 -> 1.18.0",
                     "python differs from the baseline's: 3.11 -> 3.12",
                     "device name differs from the baseline's: test-cpu -> other"], notes


def test_interval_options_are_notes_not_staleness() -> None:
    """ci and ci_method shape a row's printed interval only; the per-seed values a check
    compares are the same, so changing them must not force every baseline to be rewritten."""
    over = {"analysis_options": {**PROVENANCE["analysis_options"], "ci": 0.9,
                                 "ci_method": "bootstrap"}}
    assert stale_reasons(header(), header(**over)) == []
    notes = header_notes(header(), header(**over))
    assert len(notes) == 2 and all("intervals only" in n for n in notes), notes
    assert "analysis option ci differs from the baseline's: 0.95 -> 0.9" in notes[0]
