"""Family -> Analysis: every stability metric with its seed-bootstrap CI.

This is where the pure metric functions (harness.metrics) meet a trained family: capture
the probe set, compute raw numbers *and* their chance-level controls, aggregate over seeds
with harness.stats, and return an :class:`harness.results.Analysis`.

Measurement names (``value`` per layer unless noted):

* ``head_stability.{all_anchors,anchor,hungarian}``: the paper's head stability S_l
  (mean over heads of the best-match similarity); ``all_anchors`` is the regression default.
* ``head_stability_null.all_anchors``: the shuffled-prompt null (the other seed's heads
  scored on a different probe prompt); ``content_specific.all_anchors`` = raw − null and
  ``content_specific_normalized.all_anchors`` = (raw − null) / (1 − null).
* ``head_stability_step0.all_anchors``: the same family at initialisation (a ceiling:
  near-uniform attention matches everything).
* ``head_stability.spread`` / ``content_specific.spread`` (scalar): max − min over layers;
  ``head_stability.min_rel_depth`` (scalar): relative depth of the minimum.
* ``cross_layer.all_anchors``: best match over all layers; ``cross_layer.same_layer_fraction``
  (scalar).
* ``resid_cka.{linear,debiased,rbf}.{pre,mid,post}``; ``head_cka.{linear,debiased}``
  (hook_z of all heads); ``matched_head_cka.linear`` (Hungarian-matched single heads).
* ``gap.cka`` = resid_cka.debiased.mid − head_cka.debiased (like for like: resid_mid is the
  stream right after the heads wrote into it); ``gap.pattern`` = resid_cka.debiased.mid −
  head_stability.all_anchors (the paper's comparison); ``gap.cka.trend`` and
  ``gap.pattern.trend`` (scalar slopes over relative depth). Debiased CKA is its own
  chance-corrected counterpart (≈ 0 for unrelated representations), so ``gap.cka`` is the
  content-specific form of the residual-over-head claim.
* ``distinctness``, ``uniform_similarity``, ``attention_entropy`` (per seed).
* ``induction.max_score``, ``prev_token.max_score`` (scalar per seed), ``induction.similarity``.
* ``importance.spearman`` / ``importance.pearson``: per layer, r(ΔPPL of zero-ablating a
  head, its stability), per seed; ``importance.spearman.trend`` its slope over depth; the
  same with ``_cs`` against content-specific head stability; ``importance.delta_ppl`` mean
  ΔPPL. Undefined r (a constant side) counts as 0 and is counted in info.
* ``qnorm.pearson`` / ``qnorm.pearson_cs`` (scalar per seed): r(‖W_Q‖_F, S_l) across layers,
  raw and content-specific.
* ``prompt_length.all_anchors`` / ``prompt_length.content_specific``: stability over
  nested prefixes (value per length, see info ``prompt_lengths``); ``prompt_length.trend``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from harness import data as data_mod
from harness import stats
from harness.capture import FamilyCapture, capture_family
from harness.config import FamilyConfig
from harness.family import Family
from harness.metrics import circuits, cka, heads
from harness.model import ablate_heads, build_model
from harness.results import Analysis, Measurement
from harness.train import data_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnalysisOptions:
    n_boot: int = 1000
    ci: float = 0.95
    # "jackknife-t" (default: nominal coverage at 4-10 seeds) or "multi-bootstrap" (the
    # percentile Multi-Bootstrap; undercovers small families, see harness.stats)
    ci_method: str = "jackknife-t"
    seed: int = 0  # the bootstrap's generator
    null_shift: int = 1  # shuffled-prompt null: prompt p against prompt p + shift
    kernels: tuple[str, ...] = ("linear", "debiased", "rbf")
    step0: bool = True
    importance: bool = True
    cross_layer: bool = True
    prompt_lengths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # fractions of the probe length


def probe_tokens(cfg: FamilyConfig) -> torch.Tensor:
    """The family's probe prompts, int64 [P, T]: a prompts file or held-out generated text."""
    T = cfg.probe_len
    if cfg.probe.path is not None:
        return data_mod.load_prompts_file(cfg.probe.path, seq_len=T)[: cfg.probe.n_prompts]
    toks = data_mod.probe_set(data_source(cfg), n_prompts=cfg.probe.n_prompts, seed=cfg.probe.seed)
    return toks[:, :T].contiguous()


