"""Centred kernel alignment (CKA) between seeds: residual streams and head outputs.

Three kernels:

- ``linear``: feature-space formula ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),
  O(n d^2) time and O(d^2) extra memory; never builds an n x n Gram matrix. Float64.
- ``debiased``: linear kernel with the unbiased HSIC estimator of Song et al. (2012),
  rewritten in feature space (see :mod:`harness.metrics.hsic`), also O(n d^2). Float64.
- ``rbf``: Gaussian kernel exp(-||xi - xj||^2 / (2 sigma^2)), biased HSIC =
  tr(KHLH)/(n-1)^2. sigma^2 is the median squared distance of each matrix; by default
  (``bandwidth="median_all"``) the median over all n^2 entries of the distance matrix, its
  zero diagonal included, as in the reference ``rbf(x, threshold)`` of Kornblith et al.
  (2019) and the authors' code; ``bandwidth="median_pairs"`` takes it over distinct pairs
  only. This kernel needs n x n Gram matrices (float32, every inner product summed in
  float64), so rows are subsampled to ``max_rows`` (default 2048) with an explicitly passed
  ``numpy.random.Generator``.

The work runs in torch on the device the activations live on (numpy input: the CPU).
All three are invariant to orthogonal transforms and isotropic scaling of either argument,
and to translation (rows are centred first). Higher is more similar; linear and rbf lie in
[0, 1], debiased can be slightly negative and is ~0 for independent features.

Family helpers return pairwise seed matrices [M, M, ...] with a NaN diagonal; each unordered
seed pair is computed once and mirrored (CKA is symmetric).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch

from harness.metrics import hsic
from harness.metrics.hsic import BANDWIDTHS, Bandwidth, check_bandwidth

__all__ = [
    "KERNELS",
    "BANDWIDTHS",
    "linear_cka",
    "debiased_linear_cka",
    "rbf_cka",
    "pairwise_cka",
    "layer_cka",
    "head_output_cka",
    "head_cka",
    "stability_gap",
    "depth_trend",
]

Kernel = Literal["linear", "debiased", "rbf"]
KERNELS: tuple[str, ...] = ("linear", "debiased", "rbf")
DEFAULT_MAX_ROWS = 2048

ArrayLike = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------- input checks


def _to_float64(x: ArrayLike, *, name: str) -> np.ndarray:
    """Copy a torch tensor or numpy array to a float64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=np.float64)
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _as_tensor(x: ArrayLike, *, name: str) -> torch.Tensor:
    """float64 torch tensor on the device ``x`` lives on (numpy: the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float64))
    raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _matrix(x: ArrayLike, *, name: str, min_rows: int) -> torch.Tensor:
    a = _as_tensor(x, name=name)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array [n, d], got shape {tuple(a.shape)}")
    if a.shape[0] < min_rows:
        raise ValueError(
            f"{name}: this CKA estimator needs at least {min_rows} rows (samples), "
            f"got {a.shape[0]}; stack more probe tokens"
        )
    if a.shape[1] < 1:
        raise ValueError(f"{name}: needs at least one feature column, got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"{name}: contains NaN or inf; check the captured activations")
    return a


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y must have the same rows (the same probe tokens), got {x.shape[0]} and "
            f"{y.shape[0]}"
        )


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel: expected one of {KERNELS}, got {kernel!r}")


def _prep(x: torch.Tensor, *, kernel: str, sigma2: float | None, bandwidth: Bandwidth,
          name: str, out: torch.Tensor | None = None) -> hsic.Prep:
    return hsic.prep(x, kernel=kernel, sigma2=sigma2, bandwidth=bandwidth, name=name, out=out)


_cross = hsic.cross


# ----------------------------------------------------------------------------- single pair


def linear_cka(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear CKA of X [n, d1] and Y [n, d2] (rows are the same samples).

    Feature-space formula ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) in float64, which
    equals the Gram form HSIC(XX^T, YY^T) / sqrt(HSIC(.,.) HSIC(.,.)) exactly. Returns a
    float in [0, 1]. Raises ValueError for mismatched rows, non-finite input, or constant X/Y.
    """
    x = _matrix(X, name="X", min_rows=2)
    y = _matrix(Y, name="Y", min_rows=2)
    _check_pair(x, y)
    return _cross(_prep(x, kernel="linear", sigma2=None, bandwidth="median_all", name="X"),
                  _prep(y, kernel="linear", sigma2=None, bandwidth="median_all", name="Y"))


