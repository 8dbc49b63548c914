"""Attention-head stability across seeds (arXiv 2602.16740, Eq. 1-3, plus controls).

Every function here is pure: captured tensors in, numbers out. Shapes follow the shared
conventions of the harness:

- ``patterns``: float ``[M, L, P, H, T, T]`` post-softmax attention (seeds, layers, probe
  prompts, heads, query, key); causal rows sum to 1 over ``k <= q``.
- pairwise seed matrices: ``X[a, m, ...]`` is seed ``a`` measured against seed ``m``; the
  diagonal ``a == m`` is NaN and never used.

Query row 0 always attends only to position 0 (``[1, 0, ..]``) whatever the weights are, so
it carries no information and would pull every similarity towards 1; it is left out of
pattern vectors, entropies and uniform similarities unless ``exclude_first=False``.

Heavy work runs in torch on the device the patterns live on, over chunks of probe prompts
(all layers, seeds and heads of a chunk in one batched matmul), so memory stays bounded for
large probe sets: head similarities use float32 products and float64 sums across prompts
(see :mod:`harness.metrics.pattern_gram`); distinctness and the controls are float64 (only
the per-element terms of the entropy are float32).
Public metrics return numpy float64 arrays; :func:`pattern_vectors` and :func:`similarity`
return torch tensors because they are the inputs of the other metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.optimize
import torch

from harness.metrics import pattern_gram as pg
from harness.metrics.head_controls import (  # noqa: F401  (part of this module's API)
    attention_entropy,
    content_specific,
    content_specific_normalized,
    distinctness,
    metadata,
    pearson_spearman,
    uniform_similarity,
)
from harness.metrics.pattern_checks import (  # noqa: F401
    PATTERNS_SHAPE,
    _check_shift,
    check_patterns,
    pattern_vectors,
)

__all__ = [
    "check_patterns",
    "HeadStability",
    "CrossLayerStability",
    "HeadSet",
    "head_set",
    "cross_layer_match",
    "pattern_vectors",
    "similarity",
    "cross_layer_similarity",
    "head_stability",
    "cross_layer_stability",
    "distinctness",
    "uniform_similarity",
    "attention_entropy",
    "content_specific",
    "content_specific_normalized",
    "pearson_spearman",
    "metadata",
]

StabilityMethod = Literal["anchor", "all_anchors", "hungarian"]
_METHODS = ("anchor", "all_anchors", "hungarian")
Pairs = Literal["all", "anchor"]
_PAIRS = ("all", "anchor")


# --------------------------------------------------------------------------- similarity


def similarity(
    patterns: torch.Tensor,
    *,
    exclude_first: bool = True,
    prompt_shift: int = 0,
    pairs: Pairs = "all",
    anchor_seed: int = 0,
) -> torch.Tensor:
    """Head similarity tensor, same layer.

    ``patterns``: ``[M, L, P, H, T, T]``. Returns float64 ``[L, M, H, M, H]`` (CPU) with
    ``C[l, a, h, m, g] = mean_p cos(v(A^a_{l,h}(p)), v(A^m_{l,g}((p + prompt_shift) mod P)))``.
    ``prompt_shift=0`` is the paper's similarity; a non-zero shift is the shuffled-prompt
    null (seed ``m``'s head scored on a different prompt).
    ``pairs="all"``: every block, ``a == m`` too (distinctness reads them); with
    ``prompt_shift=0`` ``C`` is symmetric under ``(a, h) <-> (m, g)``.
    ``pairs="anchor"``: only the blocks ``a == anchor_seed`` (and at shift 0 their mirror
    ``m == anchor_seed``), the rest NaN: all that ``head_stability(C, method="anchor",
    anchor_seed=...)`` reads, at 1/M of the cost.
    Products float32 (float64 for float64 input), sums over prompts float64.
    """
    where = "similarity"
    patterns = check_patterns(patterns, where=where, min_seeds=2, exclude_first=exclude_first)
    M, L, P, H, T, _ = patterns.shape
    shift = _check_shift(prompt_shift, P, where=where)
    if pairs not in _PAIRS:
        raise ValueError(f"{where}: pairs must be one of {_PAIRS}, got {pairs!r}.")
    if pairs == "anchor" and not (0 <= anchor_seed < M):
        raise ValueError(f"{where}: anchor_seed must be in 0..{M - 1}, got {anchor_seed}.")
    anchor = anchor_seed if pairs == "anchor" else None
    return pg.same_layer(patterns, exclude_first=exclude_first, shift=shift, anchor=anchor)


def cross_layer_similarity(
    patterns: torch.Tensor,
    *,
    exclude_first: bool = True,
    prompt_shift: int = 0,
) -> torch.Tensor:
    """Head similarity across all layers and seeds.

    ``patterns``: ``[M, L, P, H, T, T]``. Returns float64 ``[M, L, H, M, L, H]`` with
    ``X[a, l, h, m, k, g] = mean_p cos(v(A^a_{l,h}(p)), v(A^m_{k,g}((p + shift) mod P)))``;
    its same-layer blocks ``X[:, l, :, :, l, :]`` equal :func:`similarity`'s ``C[l]``.
    Costs about ``L`` times :func:`similarity`.
    """
    return _cross_layer(
        patterns, exclude_first=exclude_first, prompt_shift=prompt_shift,
        where="cross_layer_similarity",
    )


def _cross_layer(
    patterns: torch.Tensor, *, exclude_first: bool, prompt_shift: int, where: str
) -> torch.Tensor:
    patterns = check_patterns(patterns, where=where, min_seeds=2, exclude_first=exclude_first)
    shift = _check_shift(prompt_shift, patterns.shape[2], where=where)
    return pg.cross_layer(patterns, exclude_first=exclude_first, shift=shift)


# --------------------------------------------------------------------------- stability


@dataclass(frozen=True)
class HeadStability:
    """Head stability of one family (see :func:`head_stability`).

    pairwise: [M, M, L, H] best-match similarity of seed a's head h in seed m (NaN if a==m)
    match:    [M, M, L, H] int, the matched head of seed m (-1 on the diagonal)
    per_head: [L, H]; per_layer: [L]; spread = max - min of per_layer;
    min_layer = argmin of per_layer; min_rel_depth = min_layer / (L - 1) (0 if L == 1).
    """

    method: str
    pairwise: np.ndarray
    match: np.ndarray
    per_head: np.ndarray
    per_layer: np.ndarray
    spread: float
    min_layer: int
    min_rel_depth: float


def _as_similarity(C: torch.Tensor | np.ndarray, *, where: str) -> np.ndarray:
    if isinstance(C, torch.Tensor):
        C = C.detach().cpu().to(torch.float64).numpy()
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 5 or C.shape[1] != C.shape[3] or C.shape[2] != C.shape[4]:
        raise ValueError(
            f"{where}: C must have shape [L, M, H, M, H] as returned by similarity(), "
            f"got shape {C.shape}."
        )
    if C.shape[1] < 2:
        raise ValueError(
            f"{where}: needs at least 2 seeds, got M={C.shape[1]} in C of shape {C.shape}; "
            f"train a family with more seeds."
        )
    return C


def head_stability(
    C: torch.Tensor | np.ndarray,
    *,
    method: StabilityMethod = "all_anchors",
    anchor_seed: int = 0,
) -> HeadStability:
    """Head stability S_{l,h} from a similarity tensor ``C`` ``[L, M, H, M, H]``.

    Matching: ``anchor`` and ``all_anchors`` match greedily (best head of the other seed,
    several heads may share a match); ``hungarian`` matches one-to-one per seed pair and
    layer (scipy ``linear_sum_assignment``, maximising total similarity), so its pairwise
    values are never above the greedy ones.
    Aggregation: ``anchor`` is the paper's: seed ``anchor_seed`` against each other seed,
    mean over those seeds; ``all_anchors`` and ``hungarian`` average over all ordered
    pairs of distinct seeds. ``per_head[l, h]`` is indexed by the anchor's head ``h``.
    ``anchor`` needs only the anchor's blocks: pass ``similarity(patterns, pairs="anchor")``
    (1/M of the work); pairwise rows of the other seeds are then NaN and their match -1.
    """
    where = "head_stability"
    if method not in _METHODS:
        raise ValueError(f"{where}: method must be one of {_METHODS}, got {method!r}.")
    C = _as_similarity(C, where=where)
    L, M, H = C.shape[:3]
    if not (0 <= anchor_seed < M):
        raise ValueError(f"{where}: anchor_seed must be in 0..{M - 1}, got {anchor_seed}.")
    blocks = C.transpose(1, 3, 0, 2, 4)  # [M, M, L, H, H]: blocks[a, m, l, h, g]
    eye = np.eye(M, dtype=bool)
    present = ~np.isnan(blocks).any(axis=(2, 3, 4))  # [M, M]: blocks computed
    needed = ~eye if method != "anchor" else (~eye & (np.arange(M) == anchor_seed)[:, None])
    if not present[needed].all():
        hint = ("similarity(..., pairs='all')" if method != "anchor" else
                f"similarity(..., pairs='anchor', anchor_seed={anchor_seed})")
        raise ValueError(
            f"{where}: method={method!r} with anchor_seed={anchor_seed} reads seed-pair blocks "
            f"that C does not hold (NaN); compute C with {hint}."
        )
    if method == "hungarian":
        match = np.zeros((M, M, L, H), dtype=np.int64)  # [M, M, L, H]; diagonal unused
        for a in range(M):
            for m in range(M):
                if a == m:
                    continue
                for layer in range(L):
                    rows, cols = scipy.optimize.linear_sum_assignment(
                        blocks[a, m, layer], maximize=True
                    )
                    match[a, m, layer, rows] = cols
    else:
        match = blocks.argmax(axis=-1)  # [M, M, L, H]
    pairwise = np.take_along_axis(blocks, match[..., None], axis=-1)[..., 0]  # [M, M, L, H]
    pairwise[eye] = np.nan
    match[eye | ~present] = -1  # blocks an anchor-only C leaves out stay NaN
    if method == "anchor":
        others = np.arange(M) != anchor_seed
        per_head = pairwise[anchor_seed, others].mean(axis=0)  # [L, H]
    else:
        per_head = pairwise[~eye].mean(axis=0)  # [L, H], over M(M-1) ordered pairs
    return _summarise(method, pairwise, match, per_head)


def _summarise(
    method: str, pairwise: np.ndarray, match: np.ndarray, per_head: np.ndarray
) -> HeadStability:
    per_layer = per_head.mean(axis=-1)  # [L]
    L = per_layer.shape[0]
    min_layer = int(np.argmin(per_layer))
    return HeadStability(
        method=method,
        pairwise=pairwise,
        match=match,
        per_head=per_head,
        per_layer=per_layer,
        spread=float(per_layer.max() - per_layer.min()),
        min_layer=min_layer,
        min_rel_depth=min_layer / (L - 1) if L > 1 else 0.0,
    )


@dataclass(frozen=True)
class CrossLayerStability:
    """Best match of each head over all layers and heads of the other seed.

    pairwise:   [M, M, L, H] best similarity (NaN if a==m); never below same-layer greedy
    best_layer: [M, M, L, H] int, the layer of seed m that wins (-1 on the diagonal)
    best_head:  [M, M, L, H] int, the head in that layer (-1 on the diagonal)
    same_layer: [M, M, L, H] bool, best_layer == l (False on the diagonal)
    same_layer_fraction: fraction of (ordered distinct pair, layer, head) whose best match
        lies in the same layer
    per_head [L, H] and per_layer [L]: means over all ordered pairs of distinct seeds.
    """

    pairwise: np.ndarray
    best_layer: np.ndarray
    best_head: np.ndarray
    same_layer: np.ndarray
    same_layer_fraction: float
    per_head: np.ndarray
    per_layer: np.ndarray


def cross_layer_stability(
    patterns: torch.Tensor,
    *,
    exclude_first: bool = True,
    prompt_shift: int = 0,
) -> CrossLayerStability:
    """Cross-layer matching: for seed ``a``'s head (l, h), the best head of seed ``m`` in
    any layer. ``patterns``: ``[M, L, P, H, T, T]``; ``prompt_shift != 0`` gives the
    cross-layer shuffled-prompt null. Ties go to the lowest (layer, head)."""
    X = _cross_layer(
        patterns, exclude_first=exclude_first, prompt_shift=prompt_shift,
        where="cross_layer_stability",
    )  # [M, L, H, M, L, H]
    return cross_layer_match(X)


def cross_layer_match(X: torch.Tensor | np.ndarray) -> CrossLayerStability:
    """:func:`cross_layer_stability` from a precomputed cross-layer similarity ``X``
    ``[M, L, H, M, L, H]`` (:func:`cross_layer_similarity`, or :attr:`HeadSet.X`)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().to(torch.float64).numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 6 or X.shape[:3] != X.shape[3:]:
        raise ValueError(
            f"cross_layer_match: X must have shape [M, L, H, M, L, H] as returned by "
            f"cross_layer_similarity(), got shape {X.shape}."
        )
    M, L, H = X.shape[:3]
    flat = X.reshape(M, L, H, M, L * H).transpose(0, 3, 1, 2, 4)  # [M, M, L, H, L*H]
    best = flat.argmax(axis=-1)  # [M, M, L, H]
    pairwise = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]  # [M, M, L, H]
    best_layer, best_head = best // H, best % H  # [M, M, L, H] each
    same = best_layer == np.arange(L)[None, None, :, None]  # [M, M, L, H]
    eye = np.eye(M, dtype=bool)
    pairwise[eye], best_layer[eye], best_head[eye], same[eye] = np.nan, -1, -1, False
    per_head = pairwise[~eye].mean(axis=0)  # [L, H]
    return CrossLayerStability(
        pairwise=pairwise,
        best_layer=best_layer,
        best_head=best_head,
        same_layer=same,
        same_layer_fraction=float(same[~eye].mean()),
        per_head=per_head,
        per_layer=per_head.mean(axis=-1),
    )