def analyze_family(family: Family, *, options: AnalysisOptions = AnalysisOptions(),
                   progress: Callable[[str], None] | None = None) -> Analysis:
    """Every measurement of ``family`` (see module doc)."""
    cfg = family.config
    say = progress or (lambda msg: log.info("%s: %s", cfg.name, msg))
    tokens = probe_tokens(cfg)
    if tokens.shape[0] < 2:
        raise ValueError(f"{cfg.source}: probe.n_prompts: at least 2 prompts are needed for the "
                         f"shuffled-prompt null, got {tokens.shape[0]}")
    if len(family.seeds) < 3:
        raise ValueError(f"{cfg.source}: seeds: a family needs at least 3 seeds for seed-level confidence "
                         f"intervals and tests, got {len(family.seeds)}; add seeds to the spec")
    t0 = time.perf_counter()
    say("capturing activations")
    cap = capture_family(family.models, tokens, seeds=[s.seed for s in family.seeds])
    agg = _Aggregator(options)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t, 4)
        return out

    say("head stability")
    stab = timed("head_stability", lambda: _head_measurements(cap, agg, options))
    if options.step0:
        say("step-0 ceiling")
        timed("step0", lambda: _step0(family, tokens, agg, options))
    if options.cross_layer:
        timed("cross_layer", lambda: _cross_layer(cap, agg))
    say("controls and circuits")
    timed("controls", lambda: _controls(cap, agg))
    say("CKA")
    timed("cka", lambda: _cka(cap, stab, agg, options))
    if options.importance:
        say("head ablations")
        timed("importance", lambda: _importance(family, tokens, stab, agg))
    timed("qnorm", lambda: _qnorm(family, stab, agg))
    lengths = timed("prompt_length", lambda: _prompt_length(cap, agg, options))
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
    }
    return Analysis(family=cfg.name, fingerprint=family.fingerprint, seeds=tuple(s.seed for s in family.seeds),
                    device_class=family.device_class, probe_digest=data_mod.digest(tokens),
                    measurements=dict(agg.out), info=info)


# ------------------------------------------------------------------------ aggregation


