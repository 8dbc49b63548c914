"""Cosine Gram matrices of attention-pattern vectors, chunked over probe prompts.

``patterns``: ``[M, L, P, H, T, T]`` (seeds, layers, prompts, heads, query, key). The
pattern vector of one head on one prompt is the lower triangle of its pattern including the
diagonal, row-major, query row 0 dropped with ``exclude_first`` (paper Eq. 1); every
function here returns ``mean_p cos(v(p), w((p + shift) mod P))`` for some set of vector
pairs.

The work runs on the device the patterns live on. Triangles are copied in the work dtype
(float32, or float64 for float64 input), dot products are float32 matrix products (TF32
off on CUDA) scaled by the vector norms, and the sum over prompts is float64 from one chunk
to the next. Relative to an all-float64 computation this moves a similarity by ~1e-7.
Chunks hold about ``_CHUNK_ELEMENTS`` vector elements, so memory stays bounded (~32 MB
of triangles per chunk in float32) whatever the number of prompts. Results come back as
float64 CPU tensors (they are small).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch

__all__ = ["tril_rows", "prompt_chunks", "same_layer", "cross_layer", "cross_layer_pair",
           "same_layer_of"]

# Elements of pattern vectors materialised at once.
_CHUNK_ELEMENTS = 8 * 1024 * 1024


def work_dtype(patterns: torch.Tensor) -> torch.dtype:
    return torch.float64 if patterns.dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def _exact_float32(device: torch.device) -> Iterator[None]:
    """Full float32 matrix products: TF32 (10-bit mantissa) would cost ~1e-3 in a cosine."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


class _Buffer:
    """A reusable flat work buffer. Large tensors are mapped afresh by each allocation, and
    touching fresh pages costs more than the copy into them (2-6x on a chunk of patterns),
    so a chunk loop takes its work space from here instead."""

    def __init__(self) -> None:
        self._flat: torch.Tensor | None = None

    def take(self, shape: tuple[int, ...], dtype: torch.dtype,
             device: torch.device) -> torch.Tensor:
        n = math.prod(shape)
        f = self._flat
        if f is None or f.numel() < n or f.dtype != dtype or f.device != device:
            f = self._flat = torch.empty(n, dtype=dtype, device=device)
        return f[:n].view(shape)


