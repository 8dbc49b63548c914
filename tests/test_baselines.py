"""Tests for harness.baselines: layout, header, reviewable JSON round trip, errors, staleness."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness import baselines as bl
from harness.baselines import (SCHEMA_VERSION, Baseline, BaselineError, baseline_path,
                               current_provenance, header_notes, make_header, obtained_path,
                               read_baseline, sanitize_test_name, stale_reasons, write_baseline)
from harness.results import Analysis, Measurement

VERSIONS = {"harness_version": "0.1.0", "torch_version": "2.13.0", "cuda_version": None,
            "cudnn_version": None, "numpy_version": "2.4.0", "scipy_version": "1.17.0",
            "python_version": "3.11"}
PROVENANCE = {"metric_digest": "m1", "training_digest": "t1",
              "analysis_options": {"ci": 0.95, "kernels": ["debiased"], "null_shift": 1}}
KEYS = [f"init{s}-data{s}" for s in range(5)]  # the default seed keys of seeds 0..4


def per_layer(seed: int = 0, M: int = 5, L: int = 3, name: str = "head_stability") -> Measurement:
    ps = 0.8 + 0.01 * np.random.default_rng(seed).standard_normal((M, L))  # (M, L)
    v = ps.mean(0)
    return Measurement(name, v, v - 0.01, v + 0.01, True, description="per layer",
                       per_seed=ps, n_seeds=M)


def pairwise(seed: int = 0, M: int = 5, name: str = "resid_cka") -> Measurement:
    x = np.random.default_rng(seed).standard_normal((M, M)) * 0.01
    pw = 0.9 + (x + x.T) / 2  # (M, M)
    pw[np.arange(M), np.arange(M)] = np.nan
    f = np.asarray(np.nanmean(pw))
    return Measurement(name, f, f - 0.01, f + 0.01, False, pairwise=pw, n_seeds=M)


def analysis(family: str = "adam", fp: str = "fp-adam", *, device_class: str = "cpu",
             probe: str = "probe-1", info: dict | None = None) -> Analysis:
    return Analysis(family, fp, (0, 1, 2, 3, 4), device_class, probe,
                    {"head_stability": per_layer(), "resid_cka": pairwise()}, info=info or {})


def header(**over) -> dict:
    h = make_header({"adam": analysis(), "adamw": analysis("adamw", "fp-adamw")},
                    provenance=PROVENANCE, device_name="test-cpu",
                    created="2026-11-25T00:00:00+00:00", versions=VERSIONS)
    h.update(over)
    return h


def write_sample(path: Path) -> dict:
    h = header()
    a = analysis()
    write_baseline(path, header=h, measurements={"adam": dict(a.measurements)})
    return h


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("name, stem", [
    ("test_midlayer_minimum", "test_midlayer_minimum"),
    ("test_x[param]", "test_x-param"),
    ("test_x[adam-8 layers]", "test_x-adam-8-layers"),
    ("test_x[a/b::c]", "test_x-a-b-c"),
    ("test_x[0.5]", "test_x-0.5"),
])
def test_sanitize_test_name(name: str, stem: str) -> None:
    assert sanitize_test_name(name) == stem


@pytest.mark.parametrize("bad", ["", "  ", "[]", "///", None])
def test_sanitize_rejects_unusable_names(bad) -> None:
    with pytest.raises(ValueError, match="test:"):
        sanitize_test_name(bad)


def test_baseline_path_layout(tmp_path: Path) -> None:
    p = baseline_path(tmp_path, device_class="cuda-nvidia-h100", suite="paper",
                      test="test_x[adam]")
    assert p == tmp_path / "cuda-nvidia-h100" / "paper" / "test_x-adam.json"
    assert obtained_path(p) == p.with_name("test_x-adam.obtained.json")


@pytest.mark.parametrize("kw, what", [
    ({"device_class": "", "suite": "s"}, "device_class"),
    ({"device_class": "cpu", "suite": "a/b"}, "suite"),
    ({"device_class": "..", "suite": "s"}, "device_class"),
    ({"device_class": "cpu", "suite": "a\\b"}, "suite"),
])
def test_baseline_path_rejects_path_tricks(tmp_path: Path, kw: dict, what: str) -> None:
    with pytest.raises(ValueError, match=f"{what}: expected a plain directory name"):
        baseline_path(tmp_path, test="test_x", **kw)


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


# ----------------------------------------------------------------------------- write / read


def test_round_trip_keeps_seed_level_values(tmp_path: Path) -> None:
    path = tmp_path / "cpu" / "suite" / "test_x.json"
    h = write_sample(path)
    b = read_baseline(path)
    assert isinstance(b, Baseline) and b.path == path and dict(b.header) == h
    orig = analysis().measurements
    for name in ("head_stability", "resid_cka"):
        got, want = b.measurements["adam"][name], orig[name]
        assert got.higher_is_better == want.higher_is_better and got.n_seeds == want.n_seeds
        np.testing.assert_allclose(got.value, want.value, rtol=1e-5)
        np.testing.assert_allclose(got.unit_values(), want.unit_values(), rtol=1e-5)
    pw = b.measurements["adam"]["resid_cka"].pairwise
    assert np.isnan(np.diag(pw)).all() and pw.shape == (5, 5)  # NaN diagonal -> null -> NaN
    assert b.measurements["adam"]["resid_cka"].value.shape == ()


def test_file_is_reviewable(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    write_baseline(path, header=header(), measurements={"adam": {
        "m": Measurement("m", np.asarray([1 / 3, 2 / 3]), np.asarray([0.1, 0.2]),
                         np.asarray([0.5, 0.9]), True, per_seed=np.asarray([[np.pi, 1e-9],
                                                                            [2.0, 123456789.0]]))}})
    text = path.read_text()
    assert text.endswith("}\n")
    assert '"value": [0.333333, 0.666667]' in text  # 6 significant digits, one line per list
    assert "[3.14159, 1e-09]" in text and "[2.0, 123457000.0]" in text
    orders: list[list[str]] = []
    json.loads(text, object_pairs_hook=lambda pairs: orders.append([k for k, _ in pairs]) or {})
    assert ["header", "measurements"] in orders and len(orders) > 5
    assert all(keys == sorted(keys) for keys in orders)  # every object's keys, sorted


def test_write_is_deterministic_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deep" / "dir" / "t.json"
    write_sample(path)
    first = path.read_bytes()
    write_sample(path)
    assert path.read_bytes() == first
    assert [p.name for p in path.parent.iterdir()] == ["t.json"]  # no temp file left

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(bl.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_baseline(path, header=header(), measurements={"adam": {"x": per_layer(name="x")}})
    assert path.read_bytes() == first  # the old baseline is intact
    assert [p.name for p in path.parent.iterdir()] == ["t.json"]


def test_write_errors(tmp_path: Path) -> None:
    h = header()
    del h["fingerprints"]
    with pytest.raises(ValueError, match=r"header: missing \['fingerprints'\]"):
        write_baseline(tmp_path / "a.json", header=h, measurements={})
    old = {k: v for k, v in header().items() if k not in ("seed_keys", *bl.PROVENANCE_KEYS)}
    with pytest.raises(ValueError, match=r"header: missing \['seed_keys', 'metric_digest', "
                                         r"'training_digest', 'analysis_options'\]"):
        write_baseline(tmp_path / "a.json", header=old, measurements={})
    with pytest.raises(TypeError, match=r"measurements\['adam'\]\['x'\]: expected a Measurement"):
        write_baseline(tmp_path / "a.json", header=header(), measurements={"adam": {"x": 1.0}})
    with pytest.raises(TypeError, match="cannot store a object"):
        write_baseline(tmp_path / "a.json", header=header(created=object()), measurements={})
    assert not (tmp_path / "a.json").exists()


def _mangle(path: Path, fn) -> None:
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _m(doc: dict, name: str = "head_stability") -> dict:
    return doc["measurements"]["adam"][name]


def _seeds(doc: dict, **seeds: list[int]) -> None:
    """Set the header's seeds and their (default) seed keys together, as make_header would."""
    doc["header"].update(seeds=seeds,
                         seed_keys={f: [f"init{s}-data{s}" for s in v] for f, v in seeds.items()})