@dataclass(frozen=True)
class HeadSet:
    """Raw and shuffled-prompt similarities of one family, from one pass (see
    :func:`head_set`).

    C, C_null: [L, M, H, M, H] same-layer similarity (raw, and at ``prompt_shift``), as
        :func:`similarity` returns them
    X, X_null: [M, L, H, M, L, H] cross-layer similarity (None unless asked for)
    """

    prompt_shift: int
    C: torch.Tensor
    C_null: torch.Tensor
    X: torch.Tensor | None
    X_null: torch.Tensor | None


def head_set(
    patterns: torch.Tensor,
    *,
    prompt_shift: int = 1,
    cross_layer: bool = True,
    cross_layer_null: bool = True,
    exclude_first: bool = True,
) -> HeadSet:
    """Everything head stability is computed from, with one copy of each pattern.

    With ``cross_layer`` the raw cross-layer similarity ``X`` is computed (its seed-pair
    blocks ``a <= m`` only: it is symmetric) and ``C`` is read off its same-layer blocks;
    with ``cross_layer_null`` the same for the null at ``prompt_shift``. Otherwise
    :func:`similarity` computes ``C`` / ``C_null`` directly. Feed ``C`` to
    :func:`head_stability` and ``X`` to :func:`cross_layer_match`.
    ``patterns``: ``[M, L, P, H, T, T]``.
    """
    where = "head_set"
    patterns = check_patterns(patterns, where=where, min_seeds=2, exclude_first=exclude_first)
    shift = _check_shift(prompt_shift, patterns.shape[2], where=where)
    if shift == 0:
        raise ValueError(f"{where}: prompt_shift must not be 0 (mod P): the null would be the "
                         f"raw similarity; use 1 (the default).")
    kw = dict(exclude_first=exclude_first)
    X = X_null = None
    if cross_layer and cross_layer_null:
        X, X_null = pg.cross_layer_pair(patterns, shifts=(0, shift), **kw)
    elif cross_layer:
        X = pg.cross_layer(patterns, shift=0, **kw)
    elif cross_layer_null:
        X_null = pg.cross_layer(patterns, shift=shift, **kw)
    C = pg.same_layer_of(X) if X is not None else pg.same_layer(patterns, shift=0, **kw)
    C_null = (pg.same_layer_of(X_null) if X_null is not None
              else pg.same_layer(patterns, shift=shift, **kw))
    return HeadSet(prompt_shift=shift, C=C, C_null=C_null, X=X, X_null=X_null)
