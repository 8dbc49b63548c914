"""Absolute expectations: each check passes on data that meets it and fails with a table
naming the metric, the layers and the seeds on data that does not."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from harness import expect
from harness.results import Analysis, Measurement
from harness.stats import paired_difference


def m(name: str, values, lo=None, hi=None) -> Measurement:
    v = np.asarray(values, dtype=float)
    return Measurement(name=name, value=v, lo=v - 0.01 if lo is None else np.asarray(lo, float),
                       hi=v + 0.01 if hi is None else np.asarray(hi, float), higher_is_better=True)


def analysis(**measurements) -> Analysis:
    ms = {k.replace("__", "."): m(k.replace("__", "."), v) for k, v in measurements.items()}
    return Analysis(family="fam", fingerprint="fp", seeds=(0, 1, 2), device_class="cpu", probe_digest="d",
                    measurements=ms)


def family(rng: np.random.Generator, means, *, m: int = 6, seed_sd: float = 0.02, pair_sd: float = 0.01) -> np.ndarray:
    """Pairwise [M, M, L] around per-layer ``means``, seed effects + pair noise, NaN diagonal."""
    means = np.asarray(means, dtype=float)
    u = rng.normal(0.0, seed_sd, size=(m, means.size))
    e = rng.normal(0.0, pair_sd, size=(m, m, means.size))
    x = means + u[:, None] + u[None, :] + (e + e.transpose(1, 0, 2)) / np.sqrt(2)
    x[np.arange(m), np.arange(m)] = np.nan
    return x


def pairwise_measurement(name: str, pw: np.ndarray, higher: bool = True) -> Measurement:
    from harness.stats import seed_jackknife_t

    est = seed_jackknife_t(pw)
    return Measurement(name=name, value=np.asarray(est.value), lo=np.asarray(est.lo), hi=np.asarray(est.hi),
                       higher_is_better=higher, pairwise=pw, n_seeds=pw.shape[0])


def seed_analysis(name: str = "fam", seeds=tuple(range(6)), **pairwise) -> Analysis:
    ms = {k.replace("__", "."): pairwise_measurement(k.replace("__", "."), v) for k, v in pairwise.items()}
    return Analysis(family=name, fingerprint="fp", seeds=tuple(seeds), device_class="cpu", probe_digest="d",
                    measurements=ms)


def test_mid_depth_minimum_judges_the_bootstrap_and_the_ci_lower_ends():
    rng = np.random.default_rng(0)
    clear = seed_analysis(s=family(rng, [0.9, 0.7, 0.6, 0.8, 0.85]))
    check = expect.mid_depth_minimum(clear, "s", floor=0.5)
    assert check.passed and "P(minimum mid-depth) = 1.000" in check.text
    with pytest.raises(expect.ExpectationFailed, match=r"not above the floor 0.58") as e:
        expect.mid_depth_minimum(clear, "s", floor=0.58)  # the minimum's CI reaches below it
    assert "seeds: [0, 1, 2, 3, 4, 5]" in str(e.value) and "P(argmin)" in str(e.value)
    edge = seed_analysis(s=family(rng, [0.5, 0.7, 0.6, 0.8, 0.85]))
    with pytest.raises(expect.ExpectationFailed, match=r"mid-depth \(layers 1..3\) with probability 0.0"):
        expect.mid_depth_minimum(edge, "s", floor=0.4)
    # the point estimate puts the minimum mid-depth (layer 2: 0.601 < 0.607 in layer 0), which the old
    # point rule accepted; over seed resamples layer 0 is the minimum 44% of the time, so it fails now
    close = seed_analysis(s=family(np.random.default_rng(1), [0.61, 0.7, 0.6, 0.8, 0.85], seed_sd=0.03))
    assert int(np.argmin(close["s"].value)) == 2
    with pytest.raises(expect.ExpectationFailed, match=r"with probability 0.563 < 0.95"):
        expect.mid_depth_minimum(close, "s", floor=0.4)
    with pytest.raises(ValueError, match="at least 3 layers"):
        expect.mid_depth_minimum(seed_analysis(s=family(rng, [0.9, 0.8])), "s", floor=0.0)
    with pytest.raises(ValueError, match="keeps no independent seed-level values"):
        expect.mid_depth_minimum(analysis(s=[0.9, 0.7, 0.6, 0.8, 0.85]), "s", floor=0.5)


def test_spread_increases_on_intervals():
    rng = np.random.default_rng(1)
    two = seed_analysis("l2", s=family(rng, [0.85, 0.80]))
    four = seed_analysis("l4", seeds=range(5), s=family(rng, [0.85, 0.7, 0.5, 0.6], m=5))
    eight = seed_analysis("l8", seeds=range(5), s=family(rng, [0.9, 0.8, 0.6, 0.4, 0.35, 0.5, 0.6, 0.7], m=5))
    check = expect.spread_increases([two, four, eight], "s", labels=["2", "4", "8"])
    assert check.passed and "every step's CI above 0" in check.text
    # the point values grow (0.366 -> 0.386), which `increasing` accepted; the interval does not show it
    flat = seed_analysis("l8", seeds=range(5), s=family(rng, [0.85, 0.7, 0.49, 0.6, 0.6, 0.6], m=5))
    spreads = [float(np.ptp(a["s"].value)) for a in (four, flat)]
    assert expect.increasing(spreads, ["4", "8"], what="spread").passed
    with pytest.raises(expect.ExpectationFailed, match=r"to grow in the order \['4', '8'\]") as e:
        expect.spread_increases([four, flat], "s", labels=["4", "8"])
    assert "NOT SHOWN" in str(e.value) and "paired" in str(e.value)  # same seeds: paired interval
    flat6 = seed_analysis("l8", s=family(rng, [0.85, 0.7, 0.49, 0.6, 0.6, 0.6]))
    with pytest.raises(expect.ExpectationFailed, match="Welch"):  # 5 vs 6 seeds: unpaired
        expect.spread_increases([four, flat6], "s")
    with pytest.raises(ValueError, match="at least 2 families"):
        expect.spread_increases([two], "s")


def test_above_uses_the_ci_lower_end():
    a = Analysis(family="f", fingerprint="fp", seeds=(0, 1), device_class="cpu", probe_digest="d",
                 measurements={"g": m("g", [0.2, 0.05], lo=[0.1, -0.01], hi=[0.3, 0.1])})
    assert expect.above(a, "g", bound=0.0, layers=[0]).passed
    with pytest.raises(expect.ExpectationFailed, match=r"not so in layers \[1\]"):
        expect.above(a, "g", bound=0.0)
    assert expect.above(a, "g", bound=0.0, use_ci=False).passed


def test_greater_with_margin():
    a = analysis(a=[0.9, 0.8], b=[0.5, 0.75])
    assert expect.greater(a, "a", "b", layers=[0], margin=0.3).passed
    with pytest.raises(expect.ExpectationFailed, match=r"a > b \+ 0.1 .* not so in layers \[1\]"):
        expect.greater(a, "a", "b", margin=0.1)


def test_increasing():
    assert expect.increasing([0.1, 0.2, 0.35], ["2", "4", "8"], what="spread").passed
    with pytest.raises(expect.ExpectationFailed, match="expected spread to grow"):
        expect.increasing([0.1, 0.3, 0.2], ["2", "4", "8"], what="spread")


def test_improvement_needs_effect_and_significance():
    rng = np.random.default_rng(0)
    M = 6
    base = rng.normal(0.5, 0.01, size=(M, M))
    np.fill_diagonal(base, np.nan)
    better = base + 0.05
    c = paired_difference(base, better, generator=rng, alternative="greater")
    assert expect.improvement(c, metric="s", delta=0.01, alpha=0.05, baseline="adam", candidate="adamw").passed
    with pytest.raises(expect.ExpectationFailed, match="expected adamw to beat adam on s by > 0.1"):
        expect.improvement(c, metric="s", delta=0.1, alpha=0.05, baseline="adam", candidate="adamw")
    same = paired_difference(base, base.copy(), generator=rng, alternative="greater")
    with pytest.raises(expect.ExpectationFailed):
        expect.improvement(same, metric="s", delta=-1.0, alpha=0.05, baseline="adam", candidate="adamw")
    layered = paired_difference(base[..., None].repeat(3, -1), better[..., None].repeat(3, -1), generator=rng)
    with pytest.raises(ValueError, match="scalar comparison"):
        expect.improvement(layered, metric="s", delta=0.0, alpha=0.05, baseline="adam", candidate="adamw")


def test_improvement_refuses_a_test_that_cannot_reach_alpha():
    """4 paired seeds: 16 sign flips, so p >= 1/16 = 0.0625 whatever the data; at alpha 0.05
    the old check could never pass and was inert; now it is refused with the numbers."""
    rng = np.random.default_rng(2)
    base = family(rng, [0.5], m=4)[..., 0]
    c = paired_difference(base, base + 0.05, generator=rng, alternative="greater")
    with pytest.raises(ValueError, match=r"4 paired seeds .* smallest attainable p-value is 0.0625 >= alpha "
                                         r"0.05.*5 seeds would reach it"):
        expect.improvement(c, metric="s", delta=0.01, alpha=0.05, baseline="adam", candidate="adamw")
    assert expect.improvement(c, metric="s", delta=0.01, alpha=0.1, baseline="adam", candidate="adamw").passed


# ----------------------------------------------------------------------------- family vs family


def two_families(shift: float, *, seeds_b=tuple(range(6)), noise: float = 0.002, layers=(0.8, 0.6),
                 higher: bool = True) -> tuple[Analysis, Analysis]:
    rng = np.random.default_rng(3)
    ref = family(rng, layers)
    if tuple(seeds_b) == tuple(range(6)):
        cand = ref + shift + rng.normal(0.0, noise, size=ref.shape)
    else:
        cand = family(rng, np.asarray(layers) + shift, m=len(seeds_b))
    mr = dataclasses.replace(pairwise_measurement("s", ref), higher_is_better=higher)
    mc = dataclasses.replace(pairwise_measurement("s", cand), higher_is_better=higher)
    a = Analysis(family="adam", fingerprint="fp", seeds=tuple(range(6)), device_class="cpu", probe_digest="d",
                 measurements={"s": mr})
    b = Analysis(family="adamw", fingerprint="fp", seeds=tuple(seeds_b), device_class="cpu", probe_digest="d",
                 measurements={"s": mc})
    return a, b


def test_non_inferior_on_one_sided_lower_bounds():
    a, b = two_families(-0.005)
    check = expect.non_inferior(a, b, metrics=["s"], margin=0.03, alpha=0.025)
    assert check.passed and "2 rows" in check.text
    worse_a, worse_b = two_families(-0.05)
    with pytest.raises(expect.ExpectationFailed, match="non-inferior") as e:
        expect.non_inferior(worse_a, worse_b, metrics=["s"], margin=0.03, alpha=0.025)
    text = str(e.value)
    for word in ("metric", "layer", "97.5% lower bound", "-margin", "paired", "NOT SHOWN", "-0.030"):
        assert word in text, word
    # lower is better: a candidate that rises is the worse one
    la, lb = two_families(+0.05, higher=False)
    with pytest.raises(expect.ExpectationFailed):
        expect.non_inferior(la, lb, metrics=["s"], margin=0.03, alpha=0.025)
    assert expect.non_inferior(*two_families(-0.05, higher=False), metrics=["s"], margin=0.03, alpha=0.025).passed
    # different seeds: Welch, and the bound is wider than the paired one
    ua, ub = two_families(0.0, seeds_b=range(10, 16))
    with pytest.raises(expect.ExpectationFailed, match="unpaired"):
        expect.non_inferior(ua, ub, metrics=["s"], margin=0.001, alpha=0.025)
    assert expect.non_inferior(ua, ub, metrics=["s"], margin=0.2, alpha=0.025).passed
    # per-metric margins and layer selection
    assert expect.non_inferior(worse_a, worse_b, metrics=["s"], margin={"s": 0.06}, alpha=0.025, layers=[1]).passed


def test_non_inferior_refuses_what_it_cannot_judge():
    a, b = two_families(0.0)
    small = dataclasses.replace(b, seeds=(0, 1))
    with pytest.raises(ValueError, match="at least 3"):
        expect.non_inferior(a, small, metrics=["s"], margin=0.03, alpha=0.025)
    with pytest.raises(ValueError, match="alpha"):
        expect.non_inferior(a, b, metrics=["s"], margin=0.03, alpha=0.5)
    with pytest.raises(ValueError, match="margin"):
        expect.non_inferior(a, b, metrics=["s"], margin={"t": 0.03}, alpha=0.025)
    anchor = dataclasses.replace(a["s"], baselinable=False, baseline_note="s is conditional on the anchor seed")
    fixed = dataclasses.replace(a, measurements={"s": anchor})
    with pytest.raises(ValueError, match="conditional on the anchor seed"):
        expect.non_inferior(fixed, b, metrics=["s"], margin=0.03, alpha=0.025)


def test_not_worse_uses_the_joint_max_t_p_values():
    from harness.analysis import compare_families
    from harness.stats import Underpowered

    ok_a, ok_b = two_families(+0.01)
    cmp = compare_families(ok_a, ok_b, metrics=["s"], alternative="worse", alpha=0.05)
    check = expect.not_worse(cmp, tolerance=0.03, alpha=0.05, reference="adam", candidate="adamw")
    assert check.passed and "max-T" in check.text
    bad_a, bad_b = two_families(-0.05)
    cmp = compare_families(bad_a, bad_b, metrics=["s"], alternative="worse", alpha=0.05)
    assert np.all(cmp["s"].p_value == pytest.approx(1 / 64))
    with pytest.raises(expect.ExpectationFailed, match=r"adamw is worse than adam .* in 2 of 2 rows") as e:
        expect.not_worse(cmp, tolerance=0.03, alpha=0.05, reference="adam", candidate="adamw")
    assert "WORSE" in str(e.value) and "p (max-T)" in str(e.value)
    # worse beyond the tolerance, but not significant: not a failure
    noisy_a, noisy_b = two_families(-0.04, noise=0.2)
    cmp = compare_families(noisy_a, noisy_b, metrics=["s"], alternative="worse")
    assert expect.not_worse(cmp, tolerance=0.03, alpha=0.05).passed
    # refused: two-sided, unadjusted over several rows, and too few seeds to reach alpha
    with pytest.raises(ValueError, match="one-sided"):
        expect.not_worse(compare_families(bad_a, bad_b, metrics=["s"]), tolerance=0.03, alpha=0.05)
    with pytest.raises(ValueError, match="adjust='max-t'"):
        expect.not_worse(compare_families(bad_a, bad_b, metrics=["s"], alternative="worse", adjust="none"),
                         tolerance=0.03, alpha=0.05)
    four = [dataclasses.replace(x, seeds=tuple(range(4)), measurements={"s": dataclasses.replace(
        x["s"], pairwise=x["s"].pairwise[:4, :4])}) for x in (bad_a, bad_b)]
    with pytest.raises(Underpowered):
        compare_families(*four, metrics=["s"], alternative="worse", alpha=0.05)
    with pytest.raises(ValueError, match="0.0625 >= alpha 0.05"):
        expect.not_worse(compare_families(*four, metrics=["s"], alternative="worse"), tolerance=0.03, alpha=0.05)


def test_unknown_metric_names_what_exists():
    with pytest.raises(KeyError, match="no measurement 'nope'; this analysis has: s"):
        expect.above(analysis(s=[0.5]), "nope", bound=0)


# ----------------------------------------------------------------------------- the suites' and example's logic


ROOT = Path(__file__).resolve().parents[1]


def load_module(relpath: str):
    spec = importlib.util.spec_from_file_location(relpath.replace("/", "_").removesuffix(".py"), ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeSeedstab:
    """The ``seedstab`` fixture's surface over given analyses (no training)."""

    def __init__(self, analyses: dict[str, Analysis]) -> None:
        self.analyses = analyses

    def suite(self, path):
        from harness.config import load_suite

        return load_suite(path)

    def analysis(self, path, name):
        return self.analyses[name]

    def compare(self, path, baseline, candidate, *, metrics, alternative="greater", adjust="max-t", alpha=None):
        from harness.analysis import compare_families

        return compare_families(self.analyses[baseline], self.analyses[candidate], metrics=metrics,
                                alternative=alternative, adjust=adjust, alpha=alpha, n_boot=10)


