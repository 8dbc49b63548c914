"""Sign-flip and label-permutation tests: exact hand examples, Monte-Carlo patterns,
calibration and power on simulated families, and the paired CI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.stats import (
    Comparison,
    family_mean,
    paired_difference,
    paired_difference_per_seed,
    permutation_difference,
    seed_contributions,
    seed_pseudovalues,
)
from stats_simulation import _three_seed_family, simulated_family


# ----------------------------------------------------------------------------- paired


def test_sign_flip_exact_hand_example() -> None:
    zeros = _three_seed_family(0.0, 0.0, 0.0)
    g = np.random.default_rng(0)
    # pseudo-values (1, 2, 3): sums over the 8 sign flips are 6 4 2 0 0 -2 -4 -6
    b = _three_seed_family(1.5, 2.0, 2.5)
    c = paired_difference(zeros, b, generator=g, alternative="greater", n_boot=10)
    assert c.delta == pytest.approx(2.0) and c.exact and c.n_perm == 8
    assert c.p_value == pytest.approx(1 / 8)
    assert paired_difference(zeros, b, generator=g, n_boot=10).p_value == pytest.approx(2 / 8)
    assert paired_difference(zeros, b, generator=g, alternative="less",
                             n_boot=10).p_value == pytest.approx(1.0)
    assert paired_difference(b, zeros, generator=g, alternative="less",
                             n_boot=10).p_value == pytest.approx(1 / 8)
    # pseudo-values (1, 2, -3): sums 0 -2 -4 -6 6 4 2 0; ties with the observed 0 count
    b2 = _three_seed_family(1.5, -1.0, -0.5)
    assert paired_difference(zeros, b2, generator=g, alternative="greater",
                             n_boot=10).p_value == pytest.approx(5 / 8)


def test_sign_flip_monte_carlo_above_limit() -> None:
    rng = np.random.default_rng(5)
    a = simulated_family(rng, 13)
    b = a + 0.05 + simulated_family(rng, 13, mu=0.0, seed_sd=0.01)
    c = paired_difference(a, b, generator=rng, n_perm=999, alternative="greater", n_boot=100)
    assert not c.exact and c.n_perm == 999
    assert c.p_value == pytest.approx(1 / 1000)  # never 0 for Monte-Carlo
    assert c.lo > 0


def test_paired_test_calibration_and_power() -> None:
    rng = np.random.default_rng(6)
    n_rep, m = 300, 8
    rej_null = rej_shift = 0
    for _ in range(n_rep):
        shared = simulated_family(rng, m)  # seed k pairs: same init in both families
        a = shared + simulated_family(rng, m, mu=0.0, seed_sd=0.03)
        b = shared + simulated_family(rng, m, mu=0.0, seed_sd=0.03)
        rej_null += paired_difference(a, b, n_boot=1, generator=rng).p_value <= 0.05
        rej_shift += paired_difference(a, b + 0.12, n_boot=1, generator=rng,
                                       alternative="greater").p_value <= 0.05
    assert 0.01 <= rej_null / n_rep <= 0.10, rej_null / n_rep
    assert rej_shift / n_rep >= 0.85, rej_shift / n_rep


def test_paired_vector_and_max_statistic() -> None:
    rng = np.random.default_rng(7)
    a = simulated_family(rng, 8, shape=(5,))  # (M, M, L)
    b = a + simulated_family(rng, 8, mu=0.0, seed_sd=0.03, shape=(5,))
    b[:, :, 2] += 0.2  # one layer really differs
    raw = paired_difference(a, b, n_boot=200, generator=np.random.default_rng(0))
    adj = paired_difference(a, b, n_boot=200, generator=np.random.default_rng(0),
                            max_statistic=True)
    assert raw.delta.shape == (5,) and raw.p_value.shape == (5,)
    np.testing.assert_allclose(raw.delta, family_mean(b) - family_mean(a), atol=1e-14)
    assert np.all(adj.p_value >= raw.p_value - 1e-15)
    assert adj.p_value[2] <= 0.01 and "max-T" in adj.method
    assert np.any(adj.p_value > raw.p_value)
    json.dumps(adj.to_dict())


def test_paired_per_seed_against_exact_enumeration() -> None:
    """Sign-flip on per-seed differences, checked against a slow loop over all 2^M flips."""
    import itertools

    rng = np.random.default_rng(11)
    a = rng.normal(size=(6, 3))
    b = a + rng.normal(0.3, 0.5, size=(6, 3))
    c = paired_difference_per_seed(a, b, n_boot=300, generator=np.random.default_rng(0),
                                   alternative="greater")
    d = b - a
    np.testing.assert_allclose(c.delta, d.mean(axis=0), atol=1e-14)
    flips = [np.mean(np.array(s)[:, None] * d, axis=0) for s in itertools.product([1, -1], repeat=6)]
    ref = np.mean([f >= d.mean(axis=0) - 1e-12 for f in flips], axis=0)
    np.testing.assert_allclose(c.p_value, ref, atol=1e-12)
    assert c.exact and c.n_perm == 64 and "per-seed differences" in c.method
    assert np.all(c.lo <= c.delta) and np.all(c.delta <= c.hi)
    # a shared seed effect cancels: pairing sees a small shift that unpaired tests miss
    shared = rng.normal(0.0, 1.0, size=8)
    pa, pb = shared, shared + 0.2 + rng.normal(0.0, 0.02, size=8)
    assert paired_difference_per_seed(pa, pb, n_boot=10, generator=rng,
                                      alternative="greater").p_value == pytest.approx(1 / 256)
    assert permutation_difference(pa, pb, n_boot=10, generator=rng,
                                  alternative="greater").p_value > 0.2
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference_per_seed(a, b[:5], generator=rng)
    with pytest.raises(ValueError, match="NaN"):
        paired_difference_per_seed(a, np.full_like(a, np.nan), generator=rng)


# ----------------------------------------------------------------------------- unpaired


def test_permutation_exact_hand_example() -> None:
    g = np.random.default_rng(0)
    # splits of {0, 1, 2, 3} into b (2 values): mean differences 2 1 0 0 -1 -2
    c = permutation_difference(np.array([0.0, 1.0]), np.array([2.0, 3.0]), generator=g,
                               alternative="greater", n_boot=10)
    assert isinstance(c, Comparison)
    assert c.delta == pytest.approx(2.0) and c.exact and c.n_perm == 6
    assert c.p_value == pytest.approx(1 / 6)
    c2 = permutation_difference(np.array([0.0, 1.0]), np.array([2.0, 3.0]), generator=g,
                                n_boot=10)
    assert c2.p_value == pytest.approx(2 / 6) and c2.n_seeds == (2, 2)


def test_permutation_calibration_and_power() -> None:
    rng = np.random.default_rng(8)
    n_rep = 300
    rej_null = rej_shift = 0
    for _ in range(n_rep):
        va, vb = rng.normal(size=8), rng.normal(size=8)
        rej_null += permutation_difference(va, vb, n_boot=1, n_perm=499,
                                           generator=rng).p_value <= 0.05
        rej_shift += permutation_difference(va, vb + 2.0, n_boot=1, n_perm=499,
                                            generator=rng).p_value <= 0.05
    assert 0.015 <= rej_null / n_rep <= 0.095, rej_null / n_rep
    assert rej_shift / n_rep >= 0.85, rej_shift / n_rep


def test_permutation_pairwise_input() -> None:
    rng = np.random.default_rng(9)
    a, b = simulated_family(rng, 6), simulated_family(rng, 7, mu=0.8)
    c = permutation_difference(a, b, pairwise=True, n_boot=300, generator=rng)
    assert c.delta == pytest.approx(float(family_mean(b) - family_mean(a)), abs=1e-14)
    assert c.lo < c.delta < c.hi and c.n_seeds == (6, 7) and "Welch t CI" in c.method
    boot = permutation_difference(a, b, pairwise=True, n_boot=300, generator=rng, ci_method="multi-bootstrap")
    assert boot.lo < boot.delta < boot.hi and "multi-bootstrap" in boot.method
    c2 = permutation_difference(seed_pseudovalues(a), seed_pseudovalues(b), n_boot=10,
                                generator=np.random.default_rng(1))
    assert c2.delta == pytest.approx(c.delta, abs=1e-14)
    assert c2.p_value == pytest.approx(c.p_value)  # exact: C(13, 7) = 1716 splits
    # the CI is Welch's interval over the pseudo-values (scipy as the reference)
    from scipy.stats import ttest_ind

    ref = ttest_ind(seed_pseudovalues(b), seed_pseudovalues(a), equal_var=False).confidence_interval(0.95)
    assert (c.lo, c.hi) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    with pytest.raises(ValueError, match="ci_method"):
        permutation_difference(a, b, pairwise=True, generator=rng, ci_method="bca")


def test_pairwise_tests_are_calibrated_where_row_means_are_not() -> None:
    # Two families from one distribution; pairwise metric with seed effects. Permuting row
    # means rejects far too often (their shared seeds correlate them); pseudo-values do not.
    rng = np.random.default_rng(12)
    n_rep, m = 200, 8
    rej = rej_rows = 0
    for _ in range(n_rep):
        a, b = simulated_family(rng, m), simulated_family(rng, m)
        rej += permutation_difference(a, b, pairwise=True, n_boot=1, n_perm=299,
                                      generator=rng).p_value <= 0.05
        rej_rows += permutation_difference(seed_contributions(a), seed_contributions(b),
                                           n_boot=1, n_perm=299,
                                           generator=rng).p_value <= 0.05
    assert 0.01 <= rej / n_rep <= 0.10, rej / n_rep
    assert rej_rows / n_rep > 0.2, rej_rows / n_rep


def test_paired_ci_is_a_t_interval_over_the_test_units() -> None:
    """The default paired CI is the one-sample t interval of the same units the sign-flip test
    uses (pseudo-values of b - a; per-seed differences), scipy as the reference."""
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(21)
    a = simulated_family(rng, 7)
    b = a + simulated_family(rng, 7, mu=0.03, seed_sd=0.02)
    c = paired_difference(a, b, generator=rng)
    ref = ttest_1samp(seed_pseudovalues(b - np.nan_to_num(a)), 0.0).confidence_interval(0.95)
    assert (c.lo, c.hi) == (pytest.approx(ref.low, abs=1e-12), pytest.approx(ref.high, abs=1e-12))
    assert c.n_boot == 0 and "jackknife-t" in c.method
    va, vb = rng.normal(size=8), rng.normal(0.5, 1.0, size=8)
    c2 = paired_difference_per_seed(va, vb, generator=rng)
    ref2 = ttest_1samp(vb - va, 0.0).confidence_interval(0.95)
    assert (c2.lo, c2.hi) == (pytest.approx(ref2.low, abs=1e-12), pytest.approx(ref2.high, abs=1e-12))
    boot = paired_difference(a, b, generator=rng, n_boot=200, ci_method="multi-bootstrap")
    assert boot.n_boot == 200 and "multi-bootstrap" in boot.method
