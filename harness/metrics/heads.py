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

import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import scipy.optimize
import scipy.stats
import torch

from harness.metrics import pattern_gram as pg

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

PATTERNS_SHAPE = "[M, L, P, H, T, T] (seeds, layers, prompts, heads, query, key)"


# --------------------------------------------------------------------------- validation


def check_patterns(
    patterns: torch.Tensor | np.ndarray,
    *,
    where: str,
    min_seeds: int = 1,
    exclude_first: bool = True,
) -> torch.Tensor:
    """Validate a captured ``patterns`` tensor and return it as a torch tensor.

    Raises ValueError naming ``where``, what was wrong, and what to pass instead.
    """
    if isinstance(patterns, np.ndarray):
        patterns = torch.from_numpy(patterns)
    if not isinstance(patterns, torch.Tensor):
        raise ValueError(
            f"{where}: patterns must be a torch.Tensor of shape {PATTERNS_SHAPE}, "
            f"got {type(patterns).__name__}; pass the family's captured 'patterns'."
        )
    if patterns.ndim != 6:
        raise ValueError(
            f"{where}: patterns must have shape {PATTERNS_SHAPE}, got {patterns.ndim}-D "
            f"shape {tuple(patterns.shape)}; stack the seeds of one family first "
            f"(a single seed needs a leading axis of size 1)."
        )
    if not patterns.is_floating_point():
        raise ValueError(
            f"{where}: patterns must be floating point (post-softmax attention), "
            f"got dtype {patterns.dtype}."
        )
    M, L, P, H, T, T2 = patterns.shape
    if T != T2:
        raise ValueError(
            f"{where}: the last two axes of patterns (query, key) must be equal, got "
            f"{T} x {T2} in shape {tuple(patterns.shape)}."
        )
    if min(M, L, P, H, T) == 0:
        raise ValueError(
            f"{where}: patterns has an empty axis: shape {tuple(patterns.shape)} "
            f"({PATTERNS_SHAPE})."
        )
    if M < min_seeds:
        raise ValueError(
            f"{where}: needs at least {min_seeds} seeds to compare, got M={M} in "
            f"patterns of shape {tuple(patterns.shape)}; train a family with more seeds."
        )
    if exclude_first and T < 2:
        raise ValueError(
            f"{where}: with exclude_first=True a pattern needs T >= 2 tokens (row 0 is "
            f"dropped), got T={T}; use longer probe prompts or exclude_first=False."
        )
    return patterns


def _prompt_chunks(P: int, per_prompt_elements: int) -> Iterator[slice]:
    return pg.prompt_chunks(P, per_prompt_elements)


def _check_shift(prompt_shift: int, P: int, *, where: str) -> int:
    if not isinstance(prompt_shift, (int, np.integer)) or isinstance(prompt_shift, bool):
        raise ValueError(f"{where}: prompt_shift must be an int, got {prompt_shift!r}.")
    if prompt_shift % P == 0 and prompt_shift != 0:
        raise ValueError(
            f"{where}: prompt_shift={prompt_shift} is a multiple of the number of prompts "
            f"P={P}, so the 'null' would pair every prompt with itself; use a shift in "
            f"1..{P - 1} (a shuffled-prompt null needs P >= 2)."
        )
    return int(prompt_shift) % P


# --------------------------------------------------------------------------- vectors


_tril_rows = pg.tril_rows


def _check_square(patterns: object, *, where: str, exclude_first: bool) -> None:
    if not isinstance(patterns, torch.Tensor) or patterns.ndim < 2:
        raise ValueError(
            f"{where}: expected a tensor [..., T, T], got "
            f"{getattr(patterns, 'shape', type(patterns).__name__)}."
        )
    T, T2 = patterns.shape[-2:]
    if T != T2 or (exclude_first and T < 2):
        raise ValueError(
            f"{where}: the last two axes must be square [T, T] with T >= 2 when "
            f"exclude_first=True, got {T} x {T2}."
        )


def pattern_vectors(patterns: torch.Tensor, *, exclude_first: bool = True) -> torch.Tensor:
    """Unit pattern vectors v(A) of the paper's Eq. 1.

    ``patterns``: ``[..., T, T]``. Returns ``[..., D]`` in the input dtype, the lower
    triangle of each pattern including the diagonal, row-major, L2-normalised;
    ``D = T(T+1)/2 - 1`` with ``exclude_first`` (query row 0 dropped), else ``T(T+1)/2``.
    An all-zero triangle stays the zero vector (its cosine with anything is then 0).
    """
    _check_square(patterns, where="pattern_vectors", exclude_first=exclude_first)
    v = _tril_rows(patterns, exclude_first=exclude_first, dtype=patterns.dtype)  # [..., D]
    norm = torch.linalg.vector_norm(v, dim=-1, keepdim=True)  # [..., 1]
    return v / torch.where(norm > 0, norm, torch.ones_like(norm))  # [..., D]


def _cosine_gram(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Cosines between rows of un-normalised float64 ``a`` ``[B, n, D]`` and ``b``
    ``[B, k, D]`` (``None``: ``b = a``): ``[B, n, k]``. Normalising the small Gram matrix
    instead of the vectors saves a pass over them; a zero row gives cosines 0."""
    gram = a @ (a if b is None else b).transpose(-1, -2)  # [B, n, k]
    na = torch.linalg.vector_norm(a, dim=-1)  # [B, n]
    nb = na if b is None else torch.linalg.vector_norm(b, dim=-1)  # [B, k]
    na = torch.where(na > 0, na, torch.ones_like(na))
    nb = torch.where(nb > 0, nb, torch.ones_like(nb))
    return gram / (na[..., :, None] * nb[..., None, :])  # [B, n, k]


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
        if np.ptp(a) == 0 or np.ptp(b) == 0:
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