@pytest.mark.parametrize("mangle, match", [
    (lambda d: d.pop("header"), "lacks 'header'"),
    (lambda d: d.pop("measurements"), "lacks 'measurements'"),
    (lambda d: d["header"].pop("fingerprints") and d["header"].pop("seeds"),
     "header lacks fingerprints, seeds"),
    (lambda d: d.update(header=[1]), "'header' must be an object"),
    (lambda d: d["header"].update(schema_version="1"), "header.schema_version must be an integer"),
    (lambda d: d["header"].update(schema_version=True), "header.schema_version must be an integer"),
    (lambda d: d["header"].update(device_class=3), "header.device_class must be a string"),
    (lambda d: d["header"].update(fingerprints=["fp"]), "header.fingerprints must map family"),
    (lambda d: d["header"].update(probe_digests={"adam": 1}), "header.probe_digests must map"),
    (lambda d: d["header"].update(seeds={"adam": [0, "1"]}), "header.seeds must map family"),
    (lambda d: d["header"].pop("seed_keys"), "header lacks seed_keys"),
    (lambda d: (d["header"].pop("analysis_options"), d["header"].pop("cudnn_version")),
     "header lacks analysis_options, cudnn_version"),
    (lambda d: d["header"].update(seed_keys=["init0-data0"]),
     "header.seed_keys must map family names to lists of strings"),
    (lambda d: d["header"]["seed_keys"].update(adam=[0, 1, 2, 3, 4]),
     "header.seed_keys must map family names to lists of strings"),
    (lambda d: d["header"]["seed_keys"].update(adam=KEYS[:4]),
     r"header\.seed_keys\.adam lists 4 seeds but header\.seeds\.adam 5"),
    (lambda d: d["header"]["seed_keys"].update(adamw=KEYS + ["init5-data5"]),
     r"header\.seed_keys\.adamw lists 6 seeds but header\.seeds\.adamw 5"),
    (lambda d: d.update(measurements=[1]), "'measurements' must map family names"),
    (lambda d: d["measurements"].update(adam={"head_stability": 3}),
     "measurements.adam.head_stability must be an object"),
    (lambda d: _m(d).pop("hi"), "measurements.adam.head_stability lacks hi"),
    (lambda d: _m(d).update(name="other"), "name is 'other', expected 'head_stability'"),
    (lambda d: _m(d).update(higher_is_better="yes"), "higher_is_better must be true or false"),
    (lambda d: _m(d).pop("per_seed"), "keeps neither per_seed nor pairwise"),
    (lambda d: _m(d).update(per_seed=[[1, 2, 3], [1, 2]]), "per_seed is not a rectangular array"),
    (lambda d: _m(d).update(per_seed=[["a", 2, 3]]), "per_seed is not a rectangular array"),
    (lambda d: _m(d).update(per_seed=[[1, 2], [1, 2]]), r"per_seed has shape \(2, 2\), expected"),
    (lambda d: _m(d).update(per_seed=[[1, None, 3], [1, 2, 3]]), "per_seed holds null/NaN"),
    (lambda d: _m(d).update(lo=[0.1]), "lo has a different shape from value"),
    (lambda d: _m(d, "resid_cka").update(pairwise=[[None, 1], [1, None], [1, 1]]),
     r"pairwise has shape \(3, 2\)"),
    (lambda d: _m(d, "resid_cka").update(pairwise=[[None, 1, 1, 1], [None, None, 1, 1],
                                                   [1, 1, None, 1], [1, 1, 1, None]]),
     "pairwise holds null/NaN off the diagonal"),
])
def test_read_errors_name_file_problem_and_fix(tmp_path: Path, mangle, match: str) -> None:
    path = tmp_path / "cpu" / "s" / "test_x.json"
    write_sample(path)
    _mangle(path, mangle)
    with pytest.raises(BaselineError, match=match) as e:
        read_baseline(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "--update-baselines" in msg


def _cut(x: list, m: int, axes: int) -> list:
    """The first ``m`` seeds along the first ``axes`` axes of a nested list."""
    return [_cut(v, m, axes - 1) if axes > 1 else v for v in x[:m]]


@pytest.mark.parametrize("mangle, match", [
    # a hand edit that drops seeds from the values but not from the header
    (lambda d: _m(d, "resid_cka").update(pairwise=_cut(_m(d, "resid_cka")["pairwise"], 2, 2)),
     r"measurements\.adam\.resid_cka\.pairwise holds values for 2 seed\(s\) but "
     r"header\.seeds\.adam lists 5"),
    (lambda d: _m(d).update(per_seed=_cut(_m(d)["per_seed"], 3, 1)),
     r"measurements\.adam\.head_stability\.per_seed holds values for 3 seed\(s\) but "
     r"header\.seeds\.adam lists 5"),
    # ... or from both: consistent, but too few for a seed-level test
    (lambda d: (_seeds(d, adam=[0, 1], adamw=[0, 1, 2, 3, 4]),
                _m(d).update(per_seed=_cut(_m(d)["per_seed"], 2, 1)),
                _m(d, "resid_cka").update(pairwise=_cut(_m(d, "resid_cka")["pairwise"], 2, 2))),
     r"measurements\.adam\.resid_cka\.pairwise holds values for 2 seed\(s\); a seed-level "
     r"test on it needs at least 3"),
    (lambda d: (_seeds(d, adam=[0], adamw=[0, 1, 2, 3, 4]),
                _m(d).update(per_seed=_cut(_m(d)["per_seed"], 1, 1)),
                d["measurements"]["adam"].pop("resid_cka")),
     r"measurements\.adam\.head_stability\.per_seed holds values for 1 seed\(s\); a "
     r"seed-level test on it needs at least 2"),
    (lambda d: _seeds(d, adamw=[0, 1, 2, 3, 4]),
     r"measurements\.adam has no header\.seeds\.adam"),
    # per-layer value cut to one layer, the seed-level values left alone
    (lambda d: _m(d).update(value=[0.8], lo=[0.7], hi=[0.9]),
     r"measurements\.adam\.head_stability\.per_seed has shape \(5, 3\), expected \[M, \*\(1,\)\]"),
    (lambda d: _m(d, "resid_cka").update(value=[0.9], lo=[0.8], hi=[1.0]),
     r"measurements\.adam\.resid_cka\.pairwise has shape \(5, 5\), expected \[M, M, \*\(1,\)\]"),
], ids=["pairwise-seeds-cut", "per_seed-seeds-cut", "pairwise-2-seeds", "per_seed-1-seed",
        "family-without-seeds", "value-cut-per_seed", "value-cut-pairwise"])
def test_read_checks_seed_axes_against_header(tmp_path: Path, mangle, match: str) -> None:
    path = tmp_path / "cpu" / "s" / "test_x.json"
    write_sample(path)
    read_baseline(path)  # the sample itself is consistent
    _mangle(path, mangle)
    with pytest.raises(BaselineError, match=match) as e:
        read_baseline(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "--update-baselines" in msg


def test_stored_baselines_are_readable() -> None:
    """Every baseline in the repository passes read_baseline's checks in the current schema (a
    hand edit that breaks one shows up here, not at the end of a long training run; a file of
    an older schema would make every check on it STALE)."""
    root = Path(__file__).resolve().parents[1] / "baselines"
    paths = [p for p in sorted(root.glob("*/*/*.json")) if not p.name.endswith(bl.OBTAINED_SUFFIX)]
    assert paths, f"no baseline files under {root}"
    old = []
    for p in paths:
        b = read_baseline(p)
        if b.header["schema_version"] != SCHEMA_VERSION:
            old.append(f"{p.relative_to(root.parent)} (schema {b.header['schema_version']})")
    assert not old, (f"baselines not in schema version {SCHEMA_VERSION}, rewrite them with "
                     f"--update-baselines: {', '.join(old)}")


def test_read_invalid_json_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    write_sample(path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + ",,"
    path.write_text("\n".join(lines))
    with pytest.raises(BaselineError, match=r"invalid JSON at line 4, column \d+") as e:
        read_baseline(path)
    assert str(path) in str(e.value) and "--update-baselines" in str(e.value)


@pytest.mark.parametrize("content, match", [
    ("[]", "expected a JSON object"),
    ("", "invalid JSON at line 1, column 1"),
])
def test_read_other_bad_files(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(BaselineError, match=match):
        read_baseline(path)


def test_read_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="no such baseline file.*--update-baselines"):
        read_baseline(tmp_path / "nope.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BaselineError, match="cannot be read"):
        read_baseline(tmp_path / "bin.json")


def test_other_schema_version_is_not_parsed_but_stale(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    write_sample(path)
    _mangle(path, lambda d: (d["header"].update(schema_version=SCHEMA_VERSION + 1),
                             d.update(measurements={"adam": {"x": "new format"}})))
    b = read_baseline(path)
    assert b.measurements == {}
    assert stale_reasons(b.header, header()) == [
        f"schema version changed: {SCHEMA_VERSION + 1} -> {SCHEMA_VERSION}"]


def _schema_1(doc: dict) -> None:
    """A schema-1 file: no seed keys, no provenance, fewer versions; its body is not checked
    against the current rules (here a per_seed axis that disagrees with the header's seeds)."""
    h = doc["header"]
    for k in ("seed_keys", *bl.PROVENANCE_KEYS, "cudnn_version", "numpy_version",
              "scipy_version", "python_version"):
        del h[k]
    h["schema_version"] = 1
    _m(doc).update(per_seed=_cut(_m(doc)["per_seed"], 3, 1))


def test_schema_1_file_is_stale_not_invalid(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 2
    path = tmp_path / "t.json"
    write_sample(path)
    _mangle(path, _schema_1)
    b = read_baseline(path)  # no BaselineError: a file of another schema is not INVALID
    assert b.header["schema_version"] == 1 and "seed_keys" not in b.header
    assert b.measurements == {}
    assert stale_reasons(b.header, header()) == ["schema version changed: 1 -> 2"]
    assert stale_reasons(b.header, header(), seeds=False) == ["schema version changed: 1 -> 2"]
    # the same header claiming the current schema is checked, and fails
    _mangle(path, lambda d: d["header"].update(schema_version=SCHEMA_VERSION))
    with pytest.raises(BaselineError, match="header lacks seed_keys, metric_digest"):
        read_baseline(path)


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


def test_no_temp_files_after_many_writes(tmp_path: Path) -> None:
    for _ in range(3):
        write_sample(tmp_path / "t.json")
    assert os.listdir(tmp_path) == ["t.json"]


def test_interval_options_are_notes_not_staleness() -> None:
    """ci and ci_method shape a row's printed interval only; the per-seed values a check
    compares are the same, so changing them must not force every baseline to be rewritten."""
    over = {"analysis_options": {**PROVENANCE["analysis_options"], "ci": 0.9,
                                 "ci_method": "bootstrap"}}
    assert stale_reasons(header(), header(**over)) == []
    notes = header_notes(header(), header(**over))
    assert len(notes) == 2 and all("intervals only" in n for n in notes), notes
    assert "analysis option ci differs from the baseline's: 0.95 -> 0.9" in notes[0]
