"""Controls and companions of head stability: distinctness, similarity to uniform
attention, attention entropy, content-specific stability, correlations, and the metadata of
every head metric (pure functions; shapes as in :mod:`harness.metrics.heads`)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.stats
import torch

from harness.metrics.pattern_checks import (
    _cosine_gram,
    _prompt_chunks,
    _tril_rows,
    check_patterns,
    pattern_vectors,
)

# --------------------------------------------------------------------------- distinctness


def distinctness(
    patterns: torch.Tensor,
    *,
    include_self: bool = True,
    exclude_first: bool = True,
) -> np.ndarray:
    """Distinctness 1 - commonness per seed and head: ``[M, L, H]``.

    commonness[a, l, h] = mean over heads g of the same layer of the same seed of
    C(a, h; a, g; l). ``include_self=True`` counts g == h (the paper does; it adds 1/H to
    commonness); ``include_self=False`` averages over the other H - 1 heads only.
    ``patterns``: ``[M, L, P, H, T, T]``; M == 1 is allowed.
    """
    where = "distinctness"
    patterns = check_patterns(patterns, where=where, exclude_first=exclude_first)
    M, L, P, H, T, _ = patterns.shape
    if not include_self and H < 2:
        raise ValueError(
            f"{where}: include_self=False needs at least 2 heads per layer, got H={H}."
        )
    total = torch.zeros(M, L, H, dtype=torch.float64)  # [M, L, H]
    for chunk in _prompt_chunks(P, M * L * H * T * (T + 1) // 2):
        v = _tril_rows(
            patterns[:, :, chunk], exclude_first=exclude_first, dtype=torch.float64
        )  # [M, L, c, H, D]
        gram = _cosine_gram(v.flatten(0, 2), None).reshape(M, L, -1, H, H)  # [M, L, c, H, H]
        if not include_self:
            gram = gram - torch.diag_embed(torch.diagonal(gram, dim1=-2, dim2=-1))
        total += gram.sum(dim=(2, 4))  # [M, L, H]
    count = H if include_self else H - 1
    return (1.0 - total / (P * count)).numpy()  # [M, L, H]


# --------------------------------------------------------------------------- controls


def uniform_similarity(patterns: torch.Tensor, *, exclude_first: bool = True) -> np.ndarray:
    """Cosine similarity of each head to causal-uniform attention (row q = 1/(q+1) on
    k <= q), on the same pattern vectors as :func:`similarity`, mean over prompts.
    ``patterns``: ``[M, L, P, H, T, T]``. Returns ``[M, L, H]`` in [0, 1]; 1 for
    uniform attention."""
    where = "uniform_similarity"
    patterns = check_patterns(patterns, where=where, exclude_first=exclude_first)
    M, L, P, H, T, _ = patterns.shape
    q = torch.arange(T, dtype=torch.float64)  # [T]
    uniform = torch.tril(torch.ones(T, T, dtype=torch.float64)) / (q + 1)[:, None]  # [T, T]
    u = pattern_vectors(uniform, exclude_first=exclude_first)  # [D]
    total = torch.zeros(M, L, H, dtype=torch.float64)  # [M, L, H]
    for chunk in _prompt_chunks(P, M * L * H * u.numel()):
        v = _tril_rows(
            patterns[:, :, chunk], exclude_first=exclude_first, dtype=torch.float64
        )  # [M, L, c, H, D]
        norm = torch.linalg.vector_norm(v, dim=-1)  # [M, L, c, H]
        cos = (v @ u) / torch.where(norm > 0, norm, torch.ones_like(norm))  # [M, L, c, H]
        total += cos.sum(dim=2)  # [M, L, H]
    return (total / P).numpy()  # [M, L, H]


def attention_entropy(patterns: torch.Tensor, *, exclude_first: bool = True) -> np.ndarray:
    """Entropy of each attention row in nats, -sum_{k<=q} A[q, k] log A[q, k] (0 log 0 =
    0; the upper triangle is ignored, as in :func:`pattern_vectors`), mean over query rows
    (row 0, always entropy 0, left out with ``exclude_first``) and prompts.
    ``patterns``: ``[M, L, P, H, T, T]``. Returns ``[M, L, H]``; the maximum, reached by
    causal-uniform attention, is mean_q log(q + 1) over the rows used."""
    where = "attention_entropy"
    patterns = check_patterns(patterns, where=where, exclude_first=exclude_first)
    M, L, P, H, T, _ = patterns.shape
    first = 1 if exclude_first else 0
    total = torch.zeros(M, L, H, dtype=torch.float64)  # [M, L, H]
    for chunk in _prompt_chunks(P, M * L * H * T * (T + 1) // 2):
        tri = _tril_rows(
            patterns[:, :, chunk], exclude_first=exclude_first, dtype=torch.float32
        )  # [M, L, c, H, D]: all rows used, each once
        # each term a log a is accurate to float32 rounding; the sums are float64
        total -= torch.special.xlogy(tri, tri).sum(dim=(2, 4), dtype=torch.float64)  # [M, L, H]
    return (total / (P * (T - first))).numpy()  # [M, L, H]


def _paired(raw: np.ndarray, null: np.ndarray, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(raw, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64)
    if raw.shape != null.shape:
        raise ValueError(
            f"{where}: raw and null must have the same shape, got {raw.shape} and "
            f"{null.shape}; compute both with the same method on the same family."
        )
    return raw, null


def content_specific(raw_pairwise: np.ndarray, null_pairwise: np.ndarray) -> np.ndarray:
    """Content-specific stability ``raw - null`` elementwise (any matching shapes, e.g.
    pairwise [M, M, L, H] or per_head [L, H]). ``null`` comes from the same stability
    method on ``similarity(..., prompt_shift=k)``. 0 means no better than chance;
    NaN diagonals stay NaN."""
    raw, null = _paired(raw_pairwise, null_pairwise, where="content_specific")
    return raw - null


def content_specific_normalized(
    raw_pairwise: np.ndarray, null_pairwise: np.ndarray, *, eps: float = 1e-12
) -> np.ndarray:
    """Normalised content-specific stability ``(raw - null) / (1 - null)``: the fraction
    of the headroom above the null that is reached (1 = perfectly stable, 0 = chance).
    Where ``1 - null <= eps`` (the null itself is already perfect, e.g. uniform attention
    at init) there is no headroom and the result is NaN, not a division blow-up."""
    raw, null = _paired(raw_pairwise, null_pairwise, where="content_specific_normalized")
    headroom = 1.0 - null
    ok = headroom > eps
    out = np.full(raw.shape, np.nan)
    np.divide(raw - null, headroom, out=out, where=ok)
    return out


# --------------------------------------------------------------------------- correlations


def pearson_spearman(
    x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Pearson and Spearman r between ``x`` and ``y`` along the last axis.

    ``x``, ``y``: ``[..., n]`` with n >= 2, e.g. ``[L, H]`` (ΔPPL and S_{l,h}: one r per
    layer, across heads) or ``[L]`` (query-weight norm vs S_l: one r across layers).
    Returns two float64 arrays of shape ``[...]`` (0-d for 1-D input). Where either side
    is constant along the axis (r undefined) or contains NaN, that r is NaN; no warning.
    Constant means to float32 precision: a spread below 1e-6 of the largest magnitude
    (similarities are accumulated from float32 products, so a dead layer's heads differ
    by ~1e-8, and ranking that noise would report a correlation that is not there).
    """
    where = "pearson_spearman"
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    if x.shape != y.shape or x.ndim == 0:
        raise ValueError(
            f"{where}: x and y must have the same shape [..., n], got {x.shape} and "
            f"{y.shape}."
        )
    n = x.shape[-1]
    if n < 2:
        raise ValueError(f"{where}: need at least 2 values along the last axis, got {n}.")
    xs, ys = x.reshape(-1, n), y.reshape(-1, n)  # [B, n]
    r_p = np.full(xs.shape[0], np.nan)
    r_s = np.full(xs.shape[0], np.nan)
    for i, (a, b) in enumerate(zip(xs, ys)):
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        if _constant(a) or _constant(b):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's own near-constant warnings
            r_p[i] = scipy.stats.pearsonr(a, b).statistic
            r_s[i] = scipy.stats.spearmanr(a, b).statistic
    return r_p.reshape(x.shape[:-1]), r_s.reshape(x.shape[:-1])


