"""Head-stability and circuit metrics against slow reference loops written from the
definitions in the README ("The metrics") and the metric docstrings, plus their invariances and error paths."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from harness.metrics import circuits as cm
from harness.metrics import heads as hm
from harness.metrics import pattern_gram as pg

TOL = 1e-6


# --------------------------------------------------------------------------- helpers


def random_patterns(
    seed: int, M: int = 3, L: int = 2, P: int = 3, H: int = 3, T: int = 5, scale: float = 2.0
) -> torch.Tensor:
    """Causal softmax patterns [M, L, P, H, T, T], float32."""
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(M, L, P, H, T, T, generator=g)  # [M, L, P, H, T, T]
    causal = torch.ones(T, T, dtype=torch.bool).tril()  # [T, T]
    return torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)


def uniform_patterns(M: int = 2, L: int = 2, P: int = 2, H: int = 2, T: int = 6) -> torch.Tensor:
    q = torch.arange(T, dtype=torch.float32)
    u = torch.ones(T, T).tril() / (q + 1)[:, None]  # [T, T]
    return u.expand(M, L, P, H, T, T).clone()


def ref_vector(A: np.ndarray, exclude_first: bool = True) -> np.ndarray:
    """v(A): lower triangle incl. diagonal, row by row, unit length."""
    T = A.shape[0]
    vals = [A[q, k] for q in range(1 if exclude_first else 0, T) for k in range(q + 1)]
    v = np.array(vals, dtype=np.float64)
    n = math.sqrt(sum(x * x for x in vals))
    return v / n if n > 0 else v


def ref_cos(A: np.ndarray, B: np.ndarray, exclude_first: bool = True) -> float:
    return float(np.dot(ref_vector(A, exclude_first), ref_vector(B, exclude_first)))


def ref_similarity(pat: np.ndarray, shift: int = 0, exclude_first: bool = True) -> np.ndarray:
    M, L, P, H, T, _ = pat.shape
    C = np.zeros((L, M, H, M, H))
    for l, a, h, m, g in itertools.product(range(L), range(M), range(H), range(M), range(H)):
        C[l, a, h, m, g] = np.mean(
            [ref_cos(pat[a, l, p, h], pat[m, l, (p + shift) % P, g], exclude_first)
             for p in range(P)]
        )
    return C


def ref_greedy(C: np.ndarray) -> np.ndarray:
    L, M, H = C.shape[:3]
    out = np.full((M, M, L, H), np.nan)
    for a, m, l, h in itertools.product(range(M), range(M), range(L), range(H)):
        if a != m:
            out[a, m, l, h] = max(C[l, a, h, m, g] for g in range(H))
    return out


def ref_hungarian(C: np.ndarray) -> np.ndarray:
    """One-to-one matching by brute force over all permutations (independent of scipy)."""
    L, M, H = C.shape[:3]
    out = np.full((M, M, L, H), np.nan)
    for a, m, l in itertools.product(range(M), range(M), range(L)):
        if a == m:
            continue
        best = max(itertools.permutations(range(H)),
                   key=lambda perm: sum(C[l, a, h, m, perm[h]] for h in range(H)))
        for h in range(H):
            out[a, m, l, h] = C[l, a, h, m, best[h]]
    return out


# --------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("exclude_first", [True, False])
def test_pattern_vectors_match_reference(exclude_first: bool) -> None:
    pat = random_patterns(0, M=2, L=1, P=2, H=2, T=5)
    v = hm.pattern_vectors(pat, exclude_first=exclude_first).numpy()
    T = 5
    assert v.shape == (2, 1, 2, 2, T * (T + 1) // 2 - (1 if exclude_first else 0))
    for idx in itertools.product(range(2), range(1), range(2), range(2)):
        ref = ref_vector(pat[idx].double().numpy(), exclude_first)
        np.testing.assert_allclose(v[idx], ref, atol=TOL)


def test_pattern_vectors_zero_stays_zero_and_upper_triangle_ignored() -> None:
    A = torch.zeros(4, 4)
    A[0, 3] = 5.0  # upper triangle only: not part of v
    v = hm.pattern_vectors(A)
    assert torch.all(v == 0) and torch.isfinite(v).all()
    B = torch.rand(4, 4).tril()
    assert torch.allclose(hm.pattern_vectors(B + A), hm.pattern_vectors(B))


def test_pattern_vectors_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="square"):
        hm.pattern_vectors(torch.rand(3, 4))
    with pytest.raises(ValueError, match="T >= 2"):
        hm.pattern_vectors(torch.rand(1, 1))


# --------------------------------------------------------------------------- similarity


@pytest.mark.parametrize("shift", [0, 1, 2])
@pytest.mark.parametrize("chunk_elements", [None, 1, 1080])
def test_similarity_matches_reference(shift: int, chunk_elements, monkeypatch) -> None:
    pat = random_patterns(1, M=3, L=2, P=3, H=3, T=5)
    if chunk_elements:  # 1 or 2 prompts per chunk (540 elements per prompt here): the
        # chunk loop and the shifted gather, wrapping or not, agree with the reference
        monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", chunk_elements)
    C = hm.similarity(pat, prompt_shift=shift)
    assert C.dtype == torch.float64 and C.shape == (2, 3, 3, 3, 3)
    np.testing.assert_allclose(C.numpy(), ref_similarity(pat.double().numpy(), shift), atol=TOL)


def test_similarity_of_an_all_zero_pattern_is_zero_not_nan() -> None:
    pat = random_patterns(25, M=2, L=1, P=2, H=2, T=4)
    pat[1, :, :, 0] = 0.0  # e.g. a head whose capture was masked out
    C = hm.similarity(pat).numpy()
    assert np.isfinite(C).all()
    np.testing.assert_array_equal(C[0, 1, 0], 0.0)
    np.testing.assert_array_equal(C[0, :, :, 1, 0], 0.0)
    np.testing.assert_allclose(C, ref_similarity(pat.double().numpy()), atol=TOL)


def test_similarity_exclude_first_false_matches_reference() -> None:
    pat = random_patterns(2, M=2, L=1, P=2, H=2, T=4)
    C = hm.similarity(pat, exclude_first=False)
    ref = ref_similarity(pat.double().numpy(), 0, exclude_first=False)
    np.testing.assert_allclose(C.numpy(), ref, atol=TOL)
    # row 0 is identical in every causal pattern, so including it raises similarity
    assert (C.numpy() >= hm.similarity(pat).numpy() - TOL).all()


def test_similarity_symmetric_and_null_shift_zero_is_raw() -> None:
    pat = random_patterns(3, P=4)
    C = hm.similarity(pat).numpy()
    np.testing.assert_allclose(C, C.transpose(0, 3, 4, 1, 2), atol=1e-12)
    null = hm.similarity(pat, prompt_shift=0).numpy()
    np.testing.assert_array_equal(null, C)
    shifted = hm.similarity(pat, prompt_shift=1).numpy()
    assert np.abs(shifted - C).max() > 1e-3  # a real null differs from the raw value
    np.testing.assert_allclose(hm.similarity(pat, prompt_shift=5).numpy(), shifted, atol=1e-12)
    np.testing.assert_allclose(hm.similarity(pat, prompt_shift=-3).numpy(), shifted, atol=1e-12)


def test_cross_layer_similarity_matches_reference_and_same_layer_blocks() -> None:
    pat = random_patterns(4, M=2, L=3, P=2, H=2, T=4)
    for shift in (0, 1):
        X = hm.cross_layer_similarity(pat, prompt_shift=shift).numpy()
        p = pat.double().numpy()
        M, L, P, H = p.shape[:4]
        for a, l, h, m, k, g in itertools.product(*(range(n) for n in (M, L, H, M, L, H))):
            ref = np.mean([ref_cos(p[a, l, q, h], p[m, k, (q + shift) % P, g]) for q in range(P)])
            assert abs(X[a, l, h, m, k, g] - ref) < TOL
        C = hm.similarity(pat, prompt_shift=shift).numpy()
        for l in range(L):
            np.testing.assert_allclose(X[:, l, :, :, l, :], C[l], atol=1e-12)


# --------------------------------------------------------------------------- stability


@pytest.mark.parametrize("method", ["anchor", "all_anchors", "hungarian"])
def test_head_stability_matches_reference(method: str) -> None:
    pat = random_patterns(5, M=3, L=3, P=2, H=4, T=5)
    C = hm.similarity(pat)
    s = hm.head_stability(C, method=method)
    Cn = C.numpy()
    pairwise = ref_hungarian(Cn) if method == "hungarian" else ref_greedy(Cn)
    np.testing.assert_allclose(s.pairwise, pairwise, atol=TOL)
    M, L, H = 3, 3, 4
    if method == "anchor":
        ref_head = np.array([[np.mean([pairwise[0, m, l, h] for m in (1, 2)])
                              for h in range(H)] for l in range(L)])
    else:
        ref_head = np.array([[np.mean([pairwise[a, m, l, h] for a in range(M)
                                       for m in range(M) if a != m])
                              for h in range(H)] for l in range(L)])
    np.testing.assert_allclose(s.per_head, ref_head, atol=TOL)
    ref_layer = [float(np.mean(ref_head[l])) for l in range(L)]
    np.testing.assert_allclose(s.per_layer, ref_layer, atol=TOL)
    assert s.spread == pytest.approx(max(ref_layer) - min(ref_layer), abs=TOL)
    assert s.min_layer == int(np.argmin(ref_layer))
    assert s.min_rel_depth == pytest.approx(s.min_layer / (L - 1))
    # the match indices point at the values reported
    for a, m, l, h in itertools.product(range(M), range(M), range(L), range(H)):
        if a == m:
            assert s.match[a, m, l, h] == -1 and np.isnan(s.pairwise[a, m, l, h])
        else:
            assert s.pairwise[a, m, l, h] == Cn[l, a, h, m, s.match[a, m, l, h]]
    if method == "hungarian":  # one-to-one
        off = ~np.eye(M, dtype=bool)
        assert all(sorted(row) == list(range(H)) for row in s.match[off].reshape(-1, H))


def test_head_stability_anchor_seed_option() -> None:
    C = hm.similarity(random_patterns(6, M=3))
    s = hm.head_stability(C, method="anchor", anchor_seed=2)
    np.testing.assert_allclose(s.per_head, s.pairwise[2, [0, 1]].mean(axis=0), atol=1e-12)


@pytest.mark.parametrize("method", ["anchor", "all_anchors", "hungarian"])
def test_identical_seeds_have_stability_one(method: str) -> None:
    one = random_patterns(7, M=1, L=3, P=3, H=4, T=6)
    family = one.expand(4, *one.shape[1:]).clone()  # [4, L, P, H, T, T]
    s = hm.head_stability(hm.similarity(family), method=method)
    np.testing.assert_allclose(s.per_head, 1.0, atol=TOL)
    assert s.spread == pytest.approx(0.0, abs=TOL)
    cl = hm.cross_layer_stability(family)
    np.testing.assert_allclose(cl.per_head, 1.0, atol=TOL)


@pytest.mark.parametrize("method", ["anchor", "all_anchors", "hungarian"])
@pytest.mark.parametrize("seed_to_permute", [0, 2])
def test_permuting_heads_of_one_seed_changes_no_stability(
    method: str, seed_to_permute: int
) -> None:
    pat = random_patterns(8, M=3, L=2, P=3, H=4, T=5)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = pat.clone()
    permuted[seed_to_permute] = pat[seed_to_permute][:, :, perm]  # heads axis of that seed
    s0 = hm.head_stability(hm.similarity(pat), method=method)
    s1 = hm.head_stability(hm.similarity(permuted), method=method)
    np.testing.assert_allclose(s1.per_layer, s0.per_layer, atol=TOL)
    k = seed_to_permute
    others = [a for a in range(3) if a != k]
    # other seeds' heads find the same best values in the permuted seed
    np.testing.assert_allclose(s1.pairwise[others][:, k], s0.pairwise[others][:, k], atol=TOL)
    # the permuted seed's own heads are relabelled: new head i is old head perm[i]
    np.testing.assert_allclose(s1.pairwise[k][others], s0.pairwise[k][others][..., perm], atol=TOL)
    if method == "anchor" and k != 0:
        np.testing.assert_allclose(s1.per_head, s0.per_head, atol=TOL)


def test_hungarian_never_above_greedy_and_can_be_below() -> None:
    pat = random_patterns(9, M=3, L=2, P=3, H=4, T=5)
    C = hm.similarity(pat)
    greedy = hm.head_stability(C, method="all_anchors")
    hung = hm.head_stability(C, method="hungarian")
    off = ~np.eye(3, dtype=bool)
    assert (hung.pairwise[off] <= greedy.pairwise[off] + 1e-12).all()
    # two heads of seed 0 collapse onto one pattern of seed 1: greedy scores both 1,
    # one-to-one matching cannot
    dup = pat.clone()
    dup[0, :, :, 1] = pat[1, :, :, 0]
    dup[0, :, :, 2] = pat[1, :, :, 0]
    C = hm.similarity(dup)
    g = hm.head_stability(C, method="all_anchors").pairwise[0, 1]
    h = hm.head_stability(C, method="hungarian").pairwise[0, 1]
    np.testing.assert_allclose(g[:, [1, 2]], 1.0, atol=TOL)
    assert (h[:, [1, 2]].min(axis=1) < 1 - 1e-3).all()


def test_single_layer_rel_depth_is_zero() -> None:
    s = hm.head_stability(hm.similarity(random_patterns(10, L=1)), method="all_anchors")
    assert s.min_layer == 0 and s.min_rel_depth == 0.0 and s.spread == 0.0


def test_cross_layer_stability_matches_reference() -> None:
    pat = random_patterns(11, M=3, L=3, P=2, H=2, T=5)
    X = hm.cross_layer_similarity(pat).numpy()  # checked against loops above
    cl = hm.cross_layer_stability(pat)
    M, L, H = 3, 3, 2
    same = []
    for a, m, l, h in itertools.product(range(M), range(M), range(L), range(H)):
        if a == m:
            assert np.isnan(cl.pairwise[a, m, l, h]) and cl.best_layer[a, m, l, h] == -1
            continue
        cands = [(X[a, l, h, m, k, g], k, g) for k in range(L) for g in range(H)]
        best = max(c[0] for c in cands)
        k, g = next((k, g) for v, k, g in cands if v == best)  # first = lowest (layer, head)
        assert abs(cl.pairwise[a, m, l, h] - best) < TOL
        assert (cl.best_layer[a, m, l, h], cl.best_head[a, m, l, h]) == (k, g)
        same.append(k == l)
    assert cl.same_layer_fraction == pytest.approx(np.mean(same))
    greedy = hm.head_stability(hm.similarity(pat), method="all_anchors")
    off = ~np.eye(M, dtype=bool)
    # two float32-product paths: equal best matches agree to ~1e-7, not bitwise
    assert (cl.pairwise[off] >= greedy.pairwise[off] - TOL).all()
    np.testing.assert_allclose(cl.per_layer, cl.pairwise[off].mean(axis=(0, 2)), atol=1e-12)


def test_cross_layer_finds_a_head_moved_to_another_layer() -> None:
    pat = random_patterns(12, M=2, L=3, P=3, H=2, T=6, scale=4.0)
    moved = pat.clone()
    moved[1] = pat[0][[2, 0, 1]]  # seed 1 = seed 0 with its layers rotated
    cl = hm.cross_layer_stability(moved)
    np.testing.assert_allclose(cl.pairwise[0, 1], 1.0, atol=TOL)
    np.testing.assert_array_equal(cl.best_layer[0, 1], [[1, 1], [2, 2], [0, 0]])
    assert cl.same_layer_fraction == 0.0
    null = hm.cross_layer_stability(moved, prompt_shift=1)
    assert (null.pairwise[0, 1] < 1 - 1e-3).all()


# --------------------------------------------------------------------------- distinctness


@pytest.mark.parametrize("include_self", [True, False])
def test_distinctness_matches_reference(include_self: bool, monkeypatch) -> None:
    monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", 1)
    pat = random_patterns(13, M=2, L=2, P=3, H=3, T=5)
    d = hm.distinctness(pat, include_self=include_self)
    p = pat.double().numpy()
    M, L, P, H = p.shape[:4]
    for a, l, h in itertools.product(range(M), range(L), range(H)):
        gs = [g for g in range(H) if include_self or g != h]
        common = np.mean([np.mean([ref_cos(p[a, l, q, h], p[a, l, q, g]) for q in range(P)])
                          for g in gs])
        assert abs(d[a, l, h] - (1 - common)) < TOL
    C = hm.similarity(pat).numpy()  # same numbers as the a == m blocks of C
    diag = np.stack([C[:, a, :, a, :] for a in range(M)])  # [M, L, H, H]
    if include_self:
        np.testing.assert_allclose(d, 1 - diag.mean(-1), atol=TOL)  # float64 vs float32 products


def test_distinctness_zero_for_identical_heads_and_errors() -> None:
    one = random_patterns(14, M=1, L=1, P=2, H=1, T=5)
    same = one.expand(1, 1, 2, 3, 5, 5).clone()
    np.testing.assert_allclose(hm.distinctness(same), 0.0, atol=TOL)
    np.testing.assert_allclose(hm.distinctness(same, include_self=False), 0.0, atol=TOL)
    with pytest.raises(ValueError, match="at least 2 heads"):
        hm.distinctness(one, include_self=False)


# --------------------------------------------------------------------------- controls


@pytest.mark.parametrize("exclude_first", [True, False])
def test_uniform_similarity_and_entropy_match_reference(exclude_first: bool) -> None:
    pat = random_patterns(15, M=2, L=2, P=2, H=2, T=5)
    us = hm.uniform_similarity(pat, exclude_first=exclude_first)
    ent = hm.attention_entropy(pat, exclude_first=exclude_first)
    p = pat.double().numpy()
    T = 5
    U = np.array([[1 / (q + 1) if k <= q else 0.0 for k in range(T)] for q in range(T)])
    rows = range(1 if exclude_first else 0, T)
    for a, l, h in itertools.product(range(2), range(2), range(2)):
        ref_u = np.mean([ref_cos(p[a, l, q, h], U, exclude_first) for q in range(2)])
        ref_e = np.mean([
            -sum(x * math.log(x) for x in p[a, l, q, h, r] if x > 0)
            for q in range(2) for r in rows
        ])
        assert abs(us[a, l, h] - ref_u) < TOL
        assert abs(ent[a, l, h] - ref_e) < TOL


def test_uniform_attention_is_uniform_and_maximal_entropy() -> None:
    T = 6
    uni = uniform_patterns(T=T)
    np.testing.assert_allclose(hm.uniform_similarity(uni), 1.0, atol=TOL)
    max_ent = np.mean([math.log(q + 1) for q in range(1, T)])
    np.testing.assert_allclose(hm.attention_entropy(uni), max_ent, atol=TOL)
    rnd = random_patterns(16, T=T)
    assert (hm.attention_entropy(rnd) < max_ent).all()
    assert (hm.uniform_similarity(rnd) < 1 - 1e-3).all()


def test_entropy_of_one_hot_attention_is_zero() -> None:
    eye = torch.eye(5).expand(1, 1, 2, 2, 5, 5).clone()
    np.testing.assert_allclose(hm.attention_entropy(eye), 0.0, atol=1e-12)


def test_content_specific() -> None:
    raw = np.array([[np.nan, 0.9], [0.8, np.nan]])
    null = np.array([[np.nan, 0.6], [1.0, np.nan]])
    cs = hm.content_specific(raw, null)
    np.testing.assert_allclose(cs[0, 1], 0.3) and np.testing.assert_allclose(cs[1, 0], -0.2)
    assert np.isnan(cs[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guard must not divide by zero
        norm = hm.content_specific_normalized(raw, null)
    assert norm[0, 1] == pytest.approx(0.3 / 0.4)
    assert np.isnan(norm[1, 0]) and np.isnan(norm[0, 0])
    for fn in (hm.content_specific, hm.content_specific_normalized):
        with pytest.raises(ValueError, match="same shape"):
            fn(raw, null[0])


def test_content_specific_is_zero_at_shift_zero() -> None:
    pat = random_patterns(17, P=3)
    raw = hm.head_stability(hm.similarity(pat), method="hungarian")
    null = hm.head_stability(hm.similarity(pat, prompt_shift=1), method="hungarian")
    again = hm.head_stability(hm.similarity(pat, prompt_shift=0), method="hungarian")
    np.testing.assert_array_equal(hm.content_specific(raw.per_head, again.per_head), 0.0)
    assert np.abs(hm.content_specific(raw.per_head, null.per_head)).max() > 1e-3


# --------------------------------------------------------------------------- correlations


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks, from the definition."""
    return np.array([sum(y < v for y in x) + (sum(y == v for y in x) + 1) / 2 for v in x])


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx * dx).sum() * (dy * dy).sum()))