def stability_family(name: str, rng: np.random.Generator, means: dict[str, list[float]], *, m: int = 6,
                     base: dict[str, np.ndarray] | None = None, shift: float = 0.0) -> Analysis:
    pws = {k: (base[k] + shift + rng.normal(0.0, 0.002, size=base[k].shape)) if base else family(rng, v, m=m)
           for k, v in means.items()}
    return Analysis(family=name, fingerprint="fp", seeds=tuple(range(m)), device_class="cpu", probe_digest="d",
                    measurements={k: pairwise_measurement(k, pw) for k, pw in pws.items()})


def test_the_change_example_flags_a_worse_change_and_passes_a_neutral_one():
    example = load_module("examples/test_changes.py")
    rng = np.random.default_rng(7)
    means = {name: [0.8, 0.6] for name in example.METRICS}
    adam = stability_family("adam", rng, means)
    pw = {k: adam[k].pairwise for k in means}
    fams = {"adam": adam, "lion": stability_family("lion", rng, means, base=pw, shift=-0.05),
            "qk_norm": stability_family("qk_norm", rng, means, base=pw, shift=+0.01)}
    seedstab = FakeSeedstab(fams)
    example.test_change_does_not_destabilize_heads(seedstab, "qk_norm")
    with pytest.raises(expect.ExpectationFailed, match="lion is worse than adam"):
        example.test_change_does_not_destabilize_heads(seedstab, "lion")


