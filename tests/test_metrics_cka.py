"""CKA metrics against textbook n x n reference loops, plus invariances and error paths."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from harness.metrics import hsic
from harness.metrics.cka import (
    BANDWIDTHS,
    debiased_linear_cka,
    depth_trend,
    head_cka,
    head_output_cka,
    layer_cka,
    linear_cka,
    pairwise_cka,
    rbf_cka,
    stability_gap,
)

CKA_FNS = {"linear": linear_cka, "debiased": debiased_linear_cka, "rbf": rbf_cka}


# ----------------------------------------------------------------------------- slow references
# Written straight from the definitions, element by element, in float64.


def gram_linear_loop(x: np.ndarray) -> np.ndarray:
    n, d = x.shape
    k = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = sum(x[i, c] * x[j, c] for c in range(d))
    return k


def median_loop(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else 0.5 * (v[mid - 1] + v[mid])


def sq_dist_loop(x: np.ndarray) -> np.ndarray:
    n, d = x.shape
    d2 = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            d2[i, j] = sum((x[i, c] - x[j, c]) ** 2 for c in range(d))
    return d2


def bandwidth_loop(d2: np.ndarray, bandwidth: str) -> float:
    """median_all: all n^2 entries, diagonal included; median_pairs: i < j only."""
    n = d2.shape[0]
    if bandwidth == "median_all":
        return median_loop([d2[i, j] for i in range(n) for j in range(n)])
    return median_loop([d2[i, j] for i in range(n) for j in range(i + 1, n)])


def gram_rbf_loop(x: np.ndarray, bandwidth: str = "median_all") -> np.ndarray:
    n, d = x.shape
    d2 = sq_dist_loop(x)
    sigma2 = bandwidth_loop(d2, bandwidth)
    k = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            k[i, j] = np.exp(-d2[i, j] / (2.0 * sigma2))
    return k


def hsic_biased_loop(k: np.ndarray, l: np.ndarray) -> float:
    """tr(K H L H) / (n-1)^2, H = I - 11^T/n, multiplied out by hand."""
    n = k.shape[0]
    h = [[(1.0 if i == j else 0.0) - 1.0 / n for j in range(n)] for i in range(n)]

    def matmul(a, b):
        return [[sum(a[i][q] * b[q][j] for q in range(n)) for j in range(n)] for i in range(n)]

    khlh = matmul(matmul(matmul(k.tolist(), h), l.tolist()), h)
    return sum(khlh[i][i] for i in range(n)) / (n - 1) ** 2


def hsic_unbiased_loop(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (2012) Eq. 5 with K~, L~ = K, L with zero diagonal."""
    n = k.shape[0]
    kt = [[0.0 if i == j else k[i, j] for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else l[i, j] for j in range(n)] for i in range(n)]
    tr = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sk = sum(kt[i][j] for i in range(n) for j in range(n))
    sl = sum(lt[i][j] for i in range(n) for j in range(n))
    kl1 = sum(kt[i][j] * lt[j][q] for i in range(n) for j in range(n) for q in range(n))
    return (tr + sk * sl / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


def hsic_ustat_loop(k: np.ndarray, l: np.ndarray) -> float:
    """The U-statistic over distinct 4-tuples that Song's closed form is supposed to equal."""
    n = k.shape[0]
    s = 0.0
    for i, j, q, r in itertools.permutations(range(n), 4):
        s += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2.0 * k[i, j] * l[i, q]
    return s / (n * (n - 1) * (n - 2) * (n - 3))


def cka_ref(x: np.ndarray, y: np.ndarray, kernel: str, bandwidth: str = "median_all") -> float:
    if kernel == "rbf":
        k, l = gram_rbf_loop(x, bandwidth), gram_rbf_loop(y, bandwidth)
    else:
        k, l = gram_linear_loop(x), gram_linear_loop(y)
    hs = hsic_unbiased_loop if kernel == "debiased" else hsic_biased_loop
    return hs(k, l) / np.sqrt(hs(k, k) * hs(l, l))


def _xy(seed: int, n: int = 14, d1: int = 5, d2: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + rng.normal(size=d1) * 3  # off-centre on purpose
    y = x @ rng.normal(size=(d1, d2)) + rng.normal(size=(n, d2))  # related, not identical
    return x, y


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("kernel", ["linear", "debiased", "rbf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_loops(kernel: str, seed: int) -> None:
    x, y = _xy(seed)
    got = CKA_FNS[kernel](x, y)
    want = cka_ref(x, y, kernel)
    assert abs(got - want) < 1e-6, (kernel, got, want)
    assert abs(got - 1.0) > 1e-3  # the inputs are related but not equivalent


@pytest.mark.parametrize("n", [9, 10])  # odd and even counts of distance entries
def test_rbf_bandwidth_conventions_match_loops(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 3))
    y = np.tanh(x @ rng.normal(size=(3, 4))) + 0.5 * rng.normal(size=(n, 4))
    d2 = sq_dist_loop(x)
    got = {b: hsic.median_sq_distance(torch.from_numpy(d2), bandwidth=b) for b in BANDWIDTHS}
    for b in BANDWIDTHS:
        assert got[b] == pytest.approx(bandwidth_loop(d2, b), rel=1e-12)
        assert rbf_cka(x, y, bandwidth=b) == pytest.approx(cka_ref(x, y, "rbf", b), abs=1e-6)
    # the n zeros of the diagonal pull the all-entries median down
    assert got["median_all"] < got["median_pairs"]
    assert abs(rbf_cka(x, y) - rbf_cka(x, y, bandwidth="median_pairs")) > 1e-4
    assert rbf_cka(x, y) == rbf_cka(x, y, bandwidth="median_all")  # the default
    # an explicit sigma2 overrides either convention
    s2 = bandwidth_loop(d2, "median_pairs")
    assert rbf_cka(x, x * 2.0, sigma2=s2) < 1.0 - 1e-3  # one sigma2 for both: not scale-free


def test_exact_median_on_large_matrices() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(700, 5)))  # 490,000 entries: the bracketing path
    d2 = torch.cdist(x, x).square().to(torch.float32)
    d2.fill_diagonal_(0.0)
    a = d2.numpy()
    assert hsic.median_sq_distance(d2, bandwidth="median_all") == pytest.approx(
        float(np.median(a)), rel=1e-7)
    assert hsic.median_sq_distance(d2, bandwidth="median_pairs") == pytest.approx(
        float(np.median(a[np.triu_indices(700, k=1)])), rel=1e-7)
    # values at every sampled position are tiny: the bracket misses and the sort takes over
    flat = torch.from_numpy(rng.random(300 * 300).astype(np.float32)) + 1.0
    step = (flat.numel() // hsic._SAMPLE) | 1
    flat[::step] = 0.0
    want = np.sort(flat.numpy())[[flat.numel() // 2 - 1, flat.numel() // 2]]
    assert hsic._order_statistics(flat, [flat.numel() // 2 - 1, flat.numel() // 2]) == list(want)


def test_bandwidth_is_validated() -> None:
    x = np.random.default_rng(0).normal(size=(10, 3))
    for fn in (lambda: rbf_cka(x, x, bandwidth="median"),
               lambda: pairwise_cka(np.stack([x, x]), kernel="rbf", bandwidth="mean"),
               lambda: layer_cka(np.zeros((2, 1, 3, 4, 2)), kernel="rbf", bandwidth=None)):
        with pytest.raises(ValueError, match=r"bandwidth: expected one of \('median_all', "
                                             r"'median_pairs'\)"):
            fn()


def test_song_closed_form_equals_ustatistic() -> None:
    # Checks the reference itself: Eq. 5 is the U-statistic over distinct 4-tuples.
    x, y = _xy(3, n=7)
    k, l = gram_linear_loop(x), gram_linear_loop(y)
    assert abs(hsic_unbiased_loop(k, l) - hsic_ustat_loop(k, l)) < 1e-9


def test_torch_float32_input_is_summed_in_float64() -> None:
    # Activations with a large common offset: the float32 n x n Gram route loses the signal
    # (the design notes measured 5e-3 errors), the float64 feature route does not.
    rng = np.random.default_rng(0)
    x = (1000.0 + rng.normal(size=(1000, 16))).astype(np.float32)
    y = (x @ rng.normal(size=(16, 16)) + 2.0 * rng.normal(size=(1000, 16))).astype(np.float32)

    def gram_cka(a: np.ndarray, b: np.ndarray, dtype: type) -> float:
        a, b = a.astype(dtype), b.astype(dtype)
        k, l = a @ a.T, b @ b.T  # (n, n)
        kc = k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()
        lc = l - l.mean(0, keepdims=True) - l.mean(1, keepdims=True) + l.mean()
        return float((kc * lc).sum() / np.sqrt((kc * kc).sum() * (lc * lc).sum()))

    want = gram_cka(x, y, np.float64)
    assert abs(gram_cka(x, y, np.float32) - want) > 1e-2  # float32 Gram is visibly off
    assert abs(linear_cka(torch.from_numpy(x), torch.from_numpy(y)) - want) < 1e-6


# ----------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("kernel", ["linear", "debiased", "rbf"])
def test_invariances(kernel: str) -> None:
    fn = CKA_FNS[kernel]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 6))
    y = np.tanh(x @ rng.normal(size=(6, 7))) + 0.3 * rng.normal(size=(60, 7))
    q = ortho_group.rvs(6, random_state=7)
    tol = 1e-7 if kernel == "rbf" else 1e-9  # rbf: float32 Gram matrices, float64 sums
    assert abs(fn(x, x @ q) - 1.0) < tol  # orthogonal transform
    assert abs(fn(x, 3.7 * x) - 1.0) < tol  # isotropic scaling
    assert abs(fn(x, x + 5.0) - 1.0) < tol  # translation
    assert abs(fn(x, x) - 1.0) < tol
    base = fn(x, y)
    assert base < 0.99
    assert abs(fn(y, x) - base) < 1e-12  # symmetry
    assert abs(fn(x @ q * 0.01 + 2.0, y) - base) < tol
    # a non-isotropic scaling is not an invariance: the test can tell
    assert abs(fn(x * np.array([10.0, 1, 1, 1, 1, 1]), y) - base) > 1e-3


def test_debiased_is_near_zero_for_independent_features() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(500, 50)), rng.normal(size=(500, 50))
    assert abs(debiased_linear_cka(x, y)) < 0.05
    assert linear_cka(x, y) > 0.05  # the biased estimator is pulled up by d/n


def test_rbf_subsample_needs_generator_and_uses_shared_rows() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = x + 0.5 * rng.normal(size=(300, 4))
    with pytest.raises(ValueError, match="generator"):
        rbf_cka(x, y, max_rows=100)
    got = rbf_cka(x, y, max_rows=100, generator=np.random.default_rng(3))
    idx = np.sort(np.random.default_rng(3).choice(300, size=100, replace=False))
    assert got == pytest.approx(rbf_cka(x[idx], y[idx]), abs=1e-12)
    assert rbf_cka(x, y, max_rows=100, generator=np.random.default_rng(3)) == got
    # explicit sigma2 is used (and changes the value)
    assert abs(rbf_cka(x[:50], y[:50], sigma2=0.01) - rbf_cka(x[:50], y[:50])) > 1e-3


# ----------------------------------------------------------------------------- families


def _family(seed: int, m: int = 4, n_layers: int = 3, p: int = 3, t: int = 6, d: int = 5):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_layers, p, t, d))
    acts = base[None] + 0.7 * rng.normal(size=(m, n_layers, p, t, d))  # (M, L, P, T, d)
    return torch.from_numpy(acts.astype(np.float32))


@pytest.mark.parametrize("kernel", ["linear", "debiased", "rbf"])
def test_pairwise_matches_single_calls(kernel: str) -> None:
    acts = _family(0)[:, 0].reshape(4, -1, 5)  # (M, n, d)
    out = pairwise_cka(acts, kernel=kernel)
    assert out.shape == (4, 4) and out.dtype == np.float64
    assert np.isnan(np.diag(out)).all()
    for a, b in itertools.permutations(range(4), 2):
        assert out[a, b] == pytest.approx(CKA_FNS[kernel](acts[a], acts[b]), abs=1e-12)
    np.testing.assert_array_equal(out, out.T)


def test_identical_and_rotated_seeds_score_one() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    acts = np.stack([x @ ortho_group.rvs(6, random_state=s) * (s + 1) for s in range(3)])
    for kernel in ("linear", "debiased", "rbf"):
        out = pairwise_cka(acts, kernel=kernel)
        off = out[~np.eye(3, dtype=bool)]
        np.testing.assert_allclose(off, 1.0, atol=1e-9)


@pytest.mark.parametrize("kernel", ["linear", "debiased", "rbf"])
def test_layer_cka_stacks_tokens_without_position_zero(kernel: str) -> None:
    acts = _family(2)  # (M=4, L=3, P=3, T=6, d=5)
    out = layer_cka(acts, kernel=kernel)
    assert out.shape == (4, 4, 3)
    for layer in range(3):
        rows = acts[:, layer, :, 1:].reshape(4, 3 * 5, 5)  # (M, P*(T-1), d)
        np.testing.assert_allclose(out[:, :, layer], pairwise_cka(rows, kernel=kernel),
                                   atol=1e-12)
    full = layer_cka(acts, kernel=kernel, exclude_first=False)
    rows = acts[:, 1].reshape(4, 3 * 6, 5)
    np.testing.assert_allclose(full[:, :, 1], pairwise_cka(rows, kernel=kernel), atol=1e-12)
    assert np.nanmax(np.abs(full - out)) > 1e-6  # position 0 does matter


def test_layer_cka_rbf_subsample_is_shared_across_layers() -> None:
    acts = _family(3, m=3, n_layers=2, p=4, t=9)  # 4*8 = 32 rows per layer
    out = layer_cka(acts, kernel="rbf", max_rows=20, generator=np.random.default_rng(9))
    idx = np.sort(np.random.default_rng(9).choice(32, size=20, replace=False))
    for layer in range(2):
        rows = acts[:, layer, :, 1:].reshape(3, 32, 5)[:, idx]
        np.testing.assert_allclose(out[:, :, layer], pairwise_cka(rows, kernel="rbf"),
                                   atol=1e-12)
    with pytest.raises(ValueError, match="generator"):
        layer_cka(acts, kernel="rbf", max_rows=20)


def _heads(seed: int, m: int = 3, n_layers: int = 2, p: int = 2, t: int = 8, h: int = 3,
           dh: int = 4):
    rng = np.random.default_rng(seed)
    z0 = rng.normal(size=(n_layers, p, t, h, dh))
    perms = [rng.permutation(h) for _ in range(m)]
    zs = []
    for k in range(m):
        q = ortho_group.rvs(dh, random_state=seed + k)
        zs.append(z0[:, :, :, perms[k]] @ q)  # seed k: heads permuted and rotated
    return np.stack(zs), perms  # (M, L, P, T, H, dh)


def test_head_output_cka_ignores_head_order() -> None:
    z, _ = _heads(0)
    # per-head rotations are block-orthogonal, head permutations are orthogonal: CKA = 1
    out = head_output_cka(z, kernel="linear")
    assert out.shape == (3, 3, 2)
    np.testing.assert_allclose(out[~np.eye(3, dtype=bool)], 1.0, atol=1e-9)


@pytest.mark.parametrize("kernel", ["linear", "debiased", "rbf"])
def test_head_cka_follows_the_match(kernel: str) -> None:
    z, perms = _heads(1)
    m, n_layers, h = 3, 2, 3
    # true match: head j of seed a holds original head perms[a][j]
    inv = [np.argsort(pm) for pm in perms]
    match = np.zeros((m, m, n_layers, h), dtype=np.int64)
    for a, b in itertools.product(range(m), repeat=2):
        match[a, b, :, :] = inv[b][perms[a]]
    out = head_cka(z, match, kernel=kernel)
    assert out.shape == (m, m, n_layers, h)
    off = ~np.eye(m, dtype=bool)
    np.testing.assert_allclose(out[off], 1.0, atol=1e-9)
    assert np.isnan(out[np.eye(m, dtype=bool)]).all()

    rnd = np.random.default_rng(0).integers(0, h, size=(m, m, n_layers, h))
    out = head_cka(z, rnd, kernel=kernel)
    for a, b in itertools.permutations(range(m), 2):
        for layer in range(n_layers):
            for hh in range(h):
                x = z[a, layer, :, 1:, hh].reshape(-1, 4)
                y = z[b, layer, :, 1:, rnd[a, b, layer, hh]].reshape(-1, 4)
                assert out[a, b, layer, hh] == pytest.approx(CKA_FNS[kernel](x, y), abs=1e-12)
    assert np.nanmin(out) < 0.9  # wrong matches are visibly worse


def test_head_cka_rejects_bad_match() -> None:
    z, _ = _heads(2)
    with pytest.raises(ValueError, match=r"match: expected shape \[M, M, L, H\]"):
        head_cka(z, np.zeros((3, 3, 2), dtype=int))
    bad = np.zeros((3, 3, 2, 3), dtype=int)
    bad[0, 1, 0, 0] = 3
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        head_cka(z, bad)
    diag_only = np.zeros((3, 3, 2, 3), dtype=int)
    diag_only[1, 1] = -1  # diagonal is ignored
    assert head_cka(z, diag_only).shape == (3, 3, 2, 3)
    with pytest.raises(ValueError, match="integer"):
        head_cka(z, np.full((3, 3, 2, 3), 0.5))


# ----------------------------------------------------------------------------- summaries


def test_stability_gap_and_depth_trend() -> None:
    rng = np.random.default_rng(0)
    r, h = rng.random((3, 3, 4)), rng.random((3, 3, 4))
    np.testing.assert_array_equal(stability_gap(r, h), r - h)
    with pytest.raises(ValueError, match="head_pairwise: shape"):
        stability_gap(r, h[:, :, :3])
    with pytest.raises(ValueError, match=r"expected \[M, M, L\]"):
        stability_gap(r[0], h[0])

    depth = np.arange(8) / 7
    assert depth_trend(0.9 - 0.3 * depth) == pytest.approx(-0.3, abs=1e-12)
    v = rng.random(6)
    assert depth_trend(v) == pytest.approx(np.polyfit(np.arange(6) / 5, v, 1)[0], abs=1e-12)
    assert depth_trend(torch.tensor([0.5, 0.5, 0.5])) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match=">= 2 per-layer values"):
        depth_trend(np.array([1.0]))
    with pytest.raises(ValueError, match="NaN"):
        depth_trend(np.array([1.0, np.nan]))