def test_pearson_spearman_matches_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6))
    y = x + rng.normal(size=(3, 6))
    y[1, 2] = y[1, 3]  # a tie for Spearman's average ranks
    rp, rs = hm.pearson_spearman(x, y)
    assert rp.shape == rs.shape == (3,)
    for i in range(3):
        assert rp[i] == pytest.approx(_pearson(x[i], y[i]), abs=TOL)
        assert rs[i] == pytest.approx(_pearson(_ranks(x[i]), _ranks(y[i])), abs=TOL)
    rp1, rs1 = hm.pearson_spearman(torch.tensor(x[0]), torch.tensor(y[0]))
    assert rp1.shape == () and float(rp1) == pytest.approx(rp[0])
    # Spearman is invariant under monotone maps, Pearson under positive affine maps
    rp2, rs2 = hm.pearson_spearman(np.exp(x), 3 * y + 1)
    np.testing.assert_allclose(rs2, rs, atol=1e-12)
    np.testing.assert_allclose(hm.pearson_spearman(2 * x - 5, y)[0], rp, atol=1e-12)


def test_pearson_spearman_constant_gives_nan_without_warning() -> None:
    x = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    y = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 7.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rp, rs = hm.pearson_spearman(x, y)
    assert np.isnan(rp[0]) and np.isnan(rs[0])
    assert rs[1] == pytest.approx(1.0) and 0.9 < rp[1] < 1.0
    with pytest.raises(ValueError, match="same shape"):
        hm.pearson_spearman(x, y[0])
    with pytest.raises(ValueError, match="at least 2"):
        hm.pearson_spearman(np.ones((2, 1)), np.ones((2, 1)))


