"""HSIC terms of the CKA kernels, in torch on the device the activations live on.

Every kernel splits into a per-matrix *prep* (once per seed: centring, Gram matrix, its
self-similarity) and a cheap *cross* term per pair, so a family of M seeds costs M preps
and M(M-1)/2 crosses.

Precision. ``linear`` and ``debiased`` work in float64 throughout (their d x d products
are small). ``rbf`` builds n x n matrices, so its Gram matrices are float32 (half the
memory traffic), centred with float64 row means; every n x n inner product is a float32
dot product per row (n terms) summed over rows in float64. Relative to an all-float64
computation that moves CKA by ~1e-7.

RBF bandwidth. ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with sigma^2 the median
squared distance, per matrix. ``bandwidth="median_all"`` takes the median over all n^2
entries of the distance matrix, its zero diagonal included: the convention of the
reference ``rbf(x, threshold)`` of Kornblith et al. (2019, "Similarity of Neural Network
Representations Revisited"; threshold 1) and of the authors' code. ``"median_pairs"``
takes it over the n(n-1)/2 distinct pairs i < j only, which gives a slightly larger
sigma^2 (the n zeros of the diagonal no longer pull the median down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = ["BANDWIDTHS", "Bandwidth", "Prep", "check_bandwidth", "median_sq_distance",
           "prep", "cross"]

Bandwidth = Literal["median_all", "median_pairs"]
BANDWIDTHS: tuple[str, ...] = ("median_all", "median_pairs")

# Selections over at most this many values sort them outright.
_SORT_LIMIT = 1 << 16
# Sample size of the bracketing step of the exact median.
_SAMPLE = 1 << 16


def check_bandwidth(bandwidth: object) -> None:
    if bandwidth not in BANDWIDTHS:
        raise ValueError(
            f"bandwidth: expected one of {BANDWIDTHS} (median squared distance over all "
            f"n^2 entries, or over distinct pairs), got {bandwidth!r}"
        )


@dataclass(frozen=True)
class Prep:
    kernel: str
    feats: torch.Tensor  # linear/debiased: centred X float64 [n, d]; rbf: HKH float32 [n, n]
    sq_norms: torch.Tensor | None  # debiased: row squared norms k_i float64 [n]
    self_sim: float  # linear: ||Xc^T Xc||_F; debiased: HSIC_u(X, X); rbf: ||HKH||_F


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=0, keepdim=True)  # [n, d]


def _hsic_unbiased(
    xc: torch.Tensor, yc: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor
) -> float:
    """Song et al. (2012) unbiased HSIC for linear kernels, in feature space.

    With K~ = K - diag(K) (here K = Xc Xc^T, centred rows so K 1 = 0):
      tr(K~ L~)       = ||Xc^T Yc||_F^2 - k.l
      1^T K~ 1        = -sum(k)
      1^T K~ L~ 1     = (K~ 1).(L~ 1) = k.l
    HSIC_u = [tr(K~L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)).
    The estimator is invariant to translating the rows, so centring first changes nothing
    but the rounding error.
    """
    n = xc.shape[0]
    c = xc.T @ yc  # [d1, d2]
    kl = float(kx @ ky)
    tr = float((c * c).sum()) - kl
    sk, sl = float(kx.sum()), float(ky.sum())
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl / (n - 2)) / (n * (n - 3))


def _row_dot_sum(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum_ij a_ij b_ij of float32 [n, n]: float32 dot per row, float64 over rows."""
    return float(torch.linalg.vecdot(a, b).sum(dtype=torch.float64))  # [n] -> scalar