def debiased_linear_cka(X: ArrayLike, Y: ArrayLike) -> float:
    """Debiased linear CKA of X [n, d1] and Y [n, d2], n >= 4.

    HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L)) with K = XX^T, L = YY^T and HSIC_u the
    unbiased estimator of Song et al. (2012). Computed in feature space in O(n d^2) time
    (no n x n matrix), float64. About 0 for independent features, where the biased estimator
    is pulled up by d/n. Raises ValueError when a self-HSIC is not positive.
    """
    x = _matrix(X, name="X", min_rows=4)
    y = _matrix(Y, name="Y", min_rows=4)
    _check_pair(x, y)
    return _cross(_prep(x, kernel="debiased", sigma2=None, bandwidth="median_all", name="X"),
                  _prep(y, kernel="debiased", sigma2=None, bandwidth="median_all", name="Y"))


def _row_subsample(
    n: int, *, max_rows: int, generator: np.random.Generator | None
) -> np.ndarray | None:
    """Sorted row indices to keep, or None to keep all n rows."""
    if max_rows < 4:
        raise ValueError(f"max_rows: expected an int >= 4, got {max_rows}")
    if n <= max_rows:
        return None
    if not isinstance(generator, np.random.Generator):
        raise ValueError(
            f"RBF CKA: {n} rows exceed max_rows={max_rows}, so rows must be subsampled; pass "
            "generator=np.random.default_rng(<seed>) (randomness is explicit) or raise max_rows"
        )
    return np.sort(generator.choice(n, size=max_rows, replace=False))


def _take_rows(x: torch.Tensor, idx: np.ndarray | None) -> torch.Tensor:
    return x if idx is None else x[torch.as_tensor(idx, device=x.device)]


def rbf_cka(
    X: ArrayLike,
    Y: ArrayLike,
    *,
    sigma2: float | None = None,
    bandwidth: Bandwidth = "median_all",
    max_rows: int = DEFAULT_MAX_ROWS,
    generator: np.random.Generator | None = None,
) -> float:
    """RBF-kernel CKA of X [n, d1] and Y [n, d2].

    K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)); sigma^2 is the median squared distance of
    the rows, taken separately for X and for Y (which makes the value scale invariant):
    ``bandwidth="median_all"`` (default) over all n^2 entries of the distance matrix, zero
    diagonal included, as Kornblith et al.'s (2019) reference ``rbf(x, threshold=1)`` and
    the authors' code do; ``"median_pairs"`` over the distinct pairs i < j. A given
    ``sigma2`` is used for both matrices and overrides ``bandwidth``. HSIC is the biased
    tr(KHLH)/(n-1)^2 (float32 Gram matrices, float64 sums). It needs n x n matrices, so
    when n > max_rows the same ``max_rows`` rows of X and Y are drawn (without replacement)
    with ``generator``; without a generator that case raises ValueError.
    """
    check_bandwidth(bandwidth)
    x = _matrix(X, name="X", min_rows=2)
    y = _matrix(Y, name="Y", min_rows=2)
    _check_pair(x, y)
    idx = _row_subsample(x.shape[0], max_rows=max_rows, generator=generator)
    x, y = _take_rows(x, idx), _take_rows(y, idx)  # (max_rows, d)
    return _cross(_prep(x, kernel="rbf", sigma2=sigma2, bandwidth=bandwidth, name="X"),
                  _prep(y, kernel="rbf", sigma2=sigma2, bandwidth=bandwidth, name="Y"))


# ----------------------------------------------------------------------------- families


