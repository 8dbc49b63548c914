"""Simulated seed families shared by the statistics tests (tests/test_stats*.py)."""

from __future__ import annotations

import numpy as np


def simulated_family(rng: np.random.Generator, m: int, *, mu: float = 0.7, seed_sd: float = 0.05,
                     pair_sd: float = 0.02, shape: tuple[int, ...] = ()) -> np.ndarray:
    """Symmetric pairwise matrix mu + u_a + u_m + e_am with a NaN diagonal: [M, M, *shape]."""
    u = rng.normal(0.0, seed_sd, size=(m,) + shape)
    e = rng.normal(0.0, pair_sd, size=(m, m) + shape)
    e = (e + np.swapaxes(e, 0, 1)) / np.sqrt(2.0)
    x = mu + u[:, None] + u[None, :] + e
    x[np.arange(m), np.arange(m)] = np.nan
    return x


def _three_seed_family(x01: float, x02: float, x12: float) -> np.ndarray:
    x = np.full((3, 3), np.nan)
    x[0, 1] = x[1, 0] = x01
    x[0, 2] = x[2, 0] = x02
    x[1, 2] = x[2, 1] = x12
    return x
