"""Attention-pattern measurements: head stability and its controls (shuffled-prompt null,
content-specific stability, step-0 ceiling), the paper's anchor measure, cross-layer
matching, circuits and prompt length."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.analysis.aggregate import Aggregator, layer_mean
from harness.analysis.options import AnalysisOptions
from harness.capture import FamilyCapture, capture_family
from harness.family import Family
from harness.metrics import circuits, cka, heads
from harness.model import build_model

def spread(per_layer: np.ndarray) -> float:
    return float(np.max(per_layer) - np.min(per_layer))


def min_rel_depth(per_layer: np.ndarray) -> float:
    L = len(per_layer)
    return float(np.argmin(per_layer) / (L - 1)) if L > 1 else 0.0



def head_measurements(cap: FamilyCapture, agg: Aggregator, o: AnalysisOptions) -> dict[str, Any]:
    P = cap.shape["prompts"]
    # one pass over the patterns: C, the null C at the shift, and (when asked for) the
    # cross-layer X that C is read off
    hset = heads.head_set(cap.patterns, prompt_shift=o.null_shift % P or 1, cross_layer=o.cross_layer,
                          cross_layer_null=False)
    C, C_null = hset.C, hset.C_null  # (L, M, H, M, H)
    out: dict[str, Any] = {"C": C, "X": hset.X}
    for method in ("all_anchors", "hungarian"):
        hs = heads.head_stability(C, method=method)
        out[method] = hs
        agg.pairwise(f"head_stability.{method}", layer_mean(hs.pairwise), higher=True,
                     desc=f"head-pattern stability per layer ({method} matching)")
    out["anchor_rows"] = anchor(C, agg)
    null = heads.head_stability(C_null, method="all_anchors")
    raw_pw, null_pw = layer_mean(out["all_anchors"].pairwise), layer_mean(null.pairwise)
    agg.pairwise("head_stability_null.all_anchors", null_pw, higher=True,
                 desc="shuffled-prompt null: stability against the other seed's heads on another prompt")
    cs = heads.content_specific(raw_pw, null_pw)
    agg.pairwise("content_specific.all_anchors", cs, higher=True,
                 desc="content-specific head stability: raw minus the shuffled-prompt null")
    no_room = (1.0 - null_pw) <= 1e-12  # [M, M, L]: the null is already perfect

    def why_normalized(idx: tuple[int, ...]) -> str:
        if agg.bad_seeds:
            return agg._default_why(np.zeros(null_pw.shape[:2], dtype=bool))
        n = int(no_room[(...,) + idx].sum())
        pairs = "" if n == null_pw.shape[0] * (null_pw.shape[0] - 1) else f" for {n} seed pairs"
        return f"null = 1{pairs} (attention does not depend on the prompt: every head uniform)"

    agg.pairwise("content_specific_normalized.all_anchors", heads.content_specific_normalized(raw_pw, null_pw),
                 higher=True, desc="(raw - null) / (1 - null): share of the room above chance; NaN where "
                 "null = 1 (no room above chance)", why=why_normalized)
    agg.derived("head_stability.spread", raw_pw, spread, higher=False,
                desc="depth spread: max - min of layer stability")
    agg.derived("content_specific.spread", cs, spread, higher=False,
                desc="depth spread of content-specific stability")
    agg.derived("head_stability.min_rel_depth", raw_pw, min_rel_depth, higher=True, smooth=False,
                desc="relative depth (0 first, 1 last layer) of the least stable layer")
    agg.derived("content_specific.min_rel_depth", cs, min_rel_depth, higher=True, smooth=False,
                desc="relative depth of the least content-stable layer")
    # Per head (layer x head map) for the heatmap; kept as a measurement so baselines hold it.
    agg.pairwise("head_stability.per_head", np.asarray(out["all_anchors"].pairwise, dtype=float)
                 .reshape(*raw_pw.shape[:2], -1), higher=True, axis="head (layer-major)",
                 desc="head stability per (layer, head), flattened layer-major")
    out["null"] = null
    out["raw_pw"], out["cs_pw"] = raw_pw, cs
    out["cs_heads"] = (np.asarray(out["all_anchors"].pairwise, dtype=float)
                       - np.asarray(null.pairwise, dtype=float))  # [M, M, L, H]
    return out


ANCHOR_NOTE = ("head_stability.anchor is conditional on the anchor seed; baseline head_stability.all_anchors "
               "instead (its M - 1 units all share the anchor, so they are not independent seed units)")


def anchor(C: torch.Tensor, agg: Aggregator) -> np.ndarray:
    """The paper's measure: our first seed (the paper's seed 1) anchors, greedy matching.

    value [L] = mean over m != anchor of S(anchor, m), unchanged. Its units S(anchor, m) are
    independent given the anchor (the other seeds are independent draws) but all share it,
    so the t interval over them is a CI *conditional on the anchor seed*: it says how well
    this anchor is matched, not how stable a fresh family is. Kept as a reported number;
    not baselinable (``Measurement.unit_values`` refuses it with :data:`ANCHOR_NOTE`):
    ``head_stability.all_anchors`` is the family-level statistic.

    Returns its units [M - 1, L]: S(anchor, m) per layer for the other seeds m (NaN where
    a seed's activations are not finite).
    """
    hs = heads.head_stability(C, method="anchor")
    rows = agg.mask_per_seed(layer_mean(hs.pairwise)[0])  # [M, L]: S(anchor, m), row 0 NaN
    if 0 in agg.bad_seeds:
        rows[:] = np.nan
    agg.per_seed("head_stability.anchor", rows[1:], higher=True, masked=False, baselinable=False,
                 baseline_note=ANCHOR_NOTE,
                 desc="head-pattern stability per layer, the paper's seed-1 anchor, greedy; CI: t over the "
                      "M - 1 other seeds, conditional on the anchor seed; per_seed holds those M - 1 seeds")
    return rows[1:]



def step0(family: Family, tokens: torch.Tensor, agg: Aggregator, o: AnalysisOptions) -> None:
    cfg = family.config
    untrained = [build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                             init_seed=cfg.seed_pair(s.seed)[0], source=cfg.source) for s in family.seeds]
    cap0 = capture_family(untrained, tokens, seeds=[s.seed for s in family.seeds])
    C0 = heads.similarity(cap0.patterns)
    hs0 = heads.head_stability(C0, method="all_anchors")
    agg.pairwise("head_stability_step0.all_anchors", layer_mean(hs0.pairwise), higher=True, masked=False,
                 desc="head stability of the untrained family (step 0): the ceiling uniform attention gives")


def cross_layer(cap: FamilyCapture, agg: Aggregator, X: Any = None) -> None:
    """``X``: the cross-layer similarity head_measurements computed, if it did."""
    cl = heads.cross_layer_stability(cap.patterns) if X is None else heads.cross_layer_match(X)
    agg.pairwise("cross_layer.all_anchors", layer_mean(cl.pairwise), higher=True,
                 desc="best match over every layer of the other seed")
    same = np.asarray(cl.same_layer, dtype=float).mean(axis=(-1, -2))  # [M, M]
    M = same.shape[0]
    same[np.eye(M, dtype=bool)] = np.nan
    agg.pairwise("cross_layer.same_layer_fraction", same, higher=True,
                 desc="share of heads whose best cross-layer match lies in the same layer")
    agg.extra["same_layer_fraction"] = math.nan if agg.bad_seeds else float(cl.same_layer_fraction)


def controls(cap: FamilyCapture, agg: Aggregator) -> None:
    agg.per_seed("distinctness", heads.distinctness(cap.patterns).mean(axis=-1), higher=True,
                 desc="1 - mean similarity to the heads of the same layer (h'=h included, as the paper)")
    agg.per_seed("uniform_similarity", heads.uniform_similarity(cap.patterns).mean(axis=-1), higher=False,
                 desc="similarity of heads to causal-uniform attention (1 = uniform)")
    agg.per_seed("attention_entropy", heads.attention_entropy(cap.patterns).mean(axis=-1), higher=False,
                 desc="attention entropy in nats (position 0 excluded)")
    ind = circuits.induction_score(cap.patterns, cap.tokens)  # [M, L, H]
    prev = circuits.previous_token_score(cap.patterns)  # [M, L, H]
    agg.per_seed("induction.max_score", ind.reshape(ind.shape[0], -1).max(axis=1), higher=True,
                 desc="best induction score of each seed (attention to the token after an earlier occurrence)")
    agg.per_seed("prev_token.max_score", prev.reshape(prev.shape[0], -1).max(axis=1), higher=True,
                 desc="best previous-token score of each seed")
    agg.per_seed("induction.score", ind.max(axis=-1), higher=True, desc="best induction score per layer")
    agg.per_seed("prev_token.score", prev.max(axis=-1), higher=True, desc="best previous-token score per layer")
    sim = circuits.induction_head_similarity(cap.patterns, ind)
    agg.pairwise("induction.similarity", sim.pairwise, higher=True,
                 desc="pattern similarity of the seeds' best induction heads")
    agg.extra["induction_heads"] = [[int(l), int(h), float(s) if k not in agg.bad_seeds else math.nan]
                                    for k, ((l, h), s) in enumerate(zip(sim.heads, sim.best_scores))]



def prompt_length(cap: FamilyCapture, agg: Aggregator, o: AnalysisOptions) -> list[int]:
    """Causal attention on a prefix is exactly the top-left block of the full pattern, so
    nested prefixes need no new forward pass."""
    T = cap.shape["tokens"]
    lengths = sorted({max(4, int(round(f * T))) for f in o.prompt_lengths if f > 0})
    lengths = [t for t in lengths if t <= T]
    P = cap.shape["prompts"]
    raw, cs = [], []
    for t in lengths:
        pat = cap.patterns[..., :t, :t]
        C = heads.similarity(pat)
        Cn = heads.similarity(pat, prompt_shift=o.null_shift % P or 1)
        r = layer_mean(heads.head_stability(C, method="all_anchors").pairwise).mean(axis=-1)  # [M, M]
        n = layer_mean(heads.head_stability(Cn, method="all_anchors").pairwise).mean(axis=-1)
        raw.append(r)
        cs.append(r - n)
    raw_pw, cs_pw = np.stack(raw, axis=-1), np.stack(cs, axis=-1)  # [M, M, n_lengths]
    agg.pairwise("prompt_length.all_anchors", raw_pw, higher=True, axis="prompt length",
                 desc="head stability (mean over layers) on nested prompt prefixes, per length")
    agg.pairwise("prompt_length.content_specific", cs_pw, higher=True, axis="prompt length",
                 desc="content-specific stability on nested prompt prefixes, per length")
    if len(lengths) >= 2:
        agg.derived("prompt_length.trend", raw_pw, cka.depth_trend, higher=True,
                    desc="slope of stability over relative prompt length (negative: longer prompts less stable)")
        agg.derived("prompt_length.content_specific_trend", cs_pw, cka.depth_trend, higher=True,
                    desc="slope of content-specific stability over relative prompt length")
    return lengths