# --------------------------------------------------------------------------- metadata

_PERM = "head permutation within a layer (per layer and pairwise up to relabelling)"
_SCALE = "positive scaling of a pattern (cosine)"

metadata: dict[str, dict[str, object]] = {
    "head_similarity": dict(
        higher_is_better=True,
        range=(0.0, 1.0),
        invariances=(_SCALE, "swap of (seed a, head h) and (seed m, head g) at shift 0"),
    ),
    "head_stability": dict(
        higher_is_better=True,
        range=(0.0, 1.0),
        invariances=(_PERM, "seed relabelling (all_anchors, hungarian)", _SCALE,
                     "identical seeds give 1"),
    ),
    "cross_layer_stability": dict(
        higher_is_better=True,
        range=(0.0, 1.0),
        invariances=("head and layer permutation of the other seed", _SCALE),
    ),
    "shuffled_prompt_null": dict(
        higher_is_better=False,
        range=(0.0, 1.0),
        invariances=(_PERM, _SCALE, "prompt_shift=0 equals the raw stability"),
    ),
    "content_specific_stability": dict(
        higher_is_better=True,
        range=(-1.0, 1.0),
        invariances=(_PERM, "0 when raw equals the null"),
    ),
    "content_specific_stability_normalized": dict(
        higher_is_better=True,
        range=(-math.inf, 1.0),
        invariances=(_PERM, "NaN where the null is 1 (no headroom)"),
    ),
    "distinctness": dict(
        higher_is_better=True,
        range=(0.0, 1.0),
        invariances=("permutation of the other heads in the layer", _SCALE),
    ),
    "uniform_similarity": dict(
        higher_is_better=None,
        range=(0.0, 1.0),
        invariances=(_SCALE, "1 for causal-uniform attention"),
    ),
    "attention_entropy": dict(
        higher_is_better=None,
        range=(0.0, math.inf),
        invariances=("permutation of keys within a row",
                     "maximal (mean_q log(q+1)) for causal-uniform attention"),
    ),
    "previous_token_score": dict(
        higher_is_better=None,
        range=(0.0, 1.0),
        invariances=("1 for attention to t-1 at every t >= 1",),
    ),
    "induction_score": dict(
        higher_is_better=None,
        range=(0.0, 1.0),
        invariances=("token relabelling (depends only on token equality)",
                     "1 for perfect induction on a repeated sequence"),
    ),
    "induction_head_similarity": dict(
        higher_is_better=True,
        range=(0.0, 1.0),
        invariances=(_PERM, "layer permutation", _SCALE),
    ),
    "pearson_spearman": dict(
        higher_is_better=None,
        range=(-1.0, 1.0),
        invariances=("positive affine maps of x or y (Pearson)",
                     "monotone increasing maps (Spearman)"),
    ),
}


def _constant(a: np.ndarray) -> bool:
    """Constant to float32 precision (see :func:`pearson_spearman`)."""
    return bool(np.ptp(a) <= 1e-6 * np.abs(a).max())
