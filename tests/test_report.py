"""Plots and the `seedstab analyze` report: PNGs, meta-SNE, report.json, comparisons, errors."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import plots
from harness.analysis import AnalysisOptions, analyze_family, probe_tokens
from harness.capture import capture_family
from harness.cli import main
from harness.config import load_family
from harness.family import obtain_family
from harness.report import format_comparisons, format_table

SPEC = """
    name: %(name)s
    seeds: %(seeds)s
    model: {n_layers: %(layers)d, n_heads: 2, d_model: 16, d_mlp: 32}
    data: {vocab_size: 32, seq_len: 32}
    train: {lr: 1.0e-3, steps: 20, batch_size: 4, device: cpu}
    probe: {n_prompts: 8}
"""

PNG = b"\x89PNG\r\n\x1a\n"


def write_spec(folder: Path, name: str, *, layers: int = 2, seeds: str = "[0, 1, 2]") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(SPEC % {"name": name, "layers": layers, "seeds": seeds}))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny 3-seed, 2-layer, 2-head family in a store, its analysis and its patterns."""
    root = tmp_path_factory.mktemp("report")
    spec = write_spec(root, "tiny")
    store = root / "store"
    cfg = load_family(spec)
    fam = obtain_family(cfg, store=store)
    analysis = analyze_family(fam, options=AnalysisOptions(n_boot=50))
    cap = capture_family(fam.models, probe_tokens(cfg), seeds=[s.seed for s in fam.seeds])
    return {"root": root, "spec": spec, "store": store, "analysis": analysis, "patterns": cap.patterns}


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


# ------------------------------------------------------------------------------ plots


def test_each_plot_writes_a_png(trained, tmp_path):
    a = trained["analysis"]
    paths = [
        plots.plot_layer_stability([a], tmp_path / "layers.png"),
        plots.plot_layer_stability([a], tmp_path / "raw.png", controls=False),
        plots.plot_resid_vs_heads(a, tmp_path / "resid.png"),
        plots.plot_head_heatmap(a, tmp_path / "sub" / "heat.png"),  # creates the folder
        plots.plot_importance(a, tmp_path / "imp.png"),
    ]
    for p in paths:
        assert isinstance(p, Path) and is_png(p), p


def test_meta_sne_one_point_per_seed_layer_head_reproducibly(trained, tmp_path):
    pat = trained["patterns"]
    M, L, _, H = pat.shape[:4]
    path, xy = plots.plot_meta_sne(pat, tmp_path / "sne.png", generator_seed=3, seeds=[0, 1, 2])
    assert is_png(path)
    assert xy.shape == (M * L * H, 2) and np.isfinite(xy).all()
    _, again = plots.plot_meta_sne(pat, tmp_path / "sne2.png", generator_seed=3)
    np.testing.assert_allclose(again, xy)