# --------------------------------------------------------------------------- circuits


def test_previous_token_score_matches_reference_and_shifted_diagonal() -> None:
    pat = random_patterns(18)
    s = cm.previous_token_score(pat)
    p = pat.double().numpy()
    for a, l, h in itertools.product(range(3), range(2), range(3)):
        ref = np.mean([p[a, l, q, h, t, t - 1] for q in range(3) for t in range(1, 5)])
        assert abs(s[a, l, h] - ref) < TOL
    T = 7
    prev = torch.diag(torch.ones(T - 1), diagonal=-1)  # [T, T]
    prev[0, 0] = 1.0
    np.testing.assert_allclose(
        cm.previous_token_score(prev.expand(2, 1, 2, 2, T, T).clone()), 1.0, atol=1e-12
    )
    np.testing.assert_allclose(cm.previous_token_score(uniform_patterns(T=T)),
                               np.mean([1 / (t + 1) for t in range(1, T)]), atol=TOL)


def ref_induction(p: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Straight from the module docstring: targets j+1 for earlier j <= t-2 with the same
    token; mass on the targets; mean over positions that have a target."""
    M, L, P, H, T, _ = p.shape
    out = np.zeros((M, L, H))
    for a, l, h in itertools.product(range(M), range(L), range(H)):
        vals = []
        for q, t in itertools.product(range(P), range(T)):
            targets = {j + 1 for j in range(t - 1) if tokens[q, j] == tokens[q, t]}
            if targets:
                vals.append(sum(p[a, l, q, h, t, k] for k in targets))
        out[a, l, h] = np.mean(vals)
    return out


def test_induction_score_matches_reference(monkeypatch) -> None:
    monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", 1)
    pat = random_patterns(19, M=2, L=2, P=3, H=2, T=7)
    tokens = torch.randint(0, 3, (3, 7), generator=torch.Generator().manual_seed(0))
    s = cm.induction_score(pat, tokens)
    np.testing.assert_allclose(s, ref_induction(pat.double().numpy(), tokens.numpy()), atol=TOL)
    # depends on token equality only
    np.testing.assert_allclose(cm.induction_score(pat, 10 * tokens + 7), s, atol=1e-12)


def test_perfect_induction_pattern_scores_one() -> None:
    n, P = 5, 2
    g = torch.Generator().manual_seed(1)
    half = torch.stack([torch.randperm(20, generator=g)[:n] for _ in range(P)])  # [P, n]
    tokens = torch.cat([half, half], dim=1)  # [P, 2n], repeated sequence
    T = 2 * n
    A = torch.zeros(T, T)
    for t in range(T):  # first copy: attend to BOS; second copy: token after last occurrence
        A[t, t - n + 1 if t >= n else 0] = 1.0
    pat = A.expand(2, 1, P, 1, T, T).clone()
    np.testing.assert_allclose(cm.induction_score(pat, tokens), 1.0, atol=1e-12)
    prev = torch.diag(torch.ones(T - 1), diagonal=-1)
    prev[0, 0] = 1.0
    np.testing.assert_allclose(cm.induction_score(prev.expand(2, 1, P, 1, T, T).clone(), tokens),
                               0.0, atol=1e-12)
    mask = cm.induction_targets(tokens)
    assert mask.any(-1)[:, :n].sum() == 0 and mask.any(-1)[:, n:].all()


def test_induction_score_errors() -> None:
    pat = random_patterns(20, T=5)
    with pytest.raises(ValueError, match="nothing to score"):
        cm.induction_score(pat, torch.arange(15).reshape(3, 5))
    with pytest.raises(ValueError, match=r"\[P, T\] = \[3, 5\]"):
        cm.induction_score(pat, torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer"):
        cm.induction_targets(torch.zeros(3, 5))


def test_induction_heads_and_every_seed() -> None:
    scores = np.zeros((3, 2, 2))
    scores[0, 1, 0] = 0.5
    scores[1, 0, 1] = 0.3
    scores[2, 1, 1] = 0.29
    heads = cm.induction_heads(scores)
    assert heads.sum() == 2 and heads[0, 1, 0] and heads[1, 0, 1]
    assert not cm.every_seed_has_induction_head(scores)
    assert cm.every_seed_has_induction_head(scores, threshold=0.25)
    with pytest.raises(ValueError, match=r"\[M, L, H\]"):
        cm.induction_heads(np.zeros((3, 2)))


def test_induction_head_similarity_uses_best_heads() -> None:
    pat = random_patterns(21, M=3, L=2, P=2, H=3, T=5)
    scores = np.zeros((3, 2, 3))
    scores[0, 1, 2] = 0.9
    scores[1, 1, 0] = 0.8
    scores[2, 0, 1] = 0.7
    r = cm.induction_head_similarity(pat, scores)
    np.testing.assert_array_equal(r.heads, [[1, 2], [1, 0], [0, 1]])
    np.testing.assert_allclose(r.best_scores, [0.9, 0.8, 0.7])
    X = hm.cross_layer_similarity(pat).numpy()
    C = hm.similarity(pat).numpy()
    for a, m in itertools.permutations(range(3), 2):
        (la, ha), (lm, hm_) = r.heads[a], r.heads[m]
        assert abs(r.pairwise[a, m] - X[a, la, ha, m, lm, hm_]) < TOL
    assert abs(r.pairwise[0, 1] - C[1, 0, 2, 1, 0]) < TOL  # same layer: item 2's C
    assert np.isnan(r.pairwise).sum() == 3
    assert r.mean == pytest.approx(np.nanmean(r.pairwise))
    with pytest.raises(ValueError, match="to match patterns"):
        cm.induction_head_similarity(pat, scores[:, :1])


# --------------------------------------------------------------------------- errors


PATTERN_FUNCS = [
    hm.similarity,
    hm.cross_layer_similarity,
    hm.cross_layer_stability,
    hm.distinctness,
    hm.uniform_similarity,
    hm.attention_entropy,
    cm.previous_token_score,
]


@pytest.mark.parametrize("fn", PATTERN_FUNCS, ids=lambda f: f.__name__)
def test_pattern_functions_reject_bad_input(fn) -> None:
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"{name}.*\[M, L, P, H, T, T\].*5-D"):
        fn(torch.rand(2, 2, 2, 2, 4))
    with pytest.raises(ValueError, match=rf"{name}.*query, key.*4 x 5"):
        fn(torch.rand(2, 1, 1, 1, 4, 5))
    with pytest.raises(ValueError, match=rf"{name}.*floating point"):
        fn(torch.ones(2, 1, 1, 1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=rf"{name}.*T >= 2"):
        fn(torch.ones(2, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match=rf"{name}.*empty axis"):
        fn(torch.ones(2, 0, 1, 1, 3, 3))
    with pytest.raises(ValueError, match=rf"{name}.*torch.Tensor"):
        fn([[1.0]])
    # a numpy array of the right shape is accepted
    fn(random_patterns(22, M=2).numpy())


@pytest.mark.parametrize(
    "fn", [hm.similarity, hm.cross_layer_similarity, hm.cross_layer_stability],
    ids=lambda f: f.__name__,
)
def test_cross_seed_functions_need_two_seeds_and_a_valid_shift(fn) -> None:
    with pytest.raises(ValueError, match=r"at least 2 seeds.*M=1"):
        fn(random_patterns(23, M=1))
    pat = random_patterns(23, P=3)
    with pytest.raises(ValueError, match=r"prompt_shift=3 is a multiple.*P=3"):
        fn(pat, prompt_shift=3)
    with pytest.raises(ValueError, match="prompt_shift must be an int"):
        fn(pat, prompt_shift=1.5)


def test_head_stability_rejects_bad_input() -> None:
    C = hm.similarity(random_patterns(24))
    with pytest.raises(ValueError, match="method must be one of"):
        hm.head_stability(C, method="greedy")
    with pytest.raises(ValueError, match=r"\[L, M, H, M, H\]"):
        hm.head_stability(C[0])
    with pytest.raises(ValueError, match=r"\[L, M, H, M, H\]"):
        hm.head_stability(C[:, :2])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        hm.head_stability(C[:, :1, :, :1])
    with pytest.raises(ValueError, match=r"anchor_seed must be in 0..2"):
        hm.head_stability(C, method="anchor", anchor_seed=3)
    # a numpy C is accepted and gives the same answer
    np.testing.assert_array_equal(hm.head_stability(C.numpy()).per_head,
                                  hm.head_stability(C).per_head)


def test_metadata_covers_the_metrics() -> None:
    for name in ["head_similarity", "head_stability", "cross_layer_stability",
                 "shuffled_prompt_null", "content_specific_stability", "distinctness",
                 "uniform_similarity", "attention_entropy", "previous_token_score",
                 "induction_score", "induction_head_similarity", "pearson_spearman"]:
        meta = hm.metadata[name]
        assert set(meta) == {"higher_is_better", "range", "invariances"}
        lo, hi = meta["range"]
        assert lo < hi and meta["invariances"]


def test_pearson_spearman_treats_float32_noise_as_constant() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=8)
    flat = 0.9 + 1e-8 * rng.normal(size=8)  # a dead layer: equal up to float32 accumulation noise
    r_p, r_s = hm.pearson_spearman(x, flat)
    assert np.isnan(r_p) and np.isnan(r_s)
    small = 1e-4 * rng.normal(size=8)  # small values that do vary are not constant
    r_p, _ = hm.pearson_spearman(small, small * 2 + 1e-5)
    assert r_p == pytest.approx(1.0)
