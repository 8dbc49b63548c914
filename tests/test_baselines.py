"""Tests for harness.baselines: layout, header, reviewable JSON round trip, errors, staleness."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness import baselines as bl
from harness.baselines import (SCHEMA_VERSION, Baseline, BaselineError, baseline_path,
                               header_notes, make_header, obtained_path, read_baseline,
                               sanitize_test_name, stale_reasons, write_baseline)
from harness.results import Analysis, Measurement

VERSIONS = {"harness_version": "0.1.0", "torch_version": "2.13.0", "cuda_version": None}


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
                    device_name="test-cpu", created="2026-11-25T00:00:00+00:00",
                    versions=VERSIONS)
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


def test_make_header_records_every_family() -> None:
    h = header()
    assert set(h) == set(bl.HEADER_KEYS)
    assert h["schema_version"] == SCHEMA_VERSION
    assert h["fingerprints"] == {"adam": "fp-adam", "adamw": "fp-adamw"}
    assert h["probe_digests"] == {"adam": "probe-1", "adamw": "probe-1"}
    assert h["seeds"] == {"adam": [0, 1, 2, 3, 4], "adamw": [0, 1, 2, 3, 4]}
    assert (h["device_class"], h["device_name"]) == ("cpu", "test-cpu")


def test_make_header_defaults() -> None:
    import torch
    h = make_header({"adam": analysis(info={"device_name": "my box"})})
    assert h["device_name"] == "my box"
    assert h["torch_version"] == str(torch.__version__)
    assert h["cuda_version"] == torch.version.cuda
    assert h["created"].startswith("20") and h["created"].endswith("+00:00")
    assert make_header({"adam": analysis()})["device_name"]  # falls back to the CPU's name


@pytest.mark.parametrize("arg, err, match", [
    ({}, ValueError, "non-empty mapping"),
    ([analysis()], ValueError, "non-empty mapping"),
    ({"adam": "not an analysis"}, TypeError, r"analyses\['adam'\]: expected an Analysis"),
    ({"adam": analysis(), "gpu": analysis("gpu", device_class="cuda-x")}, ValueError,
     "different device classes"),
])
def test_make_header_errors(arg, err, match) -> None:
    with pytest.raises(err, match=match):
        make_header(arg, versions=VERSIONS)


def test_make_header_rejects_incomplete_versions() -> None:
    with pytest.raises(ValueError, match="versions: missing"):
        make_header({"adam": analysis()}, versions={"torch_version": "x"})


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
    (lambda d: (d["header"]["seeds"].update(adam=[0, 1]),
                _m(d).update(per_seed=_cut(_m(d)["per_seed"], 2, 1)),
                _m(d, "resid_cka").update(pairwise=_cut(_m(d, "resid_cka")["pairwise"], 2, 2))),
     r"measurements\.adam\.resid_cka\.pairwise holds values for 2 seed\(s\); a seed-level "
     r"test on it needs at least 3"),
    (lambda d: (d["header"]["seeds"].update(adam=[0]),
                _m(d).update(per_seed=_cut(_m(d)["per_seed"], 1, 1)),
                d["measurements"]["adam"].pop("resid_cka")),
     r"measurements\.adam\.head_stability\.per_seed holds values for 1 seed\(s\); a "
     r"seed-level test on it needs at least 2"),
    (lambda d: d["header"].update(seeds={"adamw": [0, 1, 2, 3, 4]}),
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
    """Every baseline in the repository passes read_baseline's checks (a hand edit that breaks
    one shows up here, not at the end of a long training run)."""
    root = Path(__file__).resolve().parents[1] / "baselines"
    paths = [p for p in sorted(root.glob("*/*/*.json")) if not p.name.endswith(bl.OBTAINED_SUFFIX)]
    for p in paths:
        read_baseline(p)


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


# ----------------------------------------------------------------------------- staleness


def test_stale_reasons_same_header_is_fresh() -> None:
    assert stale_reasons(header(), header(created="later", torch_version="3.0",
                                          seeds={"adam": [9]})) == []


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


def test_header_notes_versions_only() -> None:
    assert header_notes(header(), header()) == []
    notes = header_notes(header(), header(torch_version="2.14.0", device_name="other"))
    assert notes == ["torch differs from the baseline's: 2.13.0 -> 2.14.0",
                     "device differs from the baseline's: test-cpu -> other"]


def test_no_temp_files_after_many_writes(tmp_path: Path) -> None:
    for _ in range(3):
        write_sample(tmp_path / "t.json")
    assert os.listdir(tmp_path) == ["t.json"]