def _pairwise_from_mats(
    mats: Sequence[torch.Tensor], *, kernel: str, sigma2: float | None, bandwidth: Bandwidth,
    where: str, buffers: list[torch.Tensor] | None = None,
) -> np.ndarray:
    """[M, M] CKA of every pair of ``mats``; for rbf, ``buffers`` (one float32 [n, n] per
    matrix, reused from one layer to the next) hold the centred Gram matrices."""
    m = len(mats)
    if kernel == "rbf" and buffers is not None:
        n = mats[0].shape[0]
        if len(buffers) != m or buffers[0].shape != (n, n):
            buffers[:] = [torch.empty(n, n, dtype=torch.float32, device=mats[0].device)
                          for _ in range(m)]
    preps = [_prep(x, kernel=kernel, sigma2=sigma2, bandwidth=bandwidth, name=f"{where}seed {i}",
                   out=None if buffers is None or kernel != "rbf" else buffers[i])
             for i, x in enumerate(mats)]
    out = np.full((m, m), np.nan)  # (M, M)
    for a in range(m):
        for b in range(a + 1, m):
            out[a, b] = out[b, a] = _cross(preps[a], preps[b])
    return out


def _family(acts: ArrayLike, *, name: str, ndim: int, layout: str) -> ArrayLike:
    if not isinstance(acts, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(acts).__name__}")
    if acts.ndim != ndim:
        raise ValueError(f"{name}: expected shape {layout}, got {tuple(acts.shape)}")
    if acts.shape[0] < 2:
        raise ValueError(f"{name}: a family needs at least 2 seeds, got M={acts.shape[0]}")
    return acts


