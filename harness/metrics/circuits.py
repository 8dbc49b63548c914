"""Circuit universality: previous-token and induction heads in every seed.

Pure functions over captured ``patterns`` ``[M, L, P, H, T, T]`` (seeds, layers, probe
prompts, heads, query, key) and probe ``tokens`` int64 ``[P, T]``; scores are numpy
float64 ``[M, L, H]``.

Induction, exactly as scored here: at position ``t`` of prompt ``p`` the *induction
targets* are the positions ``j + 1`` for every earlier ``j <= t - 2`` with
``tokens[p, j] == tokens[p, t]`` (the token that followed an earlier occurrence of the
current token). ``j = t - 1`` is left out because its target would be ``t`` itself, i.e.
self-attention. A position counts only if it has at least one target; its score is the
attention mass on the union of its targets; the head's score is the mean over all counted
(prompt, position). On a sequence repeated twice (period n >= 2) the counted positions are
exactly the second copy and the target is ``t - n + 1``. Note that for an earlier
occurrence at ``j = t - 2`` the target is ``t - 1``, the previous token: use probe prompts
of repeated random tokens so the two circuits are not confounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.metrics import pattern_gram as _pg
from harness.metrics.heads import check_patterns, pattern_vectors

__all__ = [
    "InductionHeadSimilarity",
    "previous_token_score",
    "induction_targets",
    "induction_score",
    "induction_heads",
    "every_seed_has_induction_head",
    "induction_head_similarity",
]


def previous_token_score(patterns: torch.Tensor) -> np.ndarray:
    """Mean attention from position t to t - 1 over t = 1..T-1 and prompts.

    ``patterns``: ``[M, L, P, H, T, T]`` with T >= 2. Returns ``[M, L, H]`` in [0, 1];
    1 for a head that always attends to the previous token."""
    patterns = check_patterns(patterns, where="previous_token_score", exclude_first=True)
    sub = torch.diagonal(patterns, offset=-1, dim1=-2, dim2=-1)  # [M, L, P, H, T-1]
    return sub.to(torch.float64).mean(dim=(2, 4)).numpy()  # [M, L, H]


def induction_targets(tokens: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Induction target mask (see the module docstring) for ``tokens`` int ``[P, T]``.

    Returns bool ``[P, T, T]``: ``mask[p, t, k]`` is True iff ``1 <= k <= t - 1`` and
    ``tokens[p, k - 1] == tokens[p, t]``."""
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2 or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(
            f"induction_targets: tokens must be an integer tensor [P, T], got dtype "
            f"{tokens.dtype} and shape {tuple(tokens.shape)}."
        )
    P, T = tokens.shape
    same = tokens[:, :, None] == tokens[:, None, :]  # [P, T(t), T(j)]
    mask = torch.zeros(P, T, T, dtype=torch.bool)  # [P, T(t), T(k)]
    mask[:, :, 1:] = same[:, :, :-1]  # k = j + 1
    strictly_below = torch.ones(T, T, dtype=torch.bool).tril(diagonal=-1)  # [T, T], k < t
    return mask & strictly_below  # [P, T, T]


