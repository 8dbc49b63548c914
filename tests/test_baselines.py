"""Tests for harness.baselines' files: layout, reviewable JSON round trip, atomic writes,
every read error naming the file, the key and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from harness import baselines as bl
from harness.baselines import (SCHEMA_VERSION, Baseline, BaselineError, baseline_path,
                               obtained_path, read_baseline, sanitize_test_name, stale_reasons,
                               write_baseline)
from harness.results import Measurement
from baseline_samples import KEYS, analysis, header, per_layer, write_sample


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
    assert msg.startswith(f"{path}: ") and "--seedstab-update-baselines" in msg


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
    assert msg.startswith(f"{path}: ") and "--seedstab-update-baselines" in msg


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
                     f"--seedstab-update-baselines: {', '.join(old)}")


def test_read_invalid_json_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    write_sample(path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + ",,"
    path.write_text("\n".join(lines))
    with pytest.raises(BaselineError, match=r"invalid JSON at line 4, column \d+") as e:
        read_baseline(path)
    assert str(path) in str(e.value) and "--seedstab-update-baselines" in str(e.value)


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
    with pytest.raises(BaselineError, match="no such baseline file.*--seedstab-update-baselines"):
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


def test_no_temp_files_after_many_writes(tmp_path: Path) -> None:
    for _ in range(3):
        write_sample(tmp_path / "t.json")
    assert os.listdir(tmp_path) == ["t.json"]
