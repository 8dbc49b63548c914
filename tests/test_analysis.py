"""analyze_family on real (tiny) families: identities that must hold whatever was learned."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from harness.analysis import AnalysisOptions, analyze_family, compare_families
from harness.stats import holm
from harness.config import load_family
from harness.family import obtain_family

SPEC = """
    name: tiny
    seeds: [0, 1, 2]
    model: {n_layers: 2, n_heads: 2, d_model: 16, d_mlp: 32}
    data: {vocab_size: 32, seq_len: 32, synthetic: {span_min: 4, span_max: 8}}
    train: {lr: 3.0e-3, steps: 15, batch_size: 8}
    probe: {n_prompts: 8}
"""
OPTIONS = AnalysisOptions(n_boot=100)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(textwrap.dedent(SPEC))
    return load_family(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def trained(cfg, store):
    return analyze_family(obtain_family(cfg, store=store), options=OPTIONS)


def test_a_family_of_identical_models_is_perfectly_stable(cfg, store):
    # init_seed and data_seed fixed: every family seed trains the same bits
    same = cfg.replace(train={"init_seed": 0, "data_seed": 0})
    a = analyze_family(obtain_family(same, store=store), options=OPTIONS)
    for name in ("head_stability.all_anchors", "head_stability.hungarian", "head_stability.anchor",
                 "cross_layer.all_anchors", "resid_cka.linear.post", "resid_cka.debiased.mid",
                 "head_cka.linear", "matched_head_cka.linear", "induction.similarity"):
        assert np.allclose(a[name].value, 1.0, atol=1e-5), (name, a[name].value)
    assert np.allclose(a["gap.cka"].value, 0.0, atol=1e-5)
    assert np.allclose(a["head_stability.spread"].value, 0.0, atol=1e-6)


def test_content_specific_is_raw_minus_null(trained):
    raw, null, cs = (trained[n].pairwise for n in ("head_stability.all_anchors",
                                                   "head_stability_null.all_anchors", "content_specific.all_anchors"))
    assert np.allclose(cs, raw - null, equal_nan=True)


def test_every_measurement_has_a_ci_around_its_value(trained):
    for name, m in trained.measurements.items():
        # the paper's anchor measure has the M-1 non-anchor seeds as its units
        assert m.n_seeds == (2 if name == "head_stability.anchor" else 3), name
        ok = np.isnan(m.value) | ((m.lo <= m.value + 1e-9) & (m.value <= m.hi + 1e-9))
        assert np.all(ok), (name, m.value, m.lo, m.hi)
        assert (m.pairwise is not None) or (m.per_seed is not None) or np.ndim(m.value) == 0, name


def test_step0_is_the_ceiling_of_the_raw_metric(trained):
    assert np.all(trained["head_stability_step0.all_anchors"].value > 0.99)


def test_comparisons_pick_paired_or_unpaired_and_refuse_other_depths(cfg, store, trained):
    shifted = analyze_family(obtain_family(cfg.replace(seeds=[5, 6, 7]), store=store), options=OPTIONS)
    paired = compare_families(trained, trained, metrics=["head_stability.all_anchors"])
    assert "paired" in paired["head_stability.all_anchors"].method
    assert np.allclose(paired["head_stability.all_anchors"].delta, 0.0)
    unpaired = compare_families(trained, shifted, metrics=["head_stability.all_anchors"])
    assert "paired" not in unpaired["head_stability.all_anchors"].method
    # per-seed metrics are paired too, and per-layer p-values are Holm-adjusted
    ent = compare_families(trained, trained, metrics=["attention_entropy"])["attention_entropy"]
    assert "per-seed differences" in ent.method and "Holm" in ent.method
    raw = compare_families(trained, shifted, metrics=["attention_entropy"], adjust="none")["attention_entropy"]
    adj = compare_families(trained, shifted, metrics=["attention_entropy"])["attention_entropy"]
    assert "Holm" not in raw.method and "Holm" in adj.method
    np.testing.assert_allclose(adj.p_value, holm(raw.p_value))
    with pytest.raises(ValueError, match="adjust"):
        compare_families(trained, shifted, metrics=["attention_entropy"], adjust="bonferroni")
    deeper = analyze_family(obtain_family(cfg.replace(model={"n_layers": 3}), store=store), options=OPTIONS)
    with pytest.raises(ValueError, match="layer by layer"):
        compare_families(trained, deeper, metrics=["head_stability.all_anchors"])


def test_two_seeds_are_too_few(cfg, store):
    with pytest.raises(ValueError, match="at least 3 seeds"):
        analyze_family(obtain_family(cfg.replace(seeds=[0, 1]), store=store), options=OPTIONS)


def test_correlation_cis_stay_within_minus_one_and_one(trained):
    names = [n for n in trained.measurements
             if n.startswith(("importance.pearson", "importance.spearman", "qnorm.pearson")) and not n.endswith("trend")]
    assert "importance.spearman_cs" in names
    for n in names:
        m = trained[n]
        assert np.all(m.lo >= -1.0) and np.all(m.hi <= 1.0), (n, m.lo, m.hi)
        assert np.all(m.lo <= m.value + 1e-12) and np.all(m.value <= m.hi + 1e-12), n
