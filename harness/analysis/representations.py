"""Representation measurements: residual-stream and head-output CKA, and the two
residual-over-head gaps (like for like, and the paper's comparison)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.analysis.aggregate import Aggregator, layer_mean, per_seed_trend
from harness.analysis.options import AnalysisOptions
from harness.capture import FamilyCapture
from harness.metrics import cka

GAP_PAPER_NOTE = ("gap.paper pairs the anchor seed with each other seed, as the paper does; its M - 1 units "
                  "share the anchor, so baseline gap.cka instead")


def cka_measurements(cap: FamilyCapture, stab: dict[str, Any], agg: Aggregator, o: AnalysisOptions) -> None:
    gen = np.random.default_rng(o.seed)
    resid: dict[tuple[str, str], np.ndarray] = {}
    for kernel in o.kernels:
        for stream in ("pre", "mid", "post"):
            pw = cka.layer_cka(cap.resid[stream], kernel=kernel, generator=gen)  # [M, M, L]
            resid[kernel, stream] = pw
            agg.pairwise(f"resid_cka.{kernel}.{stream}", pw, higher=True,
                         desc=f"residual-stream CKA ({kernel}) at resid_{stream}")
    head_pw = {}
    for kernel in [k for k in o.kernels if k != "rbf"]:
        head_pw[kernel] = cka.head_output_cka(cap.z, kernel=kernel, generator=gen)
        agg.pairwise(f"head_cka.{kernel}", head_pw[kernel], higher=True,
                     desc=f"CKA of all heads' outputs (hook_z, {kernel})")
    matched = cka.head_cka(cap.z, stab["hungarian"].match, kernel="linear")  # [M, M, L, H]
    agg.pairwise("matched_head_cka.linear", layer_mean(matched), higher=True,
                 desc="CKA of Hungarian-matched single heads (linear)")
    _gaps(resid, head_pw, stab["anchor_rows"], agg, kernels=o.kernels)


def _gaps(resid: dict[tuple[str, str], np.ndarray], head_pw: dict[str, np.ndarray], anchor_rows: np.ndarray,
          agg: Aggregator, *, kernels: tuple[str, ...]) -> None:
    """``gap.cka`` (resid_mid debiased CKA − head-output debiased CKA, per seed pair) and
    ``gap.paper`` (resid_pre RBF CKA − anchor head stability, per anchor pair), each with
    its trend over depth; a gap whose kernel is not in ``kernels`` is named in
    ``agg.absent`` instead."""
    if ("debiased", "mid") in resid and "debiased" in head_pw:
        gap = cka.stability_gap(resid["debiased", "mid"], head_pw["debiased"])  # [M, M, L]
        agg.pairwise("gap.cka", gap, higher=True,
                     desc="residual-over-head gap, like for like: debiased CKA of resid_mid (the stream right "
                          "after the heads wrote into it) - debiased CKA of the heads' outputs (hook_z)")
        if gap.shape[-1] >= 2:
            agg.derived("gap.cka.trend", gap, cka.depth_trend, higher=True,
                        desc="slope of gap.cka over relative depth")
    else:
        agg.absent["gap.cka"] = f"needs the 'debiased' kernel, and AnalysisOptions.kernels is {kernels}"
    if ("rbf", "pre") in resid:
        rbf = agg.mask_pairwise(resid["rbf", "pre"])[0, 1:]  # [M - 1, L]: CKA(anchor, m)
        rows = rbf - anchor_rows  # NaN wherever the anchor's or m's activations are not finite
        agg.per_seed("gap.paper", rows, higher=True, masked=False, baselinable=False, baseline_note=GAP_PAPER_NOTE,
                     desc="RBF CKA at resid_pre - anchor head stability (the paper's comparison): per layer, "
                          "the anchor seed against each other seed m, CKA(anchor, m) - S(anchor, m); CI: t over "
                          "the M - 1 other seeds, conditional on the anchor seed")
        if rows.shape[-1] >= 2:
            agg.per_seed("gap.paper.trend", per_seed_trend(rows), higher=True, masked=False, baselinable=False,
                         baseline_note=GAP_PAPER_NOTE,
                         desc="slope of gap.paper over relative depth, one per anchor pair; CI conditional on "
                              "the anchor seed")
    else:
        agg.absent["gap.paper"] = f"needs the 'rbf' kernel, and AnalysisOptions.kernels is {kernels}"
