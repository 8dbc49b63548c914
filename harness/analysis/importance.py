"""Head importance (ΔPPL of zero-ablating a head) and the query-weight norm, correlated
with stability on seed-level units."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from harness.analysis.aggregate import Aggregator, per_seed_trend
from harness.family import Family
from harness.metrics import heads
from harness.model import ablate_heads

log = logging.getLogger("harness.analysis")


@torch.no_grad()
def _nll(model: nn.Module, tokens: torch.Tensor, batch: int = 64) -> float:
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for i in range(0, tokens.shape[0], batch):
        x = tokens[i:i + batch].to(device)
        logits = model(x)  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 x[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        n += x[:, 1:].numel()
    return total / n


def _ppl(nll: float) -> float:
    """exp(nll), inf instead of an OverflowError for a diverged model (NaN stays NaN)."""
    return math.exp(nll) if not nll > 700.0 else math.inf


def head_importance(model: nn.Module, tokens: torch.Tensor) -> np.ndarray:
    """ΔPPL of zero-ablating each head's hook_z on the probe set: [L, H] (NaN for a diverged model)."""
    base = _ppl(_nll(model, tokens))
    L, H = model.n_layers, model.n_heads
    out = np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            with ablate_heads(model, {l: [h]}):
                out[l, h] = _ppl(_nll(model, tokens)) - base
    return out