class _Aggregator:
    def __init__(self, options: AnalysisOptions) -> None:
        if options.ci_method not in stats.CI_METHODS:
            raise ValueError(f"ci_method: expected one of {stats.CI_METHODS}, got {options.ci_method!r}")
        self.o = options
        self.gen = np.random.default_rng(options.seed)
        self.out: dict[str, Measurement] = {}
        self.extra: dict[str, Any] = {}

    @property
    def _jackknife(self) -> bool:
        return self.o.ci_method == "jackknife-t"

    def pairwise(self, name: str, pw: np.ndarray, *, higher: bool, desc: str) -> None:
        """A mean over distinct seed pairs, ``pw`` [M, M, *shape]."""
        est = (stats.seed_jackknife_t(pw, ci=self.o.ci) if self._jackknife else
               stats.seed_bootstrap(pw, n_boot=self.o.n_boot, ci=self.o.ci, generator=self.gen))
        self.out[name] = Measurement(name=name, value=np.asarray(est.value), lo=np.asarray(est.lo),
                                     hi=np.asarray(est.hi), higher_is_better=higher, description=desc,
                                     pairwise=np.asarray(pw, dtype=float), n_seeds=pw.shape[0], ci=self.o.ci)

    def per_seed(self, name: str, v: np.ndarray, *, higher: bool, desc: str,
                 bounds: tuple[float, float] | None = None) -> None:
        """A mean over seeds, ``v`` [M, *shape]. ``bounds``: the statistic's range (e.g. -1, 1
        for a correlation); a t interval is clipped to it (clipping never loses coverage)."""
        est = (stats.seed_t_per_seed(v, ci=self.o.ci) if self._jackknife else
               stats.seed_bootstrap_per_seed(v, n_boot=self.o.n_boot, ci=self.o.ci, generator=self.gen))
        lo, hi = np.asarray(est.lo), np.asarray(est.hi)
        if bounds is not None:
            lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
        self.out[name] = Measurement(name=name, value=np.asarray(est.value), lo=lo,
                                     hi=hi, higher_is_better=higher, description=desc,
                                     per_seed=np.asarray(v, dtype=float), n_seeds=v.shape[0], ci=self.o.ci)

    def derived(self, name: str, pw: np.ndarray, fn: Callable[[np.ndarray], float], *, higher: bool,
                desc: str, smooth: bool = True) -> None:
        """A function of the per-layer family means (a spread, a depth trend): jackknife-t
        when ``fn`` is smooth and that is the CI method, else bootstrapped over seeds with
        the Multi-Bootstrap rule (pairs of distinct original seeds only)."""
        M = pw.shape[0]
        if smooth and self._jackknife:
            est = stats.jackknife_t_function(pw, fn, ci=self.o.ci)
            value, lo, hi = est.value, est.lo, est.hi
        else:
            value = float(fn(stats.family_mean(pw)))
            boots = []
            for _ in range(self.o.n_boot):
                idx = self.gen.integers(M, size=M)
                distinct = idx[:, None] != idx[None, :]
                if not distinct.any():
                    continue
                sub = pw[idx][:, idx]  # (M, M, *shape)
                boots.append(fn(sub[distinct].mean(axis=0)))
            lo, hi = np.quantile(boots, [(1 - self.o.ci) / 2, (1 + self.o.ci) / 2]) if boots else (np.nan, np.nan)
        self.out[name] = Measurement(name=name, value=np.asarray(value), lo=np.asarray(lo), hi=np.asarray(hi),
                                     higher_is_better=higher, description=desc, n_seeds=M, ci=self.o.ci)


def _layer_mean(pw_heads: np.ndarray) -> np.ndarray:
    return np.asarray(pw_heads, dtype=float).mean(axis=-1)  # [M, M, L, H] -> [M, M, L]


def _spread(per_layer: np.ndarray) -> float:
    return float(np.max(per_layer) - np.min(per_layer))


def _min_rel_depth(per_layer: np.ndarray) -> float:
    L = len(per_layer)
    return float(np.argmin(per_layer) / (L - 1)) if L > 1 else 0.0


# -------------------------------------------------------------------------- metrics


def _head_measurements(cap: FamilyCapture, agg: _Aggregator, o: AnalysisOptions) -> dict[str, Any]:
    P = cap.shape["prompts"]
    C = heads.similarity(cap.patterns)  # (L, M, H, M, H)
    C_null = heads.similarity(cap.patterns, prompt_shift=o.null_shift % P or 1)
    out: dict[str, Any] = {"C": C}
    for method in ("all_anchors", "hungarian"):
        hs = heads.head_stability(C, method=method)
        out[method] = hs
        agg.pairwise(f"head_stability.{method}", _layer_mean(hs.pairwise), higher=True,
                     desc=f"head-pattern stability per layer ({method} matching)")
    anchor = heads.head_stability(C, method="anchor")
    # The paper anchors on seed 1 (our first seed): the other seeds are its units.
    agg.per_seed("head_stability.anchor", _layer_mean(anchor.pairwise)[0, 1:], higher=True,
                 desc="head-pattern stability per layer, the paper's seed-1 anchor, greedy")
    null = heads.head_stability(C_null, method="all_anchors")
    raw_pw, null_pw = _layer_mean(out["all_anchors"].pairwise), _layer_mean(null.pairwise)
    agg.pairwise("head_stability_null.all_anchors", null_pw, higher=True,
                 desc="shuffled-prompt null: stability against the other seed's heads on another prompt")
    cs = heads.content_specific(raw_pw, null_pw)
    agg.pairwise("content_specific.all_anchors", cs, higher=True,
                 desc="content-specific head stability: raw minus the shuffled-prompt null")
    agg.pairwise("content_specific_normalized.all_anchors", heads.content_specific_normalized(raw_pw, null_pw),
                 higher=True, desc="(raw - null) / (1 - null): share of the room above chance")
    agg.derived("head_stability.spread", raw_pw, _spread, higher=False,
                desc="depth spread: max - min of layer stability")
    agg.derived("content_specific.spread", cs, _spread, higher=False,
                desc="depth spread of content-specific stability")
    agg.derived("head_stability.min_rel_depth", raw_pw, _min_rel_depth, higher=True, smooth=False,
                desc="relative depth (0 first, 1 last layer) of the least stable layer")
    agg.derived("content_specific.min_rel_depth", cs, _min_rel_depth, higher=True, smooth=False,
                desc="relative depth of the least content-stable layer")
    # Per head (layer x head map) for the heatmap; kept as a measurement so baselines hold it.
    agg.pairwise("head_stability.per_head", np.asarray(out["all_anchors"].pairwise, dtype=float)
                 .reshape(*raw_pw.shape[:2], -1), higher=True,
                 desc="head stability per (layer, head), flattened layer-major")
    out["null"] = null
    out["raw_pw"], out["cs_pw"] = raw_pw, cs
    out["cs_heads"] = (np.asarray(out["all_anchors"].pairwise, dtype=float)
                       - np.asarray(null.pairwise, dtype=float))  # [M, M, L, H]
    return out


