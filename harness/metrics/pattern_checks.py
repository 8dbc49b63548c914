"""Validation of captured attention patterns and the pattern vectors of the paper's Eq. 1.

``patterns``: float ``[M, L, P, H, T, T]`` post-softmax attention (seeds, layers, probe
prompts, heads, query, key). Shared by the head-stability metrics, their controls and the
circuit scores.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from harness.metrics import pattern_gram as pg

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