def row_stability(pw: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """pw [M, M, ...] -> [K, ...] for the K seeds in ``keep``: each one's mean against the other
    kept seeds. Rows, not columns: pw[k, m] is indexed by seed k's heads (greedy matching
    anchored at k), so row k is seed k's own heads' stability."""
    sub = np.asarray(pw, dtype=float)[np.ix_(keep, keep)]  # [K, K, ...]
    off = ~np.eye(len(keep), dtype=bool)
    return np.stack([sub[a][off[a]].mean(axis=0) for a in range(len(keep))])


def _count_undefined(r: np.ndarray, finite: np.ndarray, what: str, agg: Aggregator) -> None:
    """Correlations undefined on finite input (one side constant: a dead layer) count as r = 0;
    counted in info and logged, so the family mean is readable and the count says how far to
    trust it."""
    n_undefined = int((np.isnan(r) & finite).sum())
    if n_undefined:
        log.warning("%s: %d of %d correlations undefined (constant input, e.g. a dead layer); "
                    "counted as r = 0", what, n_undefined, r.size)
    agg.extra.setdefault("undefined_correlations", {})[what] = n_undefined


def seed_correlations(x: np.ndarray, pw: np.ndarray, name: Callable[[str], str], agg: Aggregator,
                       kinds: tuple[str, ...] = ("pearson", "spearman")) -> dict[str, np.ndarray]:
    """The family-mean correlation R = mean_k r(x_k, S_k) and its seed-level units.

    x [M, *S, n]: per-seed values (ΔPPL per head, ‖W_Q‖ per layer); pw [M, M, *S, n]:
    seed-pair stability; S_k = seed k's row mean (:func:`row_stability`); r along the last
    axis. The r_k all contain the other seeds' stability, so they are correlated across
    seeds and a t interval over them is too narrow (the anti-conservative row means of
    harness.stats). Pseudo-values of the stability itself would not do either: a column
    pw[m, k] is indexed by seed m's heads, so mixing rows and columns mixes heads. The units
    returned are the jackknife pseudo-values of R itself, seed j left out as a member and as
    everyone's comparison partner (ps_j = M R - (M - 1) R_(-j)), shifted by one constant so
    that they average to R: close to independent across seeds, so the t interval over them
    is R's jackknife-t interval and tests on them are calibrated.

    Returns {kind: [M, *S]} for ``kinds`` (of "pearson", "spearman"); ``name(kind)`` is the
    measurement's name. r undefined on finite input counts as 0 (:func:`_count_undefined`);
    r on non-finite input (a NaN seed) stays NaN.
    """
    M = x.shape[0]

    def mean_r(keep: np.ndarray, count: bool) -> dict[str, np.ndarray]:
        s = row_stability(pw, keep)
        finite = np.isfinite(x[keep]).all(axis=-1) & np.isfinite(s).all(axis=-1)  # [K, *S]
        out = {}
        for kind, r in zip(("pearson", "spearman"), heads.pearson_spearman(x[keep], s)):
            if kind not in kinds:
                continue
            if count:
                _count_undefined(r, finite, name(kind), agg)
            out[kind] = np.where(finite, np.nan_to_num(r), np.nan).mean(axis=0)  # [*S]
        return out

    every = np.arange(M)
    full = mean_r(every, count=True)
    loo = [mean_r(np.delete(every, j), count=False) for j in range(M)]
    units = {}
    for kind in kinds:
        ps = M * full[kind] - (M - 1) * np.stack([r[kind] for r in loo])  # [M, *S]
        units[kind] = ps - ps.mean(axis=0) + full[kind]
    return units



_CORRELATION_UNITS = ("per_seed: the jackknife pseudo-values of the family-mean r over seeds (recentred on "
                      "it), close to independent across seeds")


def importance(family: Family, tokens: torch.Tensor, stab: dict[str, Any], agg: Aggregator) -> None:
    dppl = agg.mask_per_seed(np.stack([head_importance(m, tokens) for m in family.models]))  # [M, L, H]
    agg.per_seed("importance.delta_ppl", dppl.mean(axis=-1), higher=False,
                 desc="mean perplexity increase from zero-ablating one head, per layer")
    agg.extra["delta_ppl"] = np.where(np.isfinite(dppl), dppl, np.nan).tolist()
    sources = {"": (agg.mask_pairwise(stab["all_anchors"].pairwise), "head stability"),
               "_cs": (agg.mask_pairwise(stab["cs_heads"]), "content-specific head stability")}
    for suffix, (pw, what) in sources.items():
        units = seed_correlations(dppl, pw, lambda kind, s=suffix: f"importance.{kind}{s}", agg)  # [M, L]
        r_p, r_s = units["pearson"], units["spearman"]
        agg.per_seed(f"importance.pearson{suffix}", r_p, higher=False,
                     desc=f"mean over seeds of Pearson r(ΔPPL, {what}) across a layer's heads, each seed's "
                          f"heads against the other seeds (negative: unstable heads matter more); "
                          f"{_CORRELATION_UNITS}")
        agg.per_seed(f"importance.spearman{suffix}", r_s, higher=False,
                     desc=f"mean over seeds of Spearman r(ΔPPL, {what}) across a layer's heads; "
                          f"{_CORRELATION_UNITS}")
        if r_s.shape[1] >= 2:
            agg.per_seed(f"importance.spearman{suffix}.trend", per_seed_trend(r_s), higher=False,
                         desc=f"slope over relative depth of Spearman r(ΔPPL, {what}); per_seed: the slope "
                              "of each seed's pseudo-values (the jackknife pseudo-values of the slope)")


def qnorm(family: Family, stab: dict[str, Any], agg: Aggregator) -> None:
    models = family.models
    if not all(hasattr(m, "query_weight") for m in models):
        return
    qn = np.array([[float(m.query_weight(l).detach().norm()) for l in range(m.n_layers)] for m in models])  # [M, L]
    qn = agg.mask_per_seed(qn)
    agg.per_seed("qnorm.frobenius", qn, higher=False, desc="‖W_Q‖_F per layer")
    if qn.shape[1] < 3:
        return
    for suffix, pw, what in (("", stab["raw_pw"], "layer stability"),
                             ("_cs", stab["cs_pw"], "content-specific layer stability")):
        units = seed_correlations(qn, agg.mask_pairwise(pw), lambda kind, s=suffix: f"qnorm.{kind}{s}", agg,
                                   kinds=("pearson",))  # [M]
        agg.per_seed(f"qnorm.pearson{suffix}", units["pearson"], higher=False,
                     desc=f"mean over seeds of Pearson r(query-weight norm, {what}) across layers, each "
                          f"seed's layers against the other seeds; {_CORRELATION_UNITS}")

