"""analyze_family on real (tiny) families: identities that must hold whatever was learned."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from harness.analysis import AnalysisOptions, analyze_family, compare_families
from harness.results import Analysis, Measurement
from harness.stats import Underpowered, holm
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
        # the paper's anchor measures have the M-1 non-anchor seeds as their units
        anchored = name in ("head_stability.anchor", "gap.paper", "gap.paper.trend")
        assert m.n_seeds == (2 if anchored else 3), name
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
    # per-seed metrics are paired too; per-layer p-values are max-T adjusted by default, Holm on request
    ent = compare_families(trained, trained, metrics=["attention_entropy"])["attention_entropy"]
    assert "per-seed differences" in ent.method and "max-T" in ent.method and ent.adjustment == "max-t"
    raw = compare_families(trained, shifted, metrics=["attention_entropy"], adjust="none")["attention_entropy"]
    adj = compare_families(trained, shifted, metrics=["attention_entropy"], adjust="holm")["attention_entropy"]
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


# ------------------------------------------------------------------------ the anchor measure


def test_the_anchor_measure_is_reported_but_not_baselinable(trained):
    m = trained["head_stability.anchor"]
    # the value is unchanged: mean over the other seeds of S(anchor, m), anchor = the first seed
    rows = trained["head_stability.per_head"].pairwise.reshape(3, 3, 2, -1).mean(axis=-1)[0, 1:]  # [M-1, L]
    np.testing.assert_allclose(m.value, rows.mean(axis=0), atol=1e-12)
    assert not m.baselinable and "conditional on the anchor seed" in m.description
    with pytest.raises(ValueError, match="head_stability.anchor is conditional on the anchor seed; "
                                         "baseline head_stability.all_anchors instead"):
        m.unit_values()
    back = Measurement.from_dict(m.to_dict())
    assert not back.baselinable and back.baseline_note == m.baseline_note
    assert "baselinable" not in trained["head_stability.all_anchors"].to_dict()  # baseline files unchanged
    assert Measurement.from_dict(trained["head_stability.all_anchors"].to_dict()).baselinable
    with pytest.raises(ValueError, match="cannot compare head_stability.anchor: .*conditional on the anchor"):
        compare_families(trained, trained, metrics=["head_stability.anchor"])


# ------------------------------------------------------------------------ correlations on seed-level units


def _reference_units(x: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """Slow reference: Spearman r per seed and layer against its row mean; leave one seed out of
    the whole family (member and partner), pseudo-values of the mean r, recentred on it."""
    from scipy.stats import spearmanr

    M, L = x.shape[:2]

    def mean_r(keep):
        out = np.zeros(L)
        for k in keep:
            s = np.mean([pw[k, m] for m in keep if m != k], axis=0)  # [L, H]
            for l in range(L):
                r = spearmanr(x[k, l], s[l]).statistic if np.ptp(x[k, l]) and np.ptp(s[l]) else 0.0
                out[l] += r / len(keep)
        return out

    full = mean_r(range(M))
    ps = np.stack([M * full - (M - 1) * mean_r([k for k in range(M) if k != j]) for j in range(M)])
    return ps - ps.mean(axis=0) + full


def test_importance_units_are_jackknife_pseudo_values_of_the_family_correlation(trained):
    m = trained["importance.spearman"]
    dppl = np.asarray(trained.info["delta_ppl"])  # [M, L, H]
    pw = trained["head_stability.per_head"].pairwise.reshape(3, 3, *dppl.shape[1:])  # [M, M, L, H]
    np.testing.assert_allclose(m.per_seed, _reference_units(dppl, pw), atol=1e-10)
    np.testing.assert_allclose(m.value, m.per_seed.mean(axis=0), atol=1e-12)
    assert "pseudo-values" in m.description


def test_correlation_units_give_calibrated_intervals_where_row_mean_correlations_do_not():
    """Simulated families (5 seeds, 6 layers): per-seed x = seed effect + noise, pairwise
    stability with seed effects and pair noise. The t interval over each seed's r against its
    row mean covers the expected family-mean r less often than nominal (the r share the other
    seeds); the jackknife units of the family r cover at or above the nominal 0.95."""
    from scipy.stats import t as student_t

    from harness.analysis.aggregate import Aggregator
    from harness.analysis.importance import row_stability, seed_correlations

    agg = Aggregator(AnalysisOptions())
    rng = np.random.default_rng(3)
    M, L, n_fam = 4, 6, 400
    results = []
    for _ in range(n_fam):
        u = rng.normal(size=(M, L))
        e = rng.normal(0.0, 0.3, size=(M, M, L))
        x = 0.3 * np.linspace(0, 1, L) + u[:, None] + u[None, :] + (e + e.transpose(1, 0, 2)) / np.sqrt(2)
        x[np.arange(M), np.arange(M)] = np.nan
        q = u + rng.normal(size=(M, L))
        units = seed_correlations(q, x, lambda k: k, agg, kinds=("pearson",))["pearson"]
        rm = row_stability(x, np.arange(M))
        r = np.array([np.corrcoef(q[k], rm[k])[0, 1] for k in range(M)])
        results.append((r, units))
    target = np.mean([r.mean() for r, _ in results])  # E[family-mean r] at this M
    t = student_t.ppf(0.975, M - 1)

    def cover(v):
        return abs(v.mean() - target) <= t * v.std(ddof=1) / np.sqrt(M)

    old = np.mean([cover(r) for r, _ in results])
    new = np.mean([cover(u) for _, u in results])
    assert 0.93 <= new <= 0.99, new  # measured 0.948 (row-mean r: 0.90)
    assert old < new - 0.02, (old, new)


# ------------------------------------------------------------------------ degenerate families


def test_a_dead_layer_gives_named_nan_not_a_crash(cfg, store):
    """Every head of layer 1 uniform (W_Q = 0): the shuffled-prompt null is 1 there, so
    (raw - null) / (1 - null) is undefined; it is NaN and named, the rest is computed."""
    fam = obtain_family(cfg, store=store)
    with torch.no_grad():
        for model in fam.models:
            model.blocks[1].attn.W_Q.weight.zero_()
            model.blocks[1].attn.W_Q.bias.zero_()
    a = analyze_family(fam, options=OPTIONS)
    norm = a["content_specific_normalized.all_anchors"]
    assert np.isnan(norm.value[1]) and np.isnan(norm.lo[1]) and np.isfinite(norm.value[0])
    assert a.info["degenerate"] == ["content_specific_normalized.all_anchors layer 1: null = 1 (attention does "
                                    "not depend on the prompt: every head uniform)"]
    assert np.allclose(a["content_specific.all_anchors"].value[1], 0.0, atol=1e-6)  # similarity: float32 products
    assert a.info["undefined_correlations"]["importance.spearman"] > 0  # constant stability: r = 0, counted


def test_a_nan_seed_gives_named_nan_not_a_crash(cfg, store):
    fam = obtain_family(cfg, store=store)
    with torch.no_grad():
        for p in fam.models[2].parameters():
            p.fill_(float("nan"))
    a = analyze_family(fam, options=OPTIONS)
    assert a.info["degenerate"][0].startswith("seed 2: non-finite activations")
    for name in ("head_stability.all_anchors", "content_specific.all_anchors", "resid_cka.debiased.mid",
                 "attention_entropy", "importance.spearman", "head_stability.spread", "head_stability.anchor"):
        assert np.all(np.isnan(a[name].value)), name
        assert any(d.startswith(name + " ") or d.startswith(name + ":") for d in a.info["degenerate"]), name
    assert np.all(np.isfinite(a["head_stability_step0.all_anchors"].value))  # the untrained family is fine
    m = a["head_stability.all_anchors"]
    assert np.isnan(m.pairwise[2]).all() and np.isfinite(m.pairwise[0, 1]).all()
    json.dumps(a.to_dict()["measurements"]["head_stability.all_anchors"])  # NaN -> null


def test_stats_errors_name_the_metric_and_the_layer():
    from harness.analysis.aggregate import Aggregator

    agg = Aggregator(AnalysisOptions(), seeds=(0, 1, 2))
    pw = np.full((3, 3, 2), 0.5)
    pw[0, 1, 1] = np.nan  # one undefined pair in layer 1
    agg.pairwise("some.metric", pw, higher=True, desc="", bounds=(None, None))
    m = agg.out["some.metric"]
    assert np.isfinite(m.value[0]) and np.isnan(m.value[1])
    assert agg.degenerate == ["some.metric layer 1: NaN or inf for 1 of 6 seed pairs (seeds 0, 1)"]
    with pytest.raises(ValueError, match=r"seed pair \(0, 1\) at element \(1,\)"):
        from harness.stats import seed_jackknife_t

        seed_jackknife_t(pw)


# ------------------------------------------------------------------------ joint comparisons


def _synthetic(family: str, seeds: tuple[int, ...], pairwise: dict[str, np.ndarray],
               higher: dict[str, bool] | None = None) -> Analysis:
    ms = {}
    for name, pw in pairwise.items():
        v = np.nanmean(np.where(np.eye(pw.shape[0], dtype=bool)[..., None], np.nan, pw), axis=(0, 1))
        ms[name] = Measurement(name=name, value=v, lo=v, hi=v, higher_is_better=(higher or {}).get(name, True),
                               pairwise=pw, n_seeds=pw.shape[0])
    return Analysis(family=family, fingerprint="fp", seeds=seeds, device_class="cpu", probe_digest="d",
                    measurements=ms)


def _pair_of_families(rng: np.random.Generator, m: int, layers: int, shift: float) -> tuple[Analysis, Analysis]:
    """Two paired families, metrics s and t, b better than a by ``shift`` in every pair."""
    def fam(offset):
        out = {}
        for name in ("s", "t"):
            u = rng.normal(0.0, 0.05, size=(m, layers))
            x = 0.6 + u[:, None] + u[None, :] + offset
            x[np.arange(m), np.arange(m)] = np.nan
            out[name] = x
        return out

    a = fam(0.0)
    b = {k: v + shift + np.abs(rng.normal(0.0, 0.01, size=v.shape)) for k, v in a.items()}
    seeds = tuple(range(m))
    return _synthetic("a", seeds, a), _synthetic("b", seeds, b)


def test_joint_max_t_over_metrics_reaches_what_holm_cannot():
    """6 paired seeds, 2 metrics x 2 layers, b better in every seed: max-T over all 4 rows
    reaches p = 1/64 < 0.05; Holm across each metric's 2 layers cannot go below 2/64, so with
    alpha split over the 2 metrics (0.025) it could never reject."""
    a, b = _pair_of_families(np.random.default_rng(0), 6, 2, shift=0.05)
    joint = compare_families(a, b, metrics=["s", "t"], alternative="greater", alpha=0.05)
    for c in joint.values():
        assert c.adjustment == "max-t" and c.n_rows == 4 and c.exact and c.n_perm == 64
        assert np.all(np.asarray(c.p_value) < 0.05) and "jointly over 4 rows of 2 metrics" in c.method
    assert min(np.min(c.p_value) for c in joint.values()) == pytest.approx(1 / 64)
    holm_ = compare_families(a, b, metrics=["s", "t"], alternative="greater", adjust="holm")
    assert min(np.min(c.p_value) for c in holm_.values()) == pytest.approx(2 / 64) and 2 / 64 >= 0.05 / 2


def test_underpowered_comparisons_are_refused_with_the_numbers():
    a, b = _pair_of_families(np.random.default_rng(1), 4, 4, shift=0.05)
    with pytest.raises(Underpowered, match=r"4 and 4 seeds \(paired\), 8 rows .* 0\.0625 .*>= alpha 0\.05.*"
                                           r"5 paired seeds per family would reach it"):
        compare_families(a, b, metrics=["s", "t"], alternative="greater", alpha=0.05)
    assert issubclass(Underpowered, ValueError)
    compare_families(a, b, metrics=["s", "t"], alternative="greater", alpha=0.1)  # 1/16 < 0.1
    with pytest.raises(Underpowered, match=r"Holm across the 4 layers of s"):
        compare_families(a, b, metrics=["s"], alternative="greater", adjust="holm", alpha=0.2)
    a6, b6 = _pair_of_families(np.random.default_rng(2), 6, 2, shift=0.05)
    with pytest.raises(Underpowered, match=r"two-sided.*0\.0312"):  # 2/64 >= 0.03
        compare_families(a6, b6, metrics=["s"], alpha=0.03)


def test_worse_orients_every_metric_by_its_own_direction():
    rng = np.random.default_rng(4)
    a, b = _pair_of_families(rng, 6, 2, shift=-0.05)  # b lower than a in s and t
    a = _synthetic("a", a.seeds, {n: m.pairwise for n, m in a.measurements.items()}, higher={"t": False})
    b = _synthetic("b", b.seeds, {n: m.pairwise for n, m in b.measurements.items()}, higher={"t": False})
    cmp = compare_families(a, b, metrics=["s", "t"], alternative="worse")
    assert cmp["s"].alternative == "less" and cmp["t"].alternative == "greater"
    assert np.all(cmp["s"].p_value < 0.05)  # s (higher is better) fell: worse
    assert np.all(cmp["t"].p_value == 1.0)  # t (lower is better) fell: better, never flagged


# ------------------------------------------------------------------------ ranges and the gaps


def test_every_measurement_declares_its_range_and_lies_in_it(trained):
    from harness.analysis import metric_range

    for name, m in trained.measurements.items():
        assert m.bounds == metric_range(name), name  # declared (bounded or UNBOUNDED) for every name
        low = -np.inf if m.bounds[0] is None else m.bounds[0]
        high = np.inf if m.bounds[1] is None else m.bounds[1]
        for what in ("value", "lo", "hi"):
            x = np.asarray(getattr(m, what))
            ok = np.isnan(x) | ((x >= low - 1e-9) & (x <= high + 1e-9))
            assert np.all(ok), (name, what, x, m.bounds)  # a wrong declaration shows here
    assert trained.info["ci_clipped"] == sorted(n for n, m in trained.measurements.items() if m.ci_note)


def test_the_paper_gap_is_rbf_cka_at_resid_pre_minus_anchor_stability(trained):
    g = trained["gap.paper"]
    rbf = trained["resid_cka.rbf.pre"].pairwise[0, 1:]  # [M-1, L]: CKA(anchor, m)
    anchor = trained["head_stability.anchor"].per_seed  # [M-1, L]: S(anchor, m)
    np.testing.assert_allclose(g.per_seed, rbf - anchor, atol=1e-12)
    np.testing.assert_allclose(g.value, (rbf - anchor).mean(axis=0), atol=1e-12)
    assert "RBF CKA at resid_pre - anchor head stability (the paper's comparison)" in g.description
    assert not g.baselinable and g.n_seeds == 2
    like = trained["gap.cka"]  # like for like, per seed pair
    np.testing.assert_allclose(like.pairwise, trained["resid_cka.debiased.mid"].pairwise
                               - trained["head_cka.debiased"].pairwise, atol=1e-12, equal_nan=True)
    assert "gap.pattern" not in trained.measurements
    assert trained["gap.paper.trend"].per_seed.shape == (2,)


def test_without_the_rbf_kernel_the_paper_gap_is_absent_and_says_why(cfg, store):
    options = AnalysisOptions(n_boot=100, kernels=("linear", "debiased"), step0=False, importance=False,
                              cross_layer=False)
    a = analyze_family(obtain_family(cfg, store=store), options=options)
    assert "gap.paper" not in a.measurements and "gap.cka" in a.measurements
    assert "rbf" in a.info["absent"]["gap.paper"]
    with pytest.raises(KeyError, match="no measurement 'gap.paper' in the analysis of tiny: it needs the 'rbf'"):
        a["gap.paper"]