def _step0(family: Family, tokens: torch.Tensor, agg: _Aggregator, o: AnalysisOptions) -> None:
    cfg = family.config
    untrained = [build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                             init_seed=cfg.seed_pair(s.seed)[0], source=cfg.source) for s in family.seeds]
    cap0 = capture_family(untrained, tokens, seeds=[s.seed for s in family.seeds])
    C0 = heads.similarity(cap0.patterns)
    hs0 = heads.head_stability(C0, method="all_anchors")
    agg.pairwise("head_stability_step0.all_anchors", _layer_mean(hs0.pairwise), higher=True,
                 desc="head stability of the untrained family (step 0): the ceiling uniform attention gives")


def _cross_layer(cap: FamilyCapture, agg: _Aggregator) -> None:
    cl = heads.cross_layer_stability(cap.patterns)
    agg.pairwise("cross_layer.all_anchors", _layer_mean(cl.pairwise), higher=True,
                 desc="best match over every layer of the other seed")
    same = np.asarray(cl.same_layer, dtype=float).mean(axis=(-1, -2))  # [M, M]
    M = same.shape[0]
    same[np.eye(M, dtype=bool)] = np.nan
    agg.pairwise("cross_layer.same_layer_fraction", same, higher=True,
                 desc="share of heads whose best cross-layer match lies in the same layer")
    agg.extra["same_layer_fraction"] = float(cl.same_layer_fraction)


def _controls(cap: FamilyCapture, agg: _Aggregator) -> None:
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
    agg.extra["induction_heads"] = [[int(l), int(h), float(s)] for (l, h), s in zip(sim.heads, sim.best_scores)]


def _cka(cap: FamilyCapture, stab: dict[str, Any], agg: _Aggregator, o: AnalysisOptions) -> None:
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
    agg.pairwise("matched_head_cka.linear", _layer_mean(matched), higher=True,
                 desc="CKA of Hungarian-matched single heads (linear)")
    if ("debiased", "mid") in resid and "debiased" in head_pw:
        gap = cka.stability_gap(resid["debiased", "mid"], head_pw["debiased"])
        agg.pairwise("gap.cka", gap, higher=True,
                     desc="residual-over-head gap, like for like: resid_mid CKA - head-output CKA (debiased)")
        if gap.shape[-1] >= 2:
            agg.derived("gap.cka.trend", gap, cka.depth_trend, higher=True,
                        desc="slope of the CKA gap over relative depth")
        pattern_gap = resid["debiased", "mid"] - stab["raw_pw"]
        agg.pairwise("gap.pattern", pattern_gap, higher=True,
                     desc="resid_mid CKA (debiased) - head-pattern stability (the paper's comparison)")
        if pattern_gap.shape[-1] >= 2:
            agg.derived("gap.pattern.trend", pattern_gap, cka.depth_trend, higher=True,
                        desc="slope of the paper-way gap over relative depth")


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