def prompt_chunks(P: int, per_prompt_elements: int) -> Iterator[slice]:
    """Slices over the prompt axis so that one chunk holds ~_CHUNK_ELEMENTS elements."""
    step = max(1, _CHUNK_ELEMENTS // max(1, per_prompt_elements))
    for start in range(0, P, step):
        yield slice(start, min(P, start + step))


def tril_rows(
    patterns: torch.Tensor,
    *,
    exclude_first: bool,
    dtype: torch.dtype,
    lead_order: tuple[int, ...] | None = None,
    buffer: _Buffer | None = None,
) -> torch.Tensor:
    """Lower triangles incl. diagonal, row-major, NOT normalised.

    ``patterns``: ``[*lead, T, T]``. Returns a new contiguous ``[*lead', D]`` tensor of
    ``dtype`` on the same device, ``lead'`` being ``lead`` permuted by ``lead_order``. Row
    ``q`` of the triangle is contiguous in memory, so one strided copy per query row (T
    copies, each over all leading axes at once) beats a flat ``index_select`` ~3x and
    converts the dtype in the same pass. With ``buffer`` the result is a view of its
    storage, valid until the buffer is taken again.
    """
    T = patterns.shape[-1]
    n_lead = patterns.ndim - 2
    if lead_order is not None:
        patterns = patterns.permute(*lead_order, n_lead, n_lead + 1)  # [*lead', T, T]
    first = 1 if exclude_first else 0
    D = T * (T + 1) // 2 - first
    shape = (*patterns.shape[:-2], D)
    out = (torch.empty(shape, dtype=dtype, device=patterns.device) if buffer is None
           else buffer.take(shape, dtype, patterns.device))
    offset = 0
    for q in range(first, T):
        out[..., offset : offset + q + 1] = patterns[..., q, : q + 1]  # [*lead', q+1]
        offset += q + 1
    return out


def _prompts(patterns: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """Prompts ``(start + i) mod P`` for ``i < count``: ``[M, L, count, H, T, T]``, a view
    unless the range wraps around the end of the prompt axis."""
    P = patterns.shape[2]
    start %= P
    if start + count <= P:
        return patterns[:, :, start : start + count]
    parts, left = [], count
    while left > 0:
        take = min(left, P - start)
        parts.append(patterns[:, :, start : start + take])
        left -= take
        start = 0
    return torch.cat(parts, dim=2)


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    n = torch.linalg.vector_norm(v, dim=-1)  # [...]
    return torch.where(n > 0, n, torch.ones_like(n))  # a zero vector gets cosines 0


def _cos(a: torch.Tensor, na: torch.Tensor, b: torch.Tensor, nb: torch.Tensor) -> torch.Tensor:
    """Sum over the batch axis of cosines: a [c, n, D], b [c, k, D] -> float64 [n, k]."""
    g = torch.bmm(a, b.transpose(1, 2))  # [c, n, k]
    g /= na[:, :, None] * nb[:, None, :]
    return g.sum(dim=0).to(torch.float64)  # [n, k]; within a chunk a few terms only


def _chunk_vectors(
    patterns: torch.Tensor, chunk: slice, shift: int, *, exclude_first: bool,
    lead_order: tuple[int, ...], buffers: tuple[_Buffer, _Buffer],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triangles of the chunk's prompts and of the prompts ``shift`` further on (None for
    shift 0). When the two ranges overlap they are copied once, as one range."""
    c = chunk.stop - chunk.start
    kw = dict(exclude_first=exclude_first, dtype=work_dtype(patterns), lead_order=lead_order)
    p_axis = lead_order.index(2)
    if shift == 0:
        return tril_rows(patterns[:, :, chunk], buffer=buffers[0], **kw), None
    if shift < c:
        v = tril_rows(_prompts(patterns, chunk.start, c + shift), buffer=buffers[0], **kw)
        return v.narrow(p_axis, 0, c), v.narrow(p_axis, shift, c)
    va = tril_rows(patterns[:, :, chunk], buffer=buffers[0], **kw)
    vb = tril_rows(_prompts(patterns, chunk.start + shift, c), buffer=buffers[1], **kw)
    return va, vb


def same_layer(
    patterns: torch.Tensor, *, exclude_first: bool, shift: int, anchor: int | None = None
) -> torch.Tensor:
    """``C[l, a, h, m, g] = mean_p cos(v(A^a_{l,h}(p)), v(A^m_{l,g}(p + shift)))``: float64
    ``[L, M, H, M, H]``. With ``anchor`` only the blocks ``a == anchor`` are computed (and,
    at shift 0, their mirror ``m == anchor``); every other entry is NaN."""
    M, L, P, H, T, _ = patterns.shape
    D = T * (T + 1) // 2 - (1 if exclude_first else 0)
    MH = M * H
    rows = slice(0, MH) if anchor is None else slice(anchor * H, (anchor + 1) * H)
    n_rows = rows.stop - rows.start
    acc = torch.zeros(L, n_rows, MH, dtype=torch.float64, device=patterns.device)
    lead = (1, 2, 0, 3)  # [L, c, M, H, D]
    with _exact_float32(patterns.device):
        buffers = (_Buffer(), _Buffer())
        for chunk in prompt_chunks(P, (2 if shift else 1) * M * L * H * D):
            c = chunk.stop - chunk.start
            va, vb = _chunk_vectors(patterns, chunk, shift, exclude_first=exclude_first,
                                    lead_order=lead, buffers=buffers)
            va = va.reshape(L * c, MH, D)  # [L*c, MH, D]
            vb = va if vb is None else vb.reshape(L * c, MH, D)
            na = _safe_norm(va)  # [L*c, MH]
            nb = na if vb is va else _safe_norm(vb)
            g = torch.bmm(va[:, rows], vb.transpose(1, 2))  # [L*c, n_rows, MH]
            g /= na[:, rows, None] * nb[:, None, :]
            acc += g.reshape(L, c, n_rows, MH).sum(dim=1).to(torch.float64)
    acc = (acc / P).cpu()
    if anchor is None:
        if shift == 0:  # exactly symmetric (float32 products of a.b and b.a differ by ~1e-7)
            acc = 0.5 * (acc + acc.transpose(1, 2))
        return acc.reshape(L, M, H, M, H)
    C = torch.full((L, M, H, M, H), float("nan"), dtype=torch.float64)
    C[:, anchor] = acc.reshape(L, H, M, H)
    if shift == 0:
        C[:, :, :, anchor] = C[:, anchor].permute(0, 2, 3, 1)  # [L, M, H, H(anchor)]
    return C


def cross_layer(patterns: torch.Tensor, *, exclude_first: bool, shift: int) -> torch.Tensor:
    """``X[a, l, h, m, k, g] = mean_p cos(v(A^a_{l,h}(p)), v(A^m_{k,g}(p + shift)))``:
    float64 ``[M, L, H, M, L, H]``. At shift 0, X is symmetric and only the seed blocks
    ``a <= m`` are multiplied."""
    X, _ = cross_layer_pair(patterns, exclude_first=exclude_first, shifts=(shift,))
    return X


def cross_layer_pair(
    patterns: torch.Tensor, *, exclude_first: bool, shifts: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`cross_layer` for shift ``shifts[0]`` (and ``shifts[1]`` if given) in one pass
    over the patterns: the triangles of a chunk are copied once for both."""
    M, L, P, H, T, _ = patterns.shape
    D = T * (T + 1) // 2 - (1 if exclude_first else 0)
    N, LH = M * L * H, L * H
    dev = patterns.device
    shift = max(shifts)  # the pass is driven by the larger shift; 0 is read off the chunk
    accs = [torch.zeros(N, N, dtype=torch.float64, device=dev) for _ in shifts]
    lead = (2, 0, 1, 3)  # [c, M, L, H, D]
    buffers, spare = (_Buffer(), _Buffer()), (_Buffer(), _Buffer())
    with _exact_float32(dev):
        for chunk in prompt_chunks(P, (2 if shift else 1) * N * D):
            c = chunk.stop - chunk.start
            va, vs = _chunk_vectors(patterns, chunk, shift, exclude_first=exclude_first,
                                    lead_order=lead, buffers=buffers)
            va = va.reshape(c, N, D)  # [c, N, D]
            na = _safe_norm(va)  # [c, N]
            for acc, s in zip(accs, shifts):
                if s == 0:
                    for a in range(M):  # symmetric: blocks a <= m only
                        r, rest = slice(a * LH, (a + 1) * LH), slice(a * LH, N)
                        acc[r, rest] += _cos(va[:, r], na[:, r], va[:, rest], na[:, rest])
                    continue
                if s == shift:
                    vb = vs.reshape(c, N, D)
                else:
                    _, vb = _chunk_vectors(patterns, chunk, s, exclude_first=exclude_first,
                                           lead_order=lead, buffers=spare)
                    vb = vb.reshape(c, N, D)
                acc += _cos(va, na, vb, _safe_norm(vb))
    out = []
    for acc, s in zip(accs, shifts):
        if s == 0:
            for a in range(1, M):  # mirror the upper seed blocks
                r = slice(a * LH, (a + 1) * LH)
                acc[r, : a * LH] = acc[: a * LH, r].T
            acc = 0.5 * (acc + acc.T)  # and make the diagonal blocks exactly symmetric
        out.append((acc / P).cpu().reshape(M, L, H, M, L, H))
    return out[0], (out[1] if len(out) > 1 else None)


def same_layer_of(X: torch.Tensor) -> torch.Tensor:
    """The same-layer blocks of a cross-layer ``X`` [M, L, H, M, L, H] as ``C``
    [L, M, H, M, H] (what :func:`same_layer` computes directly)."""
    return torch.diagonal(X, dim1=1, dim2=4).permute(4, 0, 1, 2, 3).contiguous()  # [L, M, H, M, H]