def _order_statistics(flat: torch.Tensor, ranks: list[int]) -> list[float]:
    """Exact values at 0-based ``ranks`` of sorted 1-D ``flat``.

    Instead of sorting n values, a strided sample brackets the wanted ranks (4 standard
    deviations of the sample's rank error either side), one pass counts the values below
    the bracket and the ~1 % inside it are sorted. If the bracket misses (possible for
    adversarial orderings), the whole vector is sorted: the result is exact either way,
    only the time differs. CPU tensors go through numpy, whose comparisons and counts are
    several times faster than torch's on one thread.
    """
    n = flat.numel()
    lib = np if flat.device.type == "cpu" else torch
    v = flat.numpy() if lib is np else flat
    if n > _SORT_LIMIT:
        step = (n // _SAMPLE) | 1  # odd: a power-of-two row length is crossed, not sampled by column
        sample = lib.sort(v[::step])
        sample = sample if lib is np else sample.values  # [s]
        s = sample.shape[0]
        margin = 2.0 * math.sqrt(s) + 8.0  # 4 sd of a binomial count at p = 1/2
        i_lo = math.floor(min(ranks) * s / n - margin)
        i_hi = math.ceil(max(ranks) * s / n + margin)
        # plain floats: torch compares with a 0-d tensor on a ~20x slower path
        lo = float(sample[i_lo]) if i_lo >= 0 else -math.inf
        hi = float(sample[i_hi]) if i_hi < s else math.inf
        below = int(lib.count_nonzero(v < lo))
        band = v[(v >= lo) & (v <= hi)]  # [~8 sd / sqrt(s) of n]
        if below <= min(ranks) and max(ranks) < below + band.shape[0]:
            band = lib.sort(band)
            band = band if lib is np else band.values
            return [float(band[r - below]) for r in ranks]
    ordered = flat.sort().values
    return [float(ordered[r]) for r in ranks]


def median_sq_distance(d2: torch.Tensor, *, bandwidth: Bandwidth) -> float:
    """Median of a squared-distance matrix ``d2`` [n, n] (zero diagonal, entries >= 0).

    ``median_all``: over all n^2 entries, as ``numpy.median(d2)``. ``median_pairs``: over
    the distinct pairs i < j. Both are exact; an even count averages the two middle values.
    """
    check_bandwidth(bandwidth)
    n = d2.shape[0]
    # the diagonal zeros are the n smallest entries, so the off-diagonal order statistics
    # are those of the whole matrix shifted by n (each pair appears twice off the diagonal,
    # which leaves the median of the pairs unchanged)
    count, offset = (n * n, 0) if bandwidth == "median_all" else (n * (n - 1), n)
    ranks = [count // 2] if count % 2 else [count // 2 - 1, count // 2]
    vals = _order_statistics(d2.reshape(-1), [offset + r for r in ranks])
    return sum(vals) / len(vals)


def _rbf_gram(xc: torch.Tensor, *, sigma2: float | None, bandwidth: Bandwidth,
              name: str, out: torch.Tensor | None) -> torch.Tensor:
    """Uncentred float32 RBF Gram matrix [n, n] of centred float64 rows ``xc`` [n, d],
    written into ``out`` when given (a reused buffer spares fresh pages)."""
    n = xc.shape[0]
    x32 = xc.to(torch.float32)  # [n, d]
    sq = (xc * xc).sum(dim=1).to(torch.float32)  # [n]
    if out is None or out.shape != (n, n) or out.dtype != torch.float32:
        out = torch.empty(n, n, dtype=torch.float32, device=xc.device)
    d2 = torch.addmm(sq[None, :], x32, x32.T, alpha=-2.0, out=out)  # [n, n]: |x_j|^2 - 2 x_i.x_j
    d2.add_(sq[:, None]).clamp_min_(0.0)  # rounding can leave tiny negatives
    d2.fill_diagonal_(0.0)
    s2 = median_sq_distance(d2, bandwidth=bandwidth) if sigma2 is None else float(sigma2)
    if not s2 > 0.0:
        raise ValueError(
            f"{name}: RBF bandwidth sigma^2 = {s2:.3g}; the median squared distance is 0 when "
            "most rows are identical. Pass sigma2= explicitly or check the activations."
        )
    return d2.mul_(-0.5 / s2).exp_()  # [n, n]


def prep(x: torch.Tensor, *, kernel: str, sigma2: float | None = None,
         bandwidth: Bandwidth = "median_all", name: str,
         out: torch.Tensor | None = None) -> Prep:
    """Per-matrix part of CKA for float64 ``x`` [n, d] (rows are samples). For ``rbf``,
    ``out`` (float32 [n, n]) may lend the storage of the centred Gram matrix."""
    xc = _centre(x)  # [n, d]
    if kernel == "linear":
        g = xc.T @ xc  # [d, d]
        s = float(torch.sqrt((g * g).sum()))
        if s == 0.0:
            raise ValueError(
                f"{name}: all rows are identical (zero variance after centring); linear CKA "
                "is undefined. Check that the captured activations are not constant."
            )
        return Prep(kernel, xc, None, s)
    if kernel == "debiased":
        k = (xc * xc).sum(dim=1)  # [n]
        h = _hsic_unbiased(xc, xc, k, k)
        if not h > 0.0:
            raise ValueError(
                f"{name}: unbiased self-HSIC is {h:.3g} (<= 0), so debiased CKA is undefined; "
                "this happens for constant or nearly rank-one activations or too few rows"
            )
        return Prep(kernel, xc, k, h)
    kmat = _rbf_gram(xc, sigma2=sigma2, bandwidth=bandwidth, name=name, out=out)  # [n, n]
    means = kmat.sum(dim=1).to(torch.float64) / kmat.shape[0]  # [n]; K is symmetric
    grand = float(means.mean())
    kmat.sub_(means.to(torch.float32)[:, None])
    kmat.sub_((means - grand).to(torch.float32)[None, :])  # H K H
    s = math.sqrt(max(_row_dot_sum(kmat, kmat), 0.0))
    if s == 0.0:
        raise ValueError(f"{name}: centred RBF Gram matrix is zero; CKA is undefined")
    return Prep(kernel, kmat, None, s)


def cross(p: Prep, q: Prep) -> float:
    """CKA of the two matrices behind preps ``p`` and ``q`` (same kernel, same rows)."""
    if p.kernel == "linear":
        c = p.feats.T @ q.feats  # [d1, d2]
        return float((c * c).sum()) / (p.self_sim * q.self_sim)
    if p.kernel == "debiased":
        h = _hsic_unbiased(p.feats, q.feats, p.sq_norms, q.sq_norms)
        return h / math.sqrt(p.self_sim * q.self_sim)
    return _row_dot_sum(p.feats, q.feats) / (p.self_sim * q.self_sim)