def head_importance(model: nn.Module, tokens: torch.Tensor) -> np.ndarray:
    """ΔPPL of zero-ablating each head's hook_z on the probe set: [L, H]."""
    base = math.exp(_nll(model, tokens))
    L, H = model.n_layers, model.n_heads
    out = np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            with ablate_heads(model, {l: [h]}):
                out[l, h] = math.exp(_nll(model, tokens)) - base
    return out


def _per_seed_stability(pw: np.ndarray) -> np.ndarray:
    """[M, M, ...] seed-pair values -> [M, ...]: each seed's mean against the others."""
    M = pw.shape[0]
    off = ~np.eye(M, dtype=bool)
    return np.stack([pw[a][off[a]].mean(axis=0) for a in range(M)])


def _defined(r: np.ndarray, what: str, agg: _Aggregator) -> np.ndarray:
    """Correlations with NaN (one side constant: a dead layer) set to 0, counted in info and
    logged, so the family mean is readable and the count says how far to trust it."""
    n_undefined = int(np.isnan(r).sum())
    if n_undefined:
        log.warning("%s: %d of %d correlations undefined (constant input, e.g. a dead layer); "
                    "counted as r = 0", what, n_undefined, r.size)
    agg.extra.setdefault("undefined_correlations", {})[what] = n_undefined
    return np.nan_to_num(r)


def _per_seed_trend(r: np.ndarray) -> np.ndarray:
    """[M, L] per-layer values -> [M] slope over relative depth per seed."""
    return np.array([cka.depth_trend(row) for row in r])


def _importance(family: Family, tokens: torch.Tensor, stab: dict[str, Any], agg: _Aggregator) -> None:
    dppl = np.stack([head_importance(m, tokens) for m in family.models])  # [M, L, H]
    agg.per_seed("importance.delta_ppl", dppl.mean(axis=-1), higher=False,
                 desc="mean perplexity increase from zero-ablating one head, per layer")
    agg.extra["delta_ppl"] = dppl.tolist()
    sources = {"": (np.asarray(stab["all_anchors"].pairwise, dtype=float), "head stability"),
               "_cs": (stab["cs_heads"], "content-specific head stability")}
    for suffix, (pw, what) in sources.items():
        r_p, r_s = heads.pearson_spearman(dppl, _per_seed_stability(pw))  # [M, L] each
        r_p = _defined(r_p, f"importance.pearson{suffix}", agg)
        r_s = _defined(r_s, f"importance.spearman{suffix}", agg)
        agg.per_seed(f"importance.pearson{suffix}", r_p, higher=False, bounds=(-1.0, 1.0),
                     desc=f"Pearson r(ΔPPL, {what}) across a layer's heads (negative: unstable heads matter more)")
        agg.per_seed(f"importance.spearman{suffix}", r_s, higher=False, bounds=(-1.0, 1.0),
                     desc=f"Spearman r(ΔPPL, {what}) across a layer's heads")
        if r_s.shape[1] >= 2:
            agg.per_seed(f"importance.spearman{suffix}.trend", _per_seed_trend(r_s), higher=False,
                         desc=f"slope over relative depth of Spearman r(ΔPPL, {what})")


def _qnorm(family: Family, stab: dict[str, Any], agg: _Aggregator) -> None:
    models = family.models
    if not all(hasattr(m, "query_weight") for m in models):
        return
    qn = np.array([[float(m.query_weight(l).detach().norm()) for l in range(m.n_layers)] for m in models])  # [M, L]
    agg.per_seed("qnorm.frobenius", qn, higher=False, desc="‖W_Q‖_F per layer")
    if qn.shape[1] < 3:
        return
    for suffix, pw, what in (("", stab["raw_pw"], "layer stability"),
                             ("_cs", stab["cs_pw"], "content-specific layer stability")):
        r_p, _ = heads.pearson_spearman(qn, _per_seed_stability(pw))  # [M]
        agg.per_seed(f"qnorm.pearson{suffix}", _defined(np.asarray(r_p, dtype=float), f"qnorm.pearson{suffix}", agg),
                     higher=False, bounds=(-1.0, 1.0),
                     desc=f"Pearson r(query-weight norm, {what}) across layers")


