"""Fast head-similarity paths (anchor-only blocks, one-pass head set, chunking) against the
all-pairs path and slow reference loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from harness.metrics import heads as hm
from harness.metrics import pattern_gram as pg

TOL = 1e-6


def random_patterns(seed: int, M: int = 3, L: int = 2, P: int = 5, H: int = 3, T: int = 6,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(M, L, P, H, T, T, generator=g, dtype=torch.float64)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1).to(dtype)


def ref_cos(A: np.ndarray, B: np.ndarray) -> float:
    T = A.shape[0]
    a = np.array([A[q, k] for q in range(1, T) for k in range(q + 1)])
    b = np.array([B[q, k] for q in range(1, T) for k in range(q + 1)])
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def ref_cross(pat: torch.Tensor, shift: int) -> np.ndarray:
    p = pat.double().numpy()
    M, L, P, H = p.shape[:4]
    X = np.zeros((M, L, H, M, L, H))
    for a, l, h, m, k, g in itertools.product(*(range(n) for n in (M, L, H, M, L, H))):
        X[a, l, h, m, k, g] = np.mean([ref_cos(p[a, l, q, h], p[m, k, (q + shift) % P, g])
                                       for q in range(P)])
    return X


def same_layer(X: np.ndarray) -> np.ndarray:
    return np.stack([X[:, l, :, :, l, :] for l in range(X.shape[1])])  # [L, M, H, M, H]


@pytest.mark.parametrize("chunk_elements", [None, 1, 200])
@pytest.mark.parametrize("shift", [0, 1, 3])
def test_anchor_pairs_are_the_anchor_blocks_of_all_pairs(shift, chunk_elements, monkeypatch):
    if chunk_elements is not None:
        monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", chunk_elements)  # 1 and ~10 prompts
    pat = random_patterns(0)
    ref = same_layer(ref_cross(pat, shift))
    full = hm.similarity(pat, prompt_shift=shift).numpy()
    np.testing.assert_allclose(full, ref, atol=TOL)
    for anchor in (0, 2):
        C = hm.similarity(pat, prompt_shift=shift, pairs="anchor", anchor_seed=anchor).numpy()
        np.testing.assert_allclose(C[:, anchor], ref[:, anchor], atol=TOL)
        mirrored = np.zeros(C.shape, dtype=bool)
        mirrored[:, anchor] = True
        if shift == 0:  # C is symmetric there, so the mirror blocks come free
            mirrored[:, :, :, anchor] = True
            np.testing.assert_allclose(C[:, :, :, anchor], ref[:, :, :, anchor], atol=TOL)
        assert np.isnan(C[~mirrored]).all()
        a = hm.head_stability(C, method="anchor", anchor_seed=anchor)
        b = hm.head_stability(full, method="anchor", anchor_seed=anchor)
        np.testing.assert_allclose(a.per_head, b.per_head, atol=TOL)
        np.testing.assert_array_equal(a.match[anchor], b.match[anchor])
        for m, k in itertools.product(range(3), range(3)):
            if m != anchor and not (shift == 0 and k == anchor):  # blocks not computed
                assert np.isnan(a.pairwise[m, k]).all() and (a.match[m, k] == -1).all()


def test_anchor_only_c_refuses_the_other_methods_and_anchors() -> None:
    C = hm.similarity(random_patterns(1), pairs="anchor", anchor_seed=1)
    for method in ("all_anchors", "hungarian"):
        with pytest.raises(ValueError, match=r"pairs='all'"):
            hm.head_stability(C, method=method)
    with pytest.raises(ValueError, match=r"pairs='anchor', anchor_seed=0"):
        hm.head_stability(C, method="anchor", anchor_seed=0)
    with pytest.raises(ValueError, match=r"pairs must be one of \('all', 'anchor'\)"):
        hm.similarity(random_patterns(1), pairs="anchors")
    with pytest.raises(ValueError, match="anchor_seed must be in 0..2"):
        hm.similarity(random_patterns(1), pairs="anchor", anchor_seed=3)


@pytest.mark.parametrize("chunk_elements", [None, 1, 200])  # shift < chunk and shift >= chunk
@pytest.mark.parametrize("shift", [1, 3])
def test_head_set_matches_references_and_the_separate_calls(shift, chunk_elements,
                                                            monkeypatch) -> None:
    if chunk_elements is not None:
        monkeypatch.setattr(pg, "_CHUNK_ELEMENTS", chunk_elements)
    pat = random_patterns(2, M=3, L=2, P=5, H=2, T=5)
    raw, null = ref_cross(pat, 0), ref_cross(pat, shift)
    hs = hm.head_set(pat, prompt_shift=shift)
    assert hs.prompt_shift == shift
    np.testing.assert_allclose(hs.X.numpy(), raw, atol=TOL)
    np.testing.assert_allclose(hs.X_null.numpy(), null, atol=TOL)
    np.testing.assert_allclose(hs.C.numpy(), same_layer(raw), atol=TOL)
    np.testing.assert_allclose(hs.C_null.numpy(), same_layer(null), atol=TOL)
    Xn = hs.X.numpy()
    np.testing.assert_array_equal(Xn, Xn.transpose(3, 4, 5, 0, 1, 2))  # exactly symmetric
    np.testing.assert_allclose(hs.X.numpy(), hm.cross_layer_similarity(pat).numpy(), atol=TOL)
    for flags in ((True, False), (False, True), (False, False)):
        part = hm.head_set(pat, prompt_shift=shift, cross_layer=flags[0],
                           cross_layer_null=flags[1])
        assert (part.X is None) != flags[0] and (part.X_null is None) != flags[1]
        np.testing.assert_allclose(part.C.numpy(), same_layer(raw), atol=TOL)
        np.testing.assert_allclose(part.C_null.numpy(), same_layer(null), atol=TOL)


def test_cross_layer_match_equals_cross_layer_stability() -> None:
    pat = random_patterns(3)
    a = hm.cross_layer_stability(pat, prompt_shift=1)
    b = hm.cross_layer_match(hm.cross_layer_similarity(pat, prompt_shift=1))
    for field in ("pairwise", "best_layer", "best_head", "same_layer", "per_head"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    with pytest.raises(ValueError, match=r"\[M, L, H, M, L, H\]"):
        hm.cross_layer_match(np.zeros((2, 3, 2, 2, 3)))
    with pytest.raises(ValueError, match="prompt_shift must not be 0"):
        hm.head_set(pat, prompt_shift=0)


def test_float64_patterns_are_multiplied_in_float64() -> None:
    pat = random_patterns(4, dtype=torch.float64)
    ref = same_layer(ref_cross(pat, 1))
    np.testing.assert_allclose(hm.similarity(pat, prompt_shift=1).numpy(), ref, atol=1e-12)
    assert pg.work_dtype(pat) == torch.float64
    assert pg.work_dtype(pat.float()) == torch.float32


def test_float32_products_stay_within_1e6_on_long_prompts() -> None:
    # D = 64 * 65 / 2 - 1 = 2079 terms per dot product, as on the real probe set
    pat = random_patterns(5, M=2, L=1, P=3, H=2, T=64)
    got = hm.similarity(pat, prompt_shift=1).numpy()
    want = hm.similarity(pat.double(), prompt_shift=1).numpy()
    assert np.abs(got - want).max() < TOL
