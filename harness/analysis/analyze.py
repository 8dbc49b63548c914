"""Family -> Analysis: capture the probe set once, run every measurement, name what is
undefined or absent (see the package docstring for the measurement names)."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import torch

from harness import data as data_mod
from harness.analysis import importance, patterns, representations
from harness.analysis.aggregate import Aggregator
from harness.analysis.options import AnalysisOptions
from harness.capture import capture_family, finite_capture
from harness.config import FamilyConfig
from harness.family import Family
from harness.results import Analysis
from harness.train import data_source

log = logging.getLogger("harness.analysis")


def probe_tokens(cfg: FamilyConfig) -> torch.Tensor:
    """The family's probe prompts, int64 [P, T]: a prompts file or held-out generated text."""
    T = cfg.probe_len
    if cfg.probe.path is not None:
        return data_mod.load_prompts_file(cfg.probe.path, seq_len=T)[: cfg.probe.n_prompts]
    toks = data_mod.probe_set(data_source(cfg), n_prompts=cfg.probe.n_prompts, seed=cfg.probe.seed)
    return toks[:, :T].contiguous()


def analyze_family(family: Family, *, options: AnalysisOptions = AnalysisOptions(),
                   progress: Callable[[str], None] | None = None,
                   tokens: torch.Tensor | None = None) -> Analysis:
    """Every measurement of ``family`` (see the package docstring). ``tokens``: the probe
    prompts when the caller has them already (default: :func:`probe_tokens` of the config)."""
    cfg = family.config
    say = progress or (lambda msg: log.info("%s: %s", cfg.name, msg))
    tokens = probe_tokens(cfg) if tokens is None else tokens
    if tokens.shape[0] < 2:
        raise ValueError(f"{cfg.source}: probe.n_prompts: at least 2 prompts are needed for the "
                         f"shuffled-prompt null, got {tokens.shape[0]}")
    if len(family.seeds) < 3:
        raise ValueError(f"{cfg.source}: seeds: a family needs at least 3 seeds for seed-level confidence "
                         f"intervals and tests, got {len(family.seeds)}; add seeds to the spec")
    t0 = time.perf_counter()
    say("capturing activations")
    cap = capture_family(family.models, tokens, seeds=[s.seed for s in family.seeds])
    agg = Aggregator(options, seeds=cap.seeds)
    cap, agg.bad_seeds = finite_capture(cap)
    if agg.bad_seeds:
        agg.degenerate.append(f"{agg._seed_label(agg.bad_seeds)}: non-finite activations (NaN or inf); "
                              "every statistic that involves it is NaN")
        log.warning("%s: %s", cfg.name, agg.degenerate[-1])
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 4)
        return out

    say("head stability")
    stab = timed("head_stability", lambda: patterns.head_measurements(cap, agg, options))
    if options.step0:
        say("step-0 ceiling")
        timed("step0", lambda: patterns.step0(family, tokens, agg, options))
    if options.cross_layer:
        timed("cross_layer", lambda: patterns.cross_layer(cap, agg, stab.get("X")))
    say("controls and circuits")
    timed("controls", lambda: patterns.controls(cap, agg))
    say("CKA")
    timed("cka", lambda: representations.cka_measurements(cap, stab, agg, options))
    if options.importance:
        say("head ablations")
        timed("importance", lambda: importance.importance(family, tokens, stab, agg))
    timed("qnorm", lambda: importance.qnorm(family, stab, agg))
    lengths = timed("prompt_length", lambda: patterns.prompt_length(cap, agg, options))
    info = {
        "n_layers": cap.shape["layers"], "n_heads": cap.shape["heads"], "n_prompts": cap.shape["prompts"],
        "probe_len": cap.shape["tokens"], "prompt_lengths": lengths,
        "final_loss": [s.log.get("final_loss") for s in family.seeds],
        "final_copy_loss": [s.log.get("final_copy_loss") for s in family.seeds],
        "timings_s": timings, "analysis_s": round(time.perf_counter() - t0, 3),
        "n_boot": options.n_boot, "ci_method": options.ci_method, "null_shift": options.null_shift,
        "induction_heads": agg.extra.get("induction_heads"),
        "cross_layer_same_fraction": agg.extra.get("same_layer_fraction"),
        "delta_ppl": agg.extra.get("delta_ppl"),  # [M, L, H] per-head ablation effect
        "undefined_correlations": agg.extra.get("undefined_correlations", {}),  # counted as r = 0
        "degenerate": list(agg.degenerate),  # what is NaN, and why ([] for a healthy family)
        "absent": dict(agg.absent),  # measurement -> why these options do not compute it
        "ci_clipped": sorted(n for n, m in agg.out.items() if m.ci_note),  # intervals clipped to their range
    }
    return Analysis(family=cfg.name, fingerprint=family.fingerprint, seeds=tuple(s.seed for s in family.seeds),
                    device_class=family.device_class, probe_digest=data_mod.digest(tokens),
                    measurements=dict(agg.out), info=info)