def pairwise_cka(
    acts: ArrayLike,
    *,
    kernel: Kernel = "linear",
    sigma2: float | None = None,
    bandwidth: Bandwidth = "median_all",
    max_rows: int = DEFAULT_MAX_ROWS,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """CKA between every pair of distinct seeds.

    acts: [M, n, d], row i of every seed is the same probe token.
    Returns float64 [M, M], symmetric, NaN on the diagonal (self-pairs are never computed).
    For ``rbf`` with n > max_rows one row subsample (drawn with ``generator``) is shared by
    all seeds, so every pair compares the same tokens.
    """
    _check_kernel(kernel)
    check_bandwidth(bandwidth)
    acts = _family(acts, name="acts", ndim=3, layout="[M, n, d]")
    mats = [_matrix(acts[i], name=f"acts[{i}]", min_rows=4 if kernel == "debiased" else 2)
            for i in range(acts.shape[0])]
    if kernel == "rbf":
        idx = _row_subsample(mats[0].shape[0], max_rows=max_rows, generator=generator)
        mats = [_take_rows(x, idx) for x in mats]  # (max_rows, d) each
    return _pairwise_from_mats(mats, kernel=kernel, sigma2=sigma2, bandwidth=bandwidth,
                               where="acts: ")


def _stack_tokens(x: ArrayLike, *, exclude_first: bool) -> ArrayLike:
    """[P, T, ...] -> [P * T', ...] with T' = T - 1 when position 0 is dropped."""
    if exclude_first:
        x = x[:, 1:]  # (P, T-1, ...)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def layer_cka(
    acts: ArrayLike,
    *,
    kernel: Kernel = "linear",
    exclude_first: bool = True,
    sigma2: float | None = None,
    bandwidth: Bandwidth = "median_all",
    max_rows: int = DEFAULT_MAX_ROWS,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Per-layer CKA between seeds of the stacked probe tokens.

    acts: [M, L, P, T, d] (e.g. resid['pre'|'mid'|'post'], or z reshaped to H*d_head; see
    ``head_output_cka``). Per layer, rows are the P*T probe tokens (P*(T-1) without position
    0 when ``exclude_first``, the attention sink that every seed shares).
    Returns float64 [M, M, L], NaN on the seed diagonal. For ``rbf`` one row subsample is
    drawn once and used for every layer and seed; ``bandwidth`` as in :func:`rbf_cka`.
    """
    _check_kernel(kernel)
    check_bandwidth(bandwidth)
    acts = _family(acts, name="acts", ndim=5, layout="[M, L, P, T, d]")
    m, n_layers, _, n_pos, _ = acts.shape
    if exclude_first and n_pos < 2:
        raise ValueError(f"acts: exclude_first=True needs T >= 2 positions, got T={n_pos}")
    out = np.full((m, m, n_layers), np.nan)  # (M, M, L)
    idx = None
    buffers: list[torch.Tensor] = []  # rbf: the seeds' Gram matrices, reused across layers
    for layer in range(n_layers):
        mats = [
            _matrix(_stack_tokens(acts[i, layer], exclude_first=exclude_first),
                    name=f"acts[{i}, layer {layer}]", min_rows=4 if kernel == "debiased" else 2)
            for i in range(m)
        ]  # M x (P*T', d)
        if kernel == "rbf":
            if layer == 0:
                idx = _row_subsample(mats[0].shape[0], max_rows=max_rows, generator=generator)
            mats = [_take_rows(x, idx) for x in mats]
        out[:, :, layer] = _pairwise_from_mats(
            mats, kernel=kernel, sigma2=sigma2, bandwidth=bandwidth, where=f"layer {layer}, ",
            buffers=buffers)
    return out


def head_output_cka(
    z: ArrayLike,
    *,
    kernel: Kernel = "linear",
    exclude_first: bool = True,
    sigma2: float | None = None,
    bandwidth: Bandwidth = "median_all",
    max_rows: int = DEFAULT_MAX_ROWS,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Per-layer CKA of all heads' outputs concatenated: z [M, L, P, T, H, d_head] -> [M, M, L].

    CKA is invariant to the order of the concatenated heads (a permutation is orthogonal),
    so no head matching is needed.
    """
    z = _family(z, name="z", ndim=6, layout="[M, L, P, T, H, d_head]")
    m, n_layers, n_prompts, n_pos, n_heads, d_head = z.shape
    flat = z.reshape(m, n_layers, n_prompts, n_pos, n_heads * d_head)  # (M, L, P, T, H*dh)
    return layer_cka(flat, kernel=kernel, exclude_first=exclude_first, sigma2=sigma2,
                     bandwidth=bandwidth, max_rows=max_rows, generator=generator)


def head_cka(
    z: ArrayLike,
    match: ArrayLike,
    *,
    kernel: Kernel = "linear",
    exclude_first: bool = True,
    sigma2: float | None = None,
    bandwidth: Bandwidth = "median_all",
    max_rows: int = DEFAULT_MAX_ROWS,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """CKA of matched single heads across seeds.

    z: [M, L, P, T, H, d_head]; match: int [M, M, L, H], match[a, m, l, h] = the head of seed
    m matched to head h of seed a in layer l (diagonal a == m ignored).
    Returns float64 [M, M, L, H]: out[a, m, l, h] = CKA(z[a, l, :, :, h], z[m, l, :, :,
    match[a, m, l, h]]), NaN where a == m. Not symmetric in (a, m) unless the matching is.
    Memory: for ``rbf`` it holds 2*H centred Gram matrices of max_rows^2 float64 at a time
    (2*8*2048^2*8 B = 512 MiB for 8 heads); lower max_rows for heads if that is too much.
    """
    _check_kernel(kernel)
    check_bandwidth(bandwidth)
    z = _family(z, name="z", ndim=6, layout="[M, L, P, T, H, d_head]")
    m, n_layers, _, n_pos, n_heads, _ = z.shape
    if exclude_first and n_pos < 2:
        raise ValueError(f"z: exclude_first=True needs T >= 2 positions, got T={n_pos}")
    mt = match.detach().cpu().numpy() if isinstance(match, torch.Tensor) else np.asarray(match)
    if mt.shape != (m, m, n_layers, n_heads):
        raise ValueError(
            f"match: expected shape [M, M, L, H] = {(m, m, n_layers, n_heads)} to fit z, "
            f"got {tuple(mt.shape)}"
        )
    off = ~np.eye(m, dtype=bool)  # (M, M)
    mt_off = mt[off]  # (M*(M-1), L, H)
    if not np.issubdtype(mt.dtype, np.integer) and not np.all(np.mod(mt_off, 1) == 0):
        raise ValueError(f"match: expected integer head indices, got dtype {mt.dtype}")
    if mt_off.size and (mt_off.min() < 0 or mt_off.max() >= n_heads):
        raise ValueError(
            f"match: off-diagonal head indices must lie in [0, {n_heads}), got range "
            f"[{mt_off.min()}, {mt_off.max()}]"
        )
    mt = np.where(off[:, :, None, None], mt, 0).astype(np.int64)  # (M, M, L, H)

    min_rows = 4 if kernel == "debiased" else 2
    out = np.full((m, m, n_layers, n_heads), np.nan)  # (M, M, L, H)
    idx = None
    for layer in range(n_layers):
        def head_mat(seed: int, head: int) -> torch.Tensor:
            x = _matrix(_stack_tokens(z[seed, layer, :, :, head], exclude_first=exclude_first),
                        name=f"z[{seed}, layer {layer}, head {head}]", min_rows=min_rows)
            return _take_rows(x, idx)  # (n, d_head)

        if kernel == "rbf" and layer == 0:
            n_rows = head_mat(0, 0).shape[0]
            idx = _row_subsample(n_rows, max_rows=max_rows, generator=generator)

        def prep(seed: int, head: int) -> hsic.Prep:
            return _prep(head_mat(seed, head), kernel=kernel, sigma2=sigma2, bandwidth=bandwidth,
                         name=f"layer {layer}, seed {seed}, head {head}")

        # Hold seed a's heads while visiting every later seed b; each unordered seed pair
        # reads both matchings (a->b and b->a), so each head prep of b is built once per a.
        for a in range(m):
            pa = [prep(a, h) for h in range(n_heads)]
            for b in range(a + 1, m):
                pb: dict[int, hsic.Prep] = {}
                for h in range(n_heads):
                    hb = int(mt[a, b, layer, h])
                    if hb not in pb:
                        pb[hb] = prep(b, hb)
                    out[a, b, layer, h] = _cross(pa[h], pb[hb])
                for h in range(n_heads):
                    ha = int(mt[b, a, layer, h])
                    if h not in pb:
                        pb[h] = prep(b, h)
                    out[b, a, layer, h] = _cross(pa[ha], pb[h])
    return out


# ----------------------------------------------------------------------------- summaries


def stability_gap(resid_pairwise: ArrayLike, head_pairwise: ArrayLike) -> np.ndarray:
    """Residual-over-head gap, like for like: resid [M, M, L] - head [M, M, L] -> [M, M, L].

    Positive where the residual stream is more stable across seeds than the heads writing
    into it. The NaN diagonal stays NaN.
    """
    r = _to_float64(resid_pairwise, name="resid_pairwise")
    h = _to_float64(head_pairwise, name="head_pairwise")
    if r.ndim != 3 or r.shape[0] != r.shape[1]:
        raise ValueError(f"resid_pairwise: expected [M, M, L], got shape {tuple(r.shape)}")
    if h.shape != r.shape:
        raise ValueError(
            f"head_pairwise: shape {tuple(h.shape)} must equal resid_pairwise {tuple(r.shape)} "
            "(same seeds and layers)"
        )
    return r - h  # (M, M, L)


def depth_trend(values: ArrayLike) -> float:
    """Least-squares slope of per-layer values [L] against relative depth l / (L - 1) in [0, 1].

    The slope is the change from the first to the last layer along the fitted line, so
    models of different depth are comparable. Needs L >= 2 finite values.
    """
    v = _to_float64(values, name="values")
    if v.ndim != 1 or v.shape[0] < 2:
        raise ValueError(f"values: expected a 1-D array of >= 2 per-layer values, got shape "
                         f"{tuple(v.shape)}")
    if not np.isfinite(v).all():
        raise ValueError(
            "values: contains NaN or inf; average the family (stats.family_mean) first")
    x = np.arange(v.shape[0]) / (v.shape[0] - 1)  # (L,)
    xc = x - x.mean()
    return float(np.sum(xc * (v - v.mean())) / np.sum(xc * xc))