def induction_score(patterns: torch.Tensor, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
    """Induction score per head: mean attention mass on induction targets.

    ``patterns``: ``[M, L, P, H, T, T]``; ``tokens``: int ``[P, T]`` (the probe prompts the
    patterns were captured on). Returns ``[M, L, H]`` in [0, 1]. Raises ValueError if no
    position of any prompt has an earlier occurrence of its token (nothing to score).
    """
    where = "induction_score"
    patterns = check_patterns(patterns, where=where, exclude_first=True)
    M, L, P, H, T, _ = patterns.shape
    tokens = torch.as_tensor(tokens)
    if tuple(tokens.shape) != (P, T):
        raise ValueError(
            f"{where}: tokens must have shape [P, T] = [{P}, {T}] to match patterns "
            f"{tuple(patterns.shape)}, got {tuple(tokens.shape)}; pass the probe tokens "
            f"the patterns were captured on."
        )
    mask = induction_targets(tokens)  # [P, T, T]
    counted = int(mask.any(dim=-1).sum())
    if counted == 0:
        raise ValueError(
            f"{where}: no position in the {P} probe prompts repeats an earlier token "
            f"(at distance >= 2), so there is nothing to score; probe with repeated "
            f"random-token sequences."
        )
    # The targets are sparse (a few per position), so gather exactly those entries
    # instead of multiplying whole patterns by the mask; sums are float64.
    p_idx, t_idx, k_idx = mask.nonzero(as_tuple=True)  # [n] each
    total = torch.zeros(M, L, H, dtype=torch.float64)  # [M, L, H]
    step = max(1, _pg._CHUNK_ELEMENTS // (M * L * H))
    for start in range(0, p_idx.numel(), step):
        sel = slice(start, start + step)
        vals = patterns[:, :, p_idx[sel], :, t_idx[sel], k_idx[sel]]  # [n', M, L, H]
        total += vals.sum(dim=0, dtype=torch.float64)  # [M, L, H]
    return (total / counted).numpy()  # [M, L, H]


def _check_scores(scores: np.ndarray, *, where: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 3 or 0 in scores.shape:
        raise ValueError(
            f"{where}: scores must have shape [M, L, H] (e.g. from induction_score), got "
            f"{scores.shape}."
        )
    return scores


def induction_heads(scores: np.ndarray, *, threshold: float = 0.3) -> np.ndarray:
    """Which heads are induction heads: bool ``[M, L, H]``, ``scores >= threshold``.
    ``scores``: ``[M, L, H]`` from :func:`induction_score`."""
    return _check_scores(scores, where="induction_heads") >= threshold


def every_seed_has_induction_head(scores: np.ndarray, *, threshold: float = 0.3) -> bool:
    """True iff every seed has at least one head with score >= ``threshold``.
    ``scores``: ``[M, L, H]``."""
    heads = induction_heads(scores, threshold=threshold)  # [M, L, H]
    return bool(heads.any(axis=(1, 2)).all())


@dataclass(frozen=True)
class InductionHeadSimilarity:
    """Similarity across seeds of each seed's best induction head.

    heads: [M, 2] int (layer, head) of the best-scoring head per seed
    best_scores: [M] their induction scores
    pairwise: [M, M] head similarity C between the seeds' best heads (NaN diagonal)
    mean: mean over ordered pairs of distinct seeds
    """

    heads: np.ndarray
    best_scores: np.ndarray
    pairwise: np.ndarray
    mean: float


def induction_head_similarity(
    patterns: torch.Tensor,
    scores: np.ndarray,
    *,
    exclude_first: bool = True,
) -> InductionHeadSimilarity:
    """Head similarity (the ``C`` of :func:`harness.metrics.heads.similarity`) restricted
    to each seed's best induction head, its layer taken from the argmax; when the best
    heads sit in different layers this is the matching entry of
    :func:`~harness.metrics.heads.cross_layer_similarity`.

    ``patterns``: ``[M, L, P, H, T, T]`` with M >= 2; ``scores``: ``[M, L, H]``. Ties go
    to the lowest (layer, head). Whether the best heads are induction heads at all is
    :func:`induction_heads`' question: check it before reading this number."""
    where = "induction_head_similarity"
    patterns = check_patterns(patterns, where=where, min_seeds=2, exclude_first=exclude_first)
    M, L, P, H, T, _ = patterns.shape
    scores = _check_scores(scores, where=where)
    if scores.shape != (M, L, H):
        raise ValueError(
            f"{where}: scores must have shape [M, L, H] = {(M, L, H)} to match patterns "
            f"{tuple(patterns.shape)}, got {scores.shape}."
        )
    best = scores.reshape(M, L * H).argmax(axis=1)  # [M]
    layer, head = best // H, best % H  # [M] each
    seeds = torch.arange(M)
    A = patterns[seeds, torch.as_tensor(layer), :, torch.as_tensor(head)]  # [M, P, T, T]
    v = pattern_vectors(A.to(torch.float64), exclude_first=exclude_first)  # [M, P, D]
    pairwise = (torch.einsum("apd,mpd->am", v, v) / P).numpy()  # [M, M]
    eye = np.eye(M, dtype=bool)
    pairwise[eye] = np.nan
    return InductionHeadSimilarity(
        heads=np.stack([layer, head], axis=1),
        best_scores=scores.reshape(M, L * H)[np.arange(M), best],
        pairwise=pairwise,
        mean=float(pairwise[~eye].mean()),
    )