def test_meta_sne_features_are_prompt_distances_and_identical_seeds_coincide(trained):
    pat = trained["patterns"][:1]  # (1, L, P, H, T, T)
    _, L, P, H = pat.shape[:4]
    twin = torch.cat([pat, pat])  # two identical seeds
    f = plots.meta_sne_features(twin)
    assert f.shape == (2 * L * H, P * (P - 1) // 2)
    np.testing.assert_allclose(f[: L * H], f[L * H:])  # seed-major order, same heads same rows
    assert (f >= -1e-9).all() and (f <= 1 + 1e-9).all()  # 1 - cosine of non-negative vectors
    same_prompt = pat[:, :, :1].expand(-1, -1, P, -1, -1, -1)  # every prompt attends alike
    assert np.abs(plots.meta_sne_features(same_prompt)).max() < 1e-9


def test_plot_error_paths(trained, tmp_path):
    a, pat = trained["analysis"], trained["patterns"]
    with pytest.raises(ValueError, match="no analyses"):
        plots.plot_layer_stability([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="not per layer"):
        plots.plot_layer_stability([a], tmp_path / "x.png", metric="head_stability.spread")
    with pytest.raises(KeyError, match="no measurement 'nope'"):
        plots.plot_layer_stability([a], tmp_path / "x.png", metric="nope")
    broken = replace(a, info={**a.info, "n_heads": 3})
    with pytest.raises(ValueError, match="n_heads=3"):
        plots.plot_head_heatmap(broken, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\[M, L, P, H, T, T\]"):
        plots.plot_meta_sne(pat[0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least 2 prompts"):
        plots.plot_meta_sne(pat[:, :, :1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least 4"):
        plots.plot_meta_sne(pat[:1, :1, :, :2], tmp_path / "x.png")  # 2 points
    with pytest.raises(ValueError, match="seed labels"):
        plots.plot_meta_sne(pat, tmp_path / "x.png", seeds=[0])
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------ tables


def test_format_table_has_a_row_per_layer_with_cis(trained):
    a = trained["analysis"]
    text = format_table(a)
    lines = text.splitlines()
    assert a.family in lines[0] and a.fingerprint in lines[0]
    hs = a["head_stability.all_anchors"]
    for l in range(a.info["n_layers"]):
        row = next(x for x in lines if x.split()[:1] == [str(l)])
        assert f"[{hs.lo[l]:.3f}, {hs.hi[l]:.3f}]" in row
        assert f"{a['gap.cka'].value[l]:.3f}" in row


def test_format_comparisons_shows_skips_and_deltas():
    text = format_comparisons({
        "b vs a": {"status": "skipped", "reason": "shapes (2,) and (3,) differ"},
        "c vs a": {"status": "compared", "paired": True, "metrics": {"gap.cka": {
            "delta": [0.1, -0.2], "lo": [0.0, -0.3], "hi": [0.2, None], "p_value": [0.5, 0.25],
            "method": "sign-flip"}}},
    })
    assert "b vs a: skipped: shapes (2,) and (3,) differ" in text
    assert "layer 1: -0.200 [-0.300, nan]  p=0.250" in text and "(sign-flip)" in text


# ------------------------------------------------------------------------------ the command


def test_analyze_writes_report_and_plots(trained, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["analyze", str(trained["spec"]), "--out", str(out), "--store", str(trained["store"]),
               "--n-boot", "50", "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["comparisons"] == {}
    fam = report["families"]["tiny"]
    assert fam["seeds"] == [0, 1, 2] and fam["info"]["n_layers"] == 2
    for name, m in fam["measurements"].items():
        assert {"value", "lo", "hi", "n_seeds"} <= m.keys(), name
        assert m["n_seeds"] >= 2, name
    hs = fam["measurements"]["head_stability.all_anchors"]
    assert len(hs["value"]) == 2 and all(lo <= v + 1e-12 for lo, v in zip(hs["lo"], hs["value"]))
    for png in ("layer_stability", "tiny.resid_vs_heads", "tiny.heatmap", "tiny.importance", "tiny.meta_sne"):
        assert is_png(out / f"{png}.png"), png
    text = capsys.readouterr().out
    assert "head stability [CI]" in text and str(out / "report.json") in text
    assert fam["info"]["ci_method"] == "jackknife-t" and "jackknife-t" in text


def test_ci_method_multi_bootstrap_is_passed_through(trained, tmp_path):
    out = tmp_path / "out"
    rc = main(["analyze", str(trained["spec"]), "--out", str(out), "--store", str(trained["store"]),
               "--n-boot", "50", "--ci-method", "multi-bootstrap", "--no-progress"])
    assert rc == 0
    fam = json.loads((out / "report.json").read_text())["families"]["tiny"]
    assert fam["info"]["ci_method"] == "multi-bootstrap"


def test_different_layer_counts_record_a_skipped_comparison(trained, tmp_path, capsys):
    deep = write_spec(tmp_path, "deep", layers=3)
    out = tmp_path / "out"
    rc = main(["analyze", str(trained["spec"]), str(deep), "--out", str(out),
               "--store", str(trained["store"]), "--n-boot", "50", "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["families"]) == {"tiny", "deep"}
    entry = report["comparisons"]["deep vs tiny"]
    assert entry["status"] == "skipped" and "different layer counts" in entry["reason"]
    assert "Traceback" not in entry["reason"]
    assert "deep vs tiny: skipped:" in capsys.readouterr().out


def test_same_family_twice_is_compared_paired(trained, tmp_path):
    out = tmp_path / "out"
    rc = main(["analyze", str(trained["spec"]), str(trained["spec"]), "--out", str(out),
               "--store", str(trained["store"]), "--n-boot", "50", "--no-progress"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    entry = report["comparisons"]["tiny#2 vs tiny"]
    assert entry["status"] == "compared" and entry["paired"] is True
    assert set(entry["metrics"]) == {"head_stability.all_anchors", "content_specific.all_anchors",
                                     "resid_cka.debiased.mid", "head_cka.debiased", "gap.cka"}
    np.testing.assert_allclose(entry["metrics"]["gap.cka"]["delta"], [0.0, 0.0], atol=1e-12)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("seeds", ["[0]", "[0, 1]"])
def test_too_few_seeds_are_refused_before_training(tmp_path, capsys, seeds):
    spec = write_spec(tmp_path, "lonely", seeds=seeds)
    store, out = tmp_path / "store", tmp_path / "out"
    rc = main(["analyze", str(spec), "--out", str(out), "--store", str(store), "--no-progress"])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "lonely.yaml" in err and "seeds" in err and "at least 3 seeds" in err
    assert not (out / "report.json").exists()
    assert not store.exists() or not any(store.rglob("*.pt"))  # nothing was trained


@pytest.mark.parametrize("content", [None, "name: [unclosed\n", "name: x\nseeds: [0, 1]\nbogus: 1\n"])
def test_spec_that_does_not_load_exits_2(tmp_path, capsys, content):
    spec = tmp_path / "bad.yaml"
    if content is not None:
        spec.write_text(content)
    rc = main(["analyze", str(spec), "--out", str(tmp_path / "out"), "--store", str(tmp_path / "s"),
               "--no-progress"])
    assert rc == 2
    assert "bad.yaml" in _one_line_error(capsys)


def test_bad_n_boot_exits_2(trained, tmp_path, capsys):
    rc = main(["analyze", str(trained["spec"]), "--out", str(tmp_path / "out"),
               "--store", str(trained["store"]), "--n-boot", "0", "--no-progress"])
    assert rc == 2
    assert "--n-boot" in _one_line_error(capsys)


def test_families_of_different_depth_are_plotted_against_relative_depth(trained, monkeypatch):
    import numpy as np

    a = trained["analysis"]
    L = len(a["head_stability.all_anchors"].value)

    def deeper(m):  # the same measurement, twice as many layers
        tile = (lambda x: None if x is None else np.concatenate([np.atleast_1d(x)] * 2))
        return replace(m, value=tile(m.value), lo=tile(m.lo), hi=tile(m.hi), per_seed=None, pairwise=None)

    names = ["head_stability.all_anchors", "head_stability_null.all_anchors",
             "head_stability_step0.all_anchors", "content_specific.all_anchors"]
    b = replace(a, family="deep", measurements={**a.measurements,
                                                **{n: deeper(a[n]) for n in names if n in a.measurements}})
    monkeypatch.setattr(plots, "_save", lambda fig, path: fig)
    fig = plots.plot_layer_stability([a, b], "unused.png")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("relative depth")
    xs = [tuple(np.round(line.get_xdata(), 6)) for line in ax.get_lines()]
    assert tuple(np.round(np.linspace(0, 1, L), 6)) in xs and tuple(np.round(np.linspace(0, 1, 2 * L), 6)) in xs
    one = plots.plot_layer_stability([a], "unused.png")
    assert one.axes[0].get_xlabel() == "layer"
    assert one._suptitle.get_text() == "head stability per layer (95% CI over seeds, jackknife-t)"