# ----------------------------------------------------------------------------- error paths


def test_error_paths() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="same rows"):
        linear_cka(x, x[:9])
    with pytest.raises(ValueError, match=r"2-D array \[n, d\]"):
        linear_cka(x[0], x[0])
    x_nan = x.copy()
    x_nan[4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        linear_cka(x_nan, x)
    with pytest.raises(ValueError, match="identical"):
        linear_cka(np.ones((10, 3)), x)
    with pytest.raises(ValueError, match="self-HSIC"):
        debiased_linear_cka(np.ones((10, 3)), x)
    with pytest.raises(ValueError, match="at least 4 rows"):
        debiased_linear_cka(x[:3], x[:3])
    with pytest.raises(ValueError, match="sigma"):
        rbf_cka(np.ones((10, 3)), x)
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        linear_cka(x.tolist(), x)
    with pytest.raises(ValueError, match="kernel: expected one of"):
        pairwise_cka(np.stack([x, x]), kernel="cosine")
    with pytest.raises(ValueError, match="at least 2 seeds"):
        pairwise_cka(x[None], kernel="linear")
    with pytest.raises(ValueError, match=r"\[M, L, P, T, d\]"):
        layer_cka(np.stack([x, x]))
    with pytest.raises(ValueError, match="T >= 2"):
        layer_cka(np.zeros((2, 1, 3, 1, 4)))
    with pytest.raises(ValueError, match="max_rows"):
        rbf_cka(x, x, max_rows=2)
    # the message names the seed and layer that failed
    acts = _family(0).numpy().copy()
    acts[2, 1] = 0.0
    with pytest.raises(ValueError, match=r"layer 1, seed 2"):
        layer_cka(acts, kernel="linear")