def test_the_smoke_suite_checks_on_synthetic_families():
    smoke = load_module("suites/smoke/test_smoke.py")
    rng = np.random.default_rng(8)
    raw, cs, cka = "head_stability.all_anchors", "content_specific.all_anchors", "head_cka.debiased"
    adam = stability_family("adam", rng, {raw: [0.875, 0.827], cs: [0.04, 0.58]})
    adamw = stability_family("adamw", rng, {raw: [0.875, 0.83], cs: [0.04, 0.57]},
                             base={raw: adam[raw].pairwise, cs: adam[cs].pairwise}, shift=-0.005)
    l4 = stability_family("adam_l4", rng, {raw: [0.84, 0.71, 0.50, 0.65], cka: [0.57, 0.42, 0.35, 0.81]}, m=5)
    seedstab = FakeSeedstab({"adam": adam, "adamw": adamw, "adam_l4": l4})
    smoke.test_depth_spread_grows_with_depth(seedstab)
    smoke.test_middle_layers_are_least_stable(seedstab)
    smoke.test_adamw_does_not_destabilize_heads(seedstab)
    worse = stability_family("adamw", rng, {raw: [0.8, 0.8], cs: [0.0, 0.5]},
                             base={raw: adam[raw].pairwise, cs: adam[cs].pairwise}, shift=-0.05)
    with pytest.raises(expect.ExpectationFailed, match="non-inferior"):
        smoke.test_adamw_does_not_destabilize_heads(FakeSeedstab({"adam": adam, "adamw": worse}))
