"""Multiple-comparison control: Holm, the joint max-T tests against brute force and their
family-wise error, and the smallest attainable p-values."""

from __future__ import annotations

import numpy as np
import pytest

from harness.stats import (holm, paired_difference, paired_difference_per_seed,
                           permutation_difference, seed_pseudovalues)
from stats_simulation import simulated_family


# ----------------------------------------------------------------------------- holm


def test_holm_hand_example() -> None:
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm(np.array([[0.01], [0.02]])), [[0.02], [0.02]])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        holm([0.1, 1.2])
    with pytest.raises(ValueError, match="empty"):
        holm([])


# ----------------------------------------------------------------------------- power and joint tests


def test_min_attainable_p_and_seeds_needed() -> None:
    from harness.stats import EXACT_LIMIT, min_attainable_p, seeds_needed

    assert min_attainable_p(6, 6, paired=True) == pytest.approx(1 / 64)
    assert min_attainable_p(4, 4, paired=True) == pytest.approx(1 / 16)
    assert min_attainable_p(6, 6, paired=True, alternative="two-sided") == pytest.approx(2 / 64)
    assert min_attainable_p(3, 3, paired=False) == pytest.approx(1 / 20)
    assert min_attainable_p(3, 3, paired=False, alternative="two-sided") == pytest.approx(2 / 20)
    assert min_attainable_p(3, 4, paired=False, alternative="two-sided") == pytest.approx(1 / 35)
    assert 2 ** 13 > EXACT_LIMIT and min_attainable_p(13, 13, paired=True, n_perm=999) == pytest.approx(1 / 1000)
    assert seeds_needed(4, paired=True, alpha=0.05) == 5  # 1/32 < 0.05 <= 1/16
    assert seeds_needed(4, paired=True, alpha=0.05, alternative="two-sided") == 6  # 2/64 < 0.05
    assert seeds_needed(3, paired=False, alpha=0.05) == 4  # 1/20 is not below 0.05, 1/35 is
    with pytest.raises(ValueError, match="raise n_perm"):
        seeds_needed(4, paired=True, alpha=1e-4, n_perm=999)
    with pytest.raises(ValueError, match="same seeds"):
        min_attainable_p(4, 5, paired=True)


def test_comparison_knows_its_smallest_attainable_p() -> None:
    rng = np.random.default_rng(40)
    a = simulated_family(rng, 6, shape=(2,))
    b = a + 0.01
    one = paired_difference(a, b, generator=rng, alternative="greater")
    assert one.min_p == pytest.approx(1 / 64) and one.adjustment == "none"
    assert paired_difference(a, b, generator=rng).min_p == pytest.approx(2 / 64)
    joint = paired_difference(a, b, generator=rng, alternative="greater", max_statistic=True)
    assert joint.adjustment == "max-t" and joint.n_rows == 2 and joint.min_p == pytest.approx(1 / 64)
    import dataclasses

    assert dataclasses.replace(one, adjustment="holm").min_p == pytest.approx(2 / 64)  # x 2 layers
    un = permutation_difference(np.zeros(3), np.ones(4), generator=rng, alternative="greater")
    assert not un.paired and un.min_p == pytest.approx(1 / 35)