def _prompt_length(cap: FamilyCapture, agg: _Aggregator, o: AnalysisOptions) -> list[int]:
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
        r = _layer_mean(heads.head_stability(C, method="all_anchors").pairwise).mean(axis=-1)  # [M, M]
        n = _layer_mean(heads.head_stability(Cn, method="all_anchors").pairwise).mean(axis=-1)
        raw.append(r)
        cs.append(r - n)
    raw_pw, cs_pw = np.stack(raw, axis=-1), np.stack(cs, axis=-1)  # [M, M, n_lengths]
    agg.pairwise("prompt_length.all_anchors", raw_pw, higher=True,
                 desc="head stability (mean over layers) on nested prompt prefixes, per length")
    agg.pairwise("prompt_length.content_specific", cs_pw, higher=True,
                 desc="content-specific stability on nested prompt prefixes, per length")
    if len(lengths) >= 2:
        agg.derived("prompt_length.trend", raw_pw, cka.depth_trend, higher=True,
                    desc="slope of stability over relative prompt length (negative: longer prompts less stable)")
        agg.derived("prompt_length.content_specific_trend", cs_pw, cka.depth_trend, higher=True,
                    desc="slope of content-specific stability over relative prompt length")
    return lengths


def compare_families(a: Analysis, b: Analysis, *, metrics: Sequence[str], n_boot: int = 1000,
                     alternative: str = "two-sided", seed: int = 0,
                     adjust: str = "holm", ci_method: str = "jackknife-t") -> dict[str, stats.Comparison]:
    """b − a for each metric.

    Paired when the two families have the same seeds (seed k of each shares init and data
    order): pairwise metrics by a sign-flip test on seed pseudo-values, per-seed metrics by a
    sign-flip test on the per-seed differences, CIs from the paired bootstrap. Otherwise
    unpaired (seed-label permutation). A per-layer metric's p-values are Holm-adjusted across
    its layers (``adjust="holm"``, the default; ``"none"`` gives the raw per-layer p-values).
    CIs: ``ci_method`` as in :class:`AnalysisOptions` (t intervals over the same seed-level
    units the tests use, or the bootstrap).
    """
    if adjust not in ("holm", "none"):
        raise ValueError(f"adjust: expected 'holm' or 'none', got {adjust!r}")
    gen = np.random.default_rng(seed)
    paired = tuple(a.seeds) == tuple(b.seeds)
    out = {}
    for name in metrics:
        ma, mb = a[name], b[name]
        if np.shape(ma.value) != np.shape(mb.value):
            raise ValueError(f"cannot compare {name} of {a.family} and {b.family} layer by layer: shapes "
                             f"{np.shape(ma.value)} and {np.shape(mb.value)} differ (different layer counts?)")
        kw = dict(n_boot=n_boot, generator=gen, alternative=alternative, ci_method=ci_method)
        if ma.pairwise is not None and mb.pairwise is not None:
            c = (stats.paired_difference(ma.pairwise, mb.pairwise, **kw) if paired else
                 stats.permutation_difference(ma.pairwise, mb.pairwise, pairwise=True, **kw))
        elif paired and ma.per_seed is not None and mb.per_seed is not None:
            c = stats.paired_difference_per_seed(ma.per_seed, mb.per_seed, **kw)
        else:
            c = stats.permutation_difference(ma.unit_values(), mb.unit_values(), **kw)
        if adjust == "holm" and np.ndim(c.p_value) > 0 and np.size(c.p_value) > 1:
            c = dataclasses.replace(c, p_value=stats.holm(c.p_value), method=c.method + " (Holm across layers)")
        out[name] = c
    return out
