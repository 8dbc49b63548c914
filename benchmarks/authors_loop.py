"""Loop-structured reference implementations, the yardstick of ``bench_vs_authors.py``.

They mirror the structure of the authors' analysis notebook, not its speed tricks (it has
none): Python loops over probe prompts, layers, seed pairs and heads, one small tensor call
per pair of heads, float64 numpy for CKA, as a notebook that runs one prompt at a time
through each model and compares what it cached would do.

* :func:`head_similarity_loop`: for every prompt, layer pair, seed pair and head pair, the
  helper ``pattern_cosine(A, B)`` flattens both lower triangles (``A[mask]``, diagonal
  included, query row 0 dropped as the harness does) and returns their
  ``torch.nn.functional.cosine_similarity(...).item()``; the means over prompts are
  accumulated in Python floats.
* :func:`anchor_stability_loop`: the paper's measure on top of it: seed ``anchor`` against
  every other seed, the best head of the other seed per anchor head, mean over seeds.
* :func:`linear_cka_loop` / :func:`rbf_cka_loop`: per layer and seed pair, the reference
  formulas of Kornblith et al. (2019) in float64 numpy: ``feature_space_linear_cka``
  (centre, ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``) and ``gram_rbf`` with the
  bandwidth ``np.median`` of the full squared-distance matrix, ``center_gram``, ``cka``.

They compute exactly the harness's quantities, so the benchmark checks agreement too.
Not used by the harness.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def pattern_cosine(A: torch.Tensor, B: torch.Tensor, mask: torch.Tensor) -> float:
    """Cosine of two [T, T] patterns over the entries where ``mask`` is True."""
    return F.cosine_similarity(A[mask], B[mask], dim=0).item()


def _mask(T: int, exclude_first: bool) -> torch.Tensor:
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if exclude_first:
        mask[0] = False
    return mask


def head_similarity_loop(
    patterns: torch.Tensor,
    seed_pairs: list[tuple[int, int]],
    *,
    prompts: int,
    shift: int = 0,
    cross_layer: bool = False,
    exclude_first: bool = True,
) -> dict[tuple[int, int, int, int, int, int], float]:
    """``{(a, l, h, m, k, g): mean_p cos(A^a_{l,h}(p), A^m_{k,g}(p + shift))}`` over the
    first ``prompts`` prompts (shifted prompts wrap over all P); ``k == l`` unless
    ``cross_layer``. ``patterns``: [M, L, P, H, T, T]."""
    M, L, P, H, T, _ = patterns.shape
    mask = _mask(T, exclude_first)
    sims: dict[tuple[int, int, int, int, int, int], float] = {}
    for p in range(prompts):
        q = (p + shift) % P
        for layer in range(L):
            for other_layer in (range(L) if cross_layer else [layer]):
                for a, m in seed_pairs:
                    for h in range(H):
                        for g in range(H):
                            key = (a, layer, h, m, other_layer, g)
                            c = pattern_cosine(patterns[a, layer, p, h],
                                               patterns[m, other_layer, q, g], mask)
                            sims[key] = sims.get(key, 0.0) + c / prompts
    return sims


def anchor_stability_loop(
    patterns: torch.Tensor, *, prompts: int, anchor: int = 0, exclude_first: bool = True
) -> np.ndarray:
    """Anchor head stability S_{l,h} [L, H] on the first ``prompts`` prompts."""
    M, L, P, H = patterns.shape[:4]
    others = [m for m in range(M) if m != anchor]
    sims = head_similarity_loop(patterns, [(anchor, m) for m in others], prompts=prompts,
                                exclude_first=exclude_first)
    S = np.zeros((L, H))
    for layer in range(L):
        for h in range(H):
            best = [max(sims[(anchor, layer, h, m, layer, g)] for g in range(H)) for m in others]
            S[layer, h] = sum(best) / len(best)
    return S


def linear_cka_loop(acts: np.ndarray) -> np.ndarray:
    """acts [M, L, n, d] float64 -> [M, M, L] feature-space linear CKA, NaN diagonal."""
    M, L = acts.shape[:2]
    out = np.full((M, M, L), np.nan)
    for layer in range(L):
        for a in range(M):
            for b in range(a + 1, M):
                x = acts[a, layer] - acts[a, layer].mean(0, keepdims=True)
                y = acts[b, layer] - acts[b, layer].mean(0, keepdims=True)
                dot = np.linalg.norm(x.T.dot(y)) ** 2
                nx, ny = np.linalg.norm(x.T.dot(x)), np.linalg.norm(y.T.dot(y))
                out[a, b, layer] = out[b, a, layer] = dot / (nx * ny)
    return out


def gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    dot = x.dot(x.T)
    sq = np.diag(dot)
    d2 = -2 * dot + sq[:, None] + sq[None, :]
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))


def center_gram(gram: np.ndarray) -> np.ndarray:
    gram = gram.copy()
    means = np.mean(gram, 0)
    means -= np.mean(means) / 2
    gram -= means[:, None]
    gram -= means[None, :]
    return gram


def cka(gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    gx, gy = center_gram(gram_x), center_gram(gram_y)
    return float(gx.ravel().dot(gy.ravel()) / (np.linalg.norm(gx) * np.linalg.norm(gy)))


def rbf_cka_loop(acts: np.ndarray) -> np.ndarray:
    """acts [M, L, n, d] float64 -> [M, M, L] RBF CKA (median of all n^2 distances)."""
    M, L = acts.shape[:2]
    out = np.full((M, M, L), np.nan)
    for layer in range(L):
        for a in range(M):
            for b in range(a + 1, M):
                out[a, b, layer] = out[b, a, layer] = cka(gram_rbf(acts[a, layer]),
                                                          gram_rbf(acts[b, layer]))
    return out