def _two_metric_family(rng: np.random.Generator, m: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Paired seed-level units [M, 4] of two families: 2 metrics x 2 layers, rows correlated."""
    shared = rng.normal(size=(m, 1))
    a = 0.5 * shared + rng.normal(size=(m, 4))
    b = a + shift + 0.3 * rng.normal(size=(m, 4))
    return a, b


def test_joint_max_t_reaches_one_over_2_to_the_m_where_holm_cannot() -> None:
    """6 paired seeds, 2 metrics x 2 layers, every seed better in every row: the joint max-T
    p-value is 1/64 for the strongest row and below 0.05 for all; Holm across each metric's
    two layers gives at best 2/64, above the alpha/2 = 0.025 a per-metric split leaves."""
    from harness.stats import joint_paired

    rng = np.random.default_rng(41)
    a, b = _two_metric_family(rng, 6, shift=0.0)
    b = a + np.abs(rng.normal(0.5, 0.05, size=a.shape))  # every difference positive
    joint = joint_paired(a, b, alternative="greater", generator=rng)
    assert joint.exact and joint.n_perm == 64 and joint.n_rows == 4
    assert joint.p_value.min() == pytest.approx(1 / 64)
    assert np.all(joint.p_value < 0.05)
    for cols in ((0, 1), (2, 3)):
        per_metric = paired_difference_per_seed(a[:, cols], b[:, cols], generator=rng, alternative="greater")
        assert holm(per_metric.p_value).min() == pytest.approx(2 / 64)
        assert holm(per_metric.p_value).min() >= 0.05 / 2


def test_joint_tests_against_brute_force() -> None:
    """Max-T over rows by a slow loop over every sign pattern / label split (unpaired: Welch's
    t recomputed for every split)."""
    import itertools

    from harness.stats import joint_paired, joint_unpaired

    rng = np.random.default_rng(42)
    a, b = rng.normal(size=(5, 3)), rng.normal(0.4, 1.0, size=(5, 3))
    orient = np.array([1.0, -1.0, 1.0])
    d = (b - a) * orient
    scale = np.sqrt((d ** 2).sum(axis=0))
    obs = d.mean(axis=0) / scale
    mx = [max((np.array(s)[:, None] * d).mean(axis=0) / scale) for s in itertools.product([1, -1], repeat=5)]
    want = [np.mean([x >= o - 1e-12 for x in mx]) for o in obs]
    got = joint_paired(a, b, orientation=orient, generator=rng)
    np.testing.assert_allclose(got.p_value, want, atol=1e-12)

    ua, ub = rng.normal(size=(3, 2)), rng.normal(0.5, 1.0, size=(4, 2))
    pooled = np.concatenate([ua, ub])

    def welch(x_b: np.ndarray, x_a: np.ndarray) -> np.ndarray:  # per row, the obvious way
        return np.array([(x_b[:, j].mean() - x_a[:, j].mean())
                         / np.sqrt(x_b[:, j].var(ddof=1) / len(x_b) + x_a[:, j].var(ddof=1) / len(x_a))
                         for j in range(x_b.shape[1])])

    obs = np.abs(welch(ub, ua))
    mx = []
    for idx in itertools.combinations(range(7), 4):
        mask = np.zeros(7, dtype=bool)
        mask[list(idx)] = True
        mx.append(max(np.abs(welch(pooled[mask], pooled[~mask]))))
    want = [np.mean([x >= o - 1e-12 for x in mx]) for o in obs]
    got = joint_unpaired(ua, ub, alternative="two-sided", generator=rng)
    assert got.exact and got.n_perm == 35
    np.testing.assert_allclose(got.p_value, want, atol=1e-12)
    with pytest.raises(ValueError, match="orientation"):
        joint_paired(a, b, orientation=[1.0, 0.5, 1.0], generator=rng)
    with pytest.raises(ValueError, match=r"\[M, R\]"):
        joint_paired(a[:, 0], b[:, 0], generator=rng)


def test_joint_tests_keep_the_family_wise_error_at_alpha() -> None:
    """400 simulated null families (pairwise metrics with seed effects, reduced to jackknife
    pseudo-values, 2 metrics x 2 layers side by side): the share with any row rejected at
    0.05 stays within a binomial tolerance of alpha, paired (8 seeds) and unpaired (6 + 6)."""
    from harness.stats import joint_paired, joint_unpaired

    rng = np.random.default_rng(43)
    n_fam, alpha = 400, 0.05
    hits_paired = hits_unpaired = 0
    for _ in range(n_fam):
        shared = simulated_family(rng, 8, shape=(4,))
        a = seed_pseudovalues(shared + simulated_family(rng, 8, mu=0.0, seed_sd=0.03, shape=(4,)))
        b = seed_pseudovalues(shared + simulated_family(rng, 8, mu=0.0, seed_sd=0.03, shape=(4,)))
        hits_paired += joint_paired(a, b, generator=rng, alternative="less").p_value.min() <= alpha
        ua = seed_pseudovalues(simulated_family(rng, 6, shape=(4,)))
        ub = seed_pseudovalues(simulated_family(rng, 6, shape=(4,)))
        hits_unpaired += joint_unpaired(ua, ub, generator=rng).p_value.min() <= alpha
    tol = 2.5 * np.sqrt(alpha * (1 - alpha) / n_fam)  # ~0.027
    assert hits_paired / n_fam <= alpha + tol, hits_paired / n_fam
    assert hits_unpaired / n_fam <= alpha + tol, hits_unpaired / n_fam
    assert hits_paired + hits_unpaired > 0  # not vacuous: the test does reject sometimes


def test_joint_unpaired_is_studentised_against_unequal_spreads() -> None:
    """Equal means, a tight reference and a noisy candidate of the same size: the studentised
    permutation statistic stays near its level. (A permuted raw difference in means rejected
    about 0.2 of the time with 20 vs 5 seeds; Welch's t still about 0.13 there, measured: keep
    families of similar size.)"""
    from harness.stats import joint_unpaired

    rng = np.random.default_rng(3)
    n, hits = 300, 0
    for _ in range(n):
        ref = rng.normal(0.0, 0.01, size=(6, 1))
        cand = rng.normal(0.0, 0.1, size=(6, 1))
        hits += joint_unpaired(ref, cand, alternative="less", n_perm=999, generator=rng).p_value[0] < 0.05
    assert hits / n < 0.09, hits  # binomial tolerance around 0.05
