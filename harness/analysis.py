"""Family -> Analysis: every stability metric with its seed-bootstrap CI.

This is where the pure metric functions (harness.metrics) meet a trained family: capture
the probe set, compute raw numbers *and* their chance-level controls, aggregate over seeds
with harness.stats, and return an :class:`harness.results.Analysis`.

Measurement names (``value`` per layer unless noted):

* ``head_stability.{all_anchors,anchor,hungarian}``: the paper's head stability S_l
  (mean over heads of the best-match similarity); ``all_anchors`` is the regression default.
  ``anchor`` (the paper's seed-1 anchor) is reported with a CI conditional on the anchor
  seed and is not baselinable (its units share the anchor).
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
* ``importance.spearman`` / ``importance.pearson``: per layer, the family mean over seeds
  of r(ΔPPL of zero-ablating a head, its stability against the other seeds);
  ``importance.spearman.trend`` its slope over depth; the same with ``_cs`` against
  content-specific head stability; ``importance.delta_ppl`` mean ΔPPL. Undefined r (a
  constant side) counts as 0 and is counted in info. Their per-seed units are the
  jackknife pseudo-values of the family r (see :func:`_seed_correlations`).
* ``qnorm.pearson`` / ``qnorm.pearson_cs`` (scalar): the same for r(‖W_Q‖_F, S_l) across
  layers, raw and content-specific.
* ``prompt_length.all_anchors`` / ``prompt_length.content_specific``: stability over
  nested prefixes (value per length, see info ``prompt_lengths``); ``prompt_length.trend``.

A degenerate family (a seed whose activations are NaN, a layer whose every head is uniform
so that the shuffled-prompt null is 1) is analysed, not refused: undefined values are NaN
and ``info["degenerate"]`` names each ("<metric> layer 1: null = 1 (...)").
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
    agg = _Aggregator(options, seeds=cap.seeds)
    cap, agg.bad_seeds = _finite_capture(cap)
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
        "degenerate": list(agg.degenerate),  # what is NaN, and why ([] for a healthy family)
    }
    return Analysis(family=cfg.name, fingerprint=family.fingerprint, seeds=tuple(s.seed for s in family.seeds),
                    device_class=family.device_class, probe_digest=data_mod.digest(tokens),
                    measurements=dict(agg.out), info=info)


# ------------------------------------------------------------------------ aggregation


_PLURAL = {"layer": "layers", "prompt length": "prompt lengths", "head (layer-major)": "heads (layer-major)"}


class _Aggregator:
    """Turns seed-level arrays into Measurements, and names what is undefined.

    Undefined values (a seed whose activations are non-finite, a statistic with no room
    above its null) never reach harness.stats as NaN: the defined elements are estimated
    as usual, the undefined ones become NaN in value/lo/hi, and each is named in
    ``degenerate`` ("<metric> layer 1: <why>"), which analyze_family puts into
    ``Analysis.info["degenerate"]``.
    """

    def __init__(self, options: AnalysisOptions, seeds: Sequence[int] = ()) -> None:
        if options.ci_method not in stats.CI_METHODS:
            raise ValueError(f"ci_method: expected one of {stats.CI_METHODS}, got {options.ci_method!r}")
        self.o = options
        self.gen = np.random.default_rng(options.seed)
        self.out: dict[str, Measurement] = {}
        self.extra: dict[str, Any] = {}
        self.seeds = tuple(seeds)
        self.bad_seeds: tuple[int, ...] = ()  # indices of seeds with non-finite activations
        self.degenerate: list[str] = []

    @property
    def _jackknife(self) -> bool:
        return self.o.ci_method == "jackknife-t"

    # -------------------------------------------------------------- masking and naming

    def mask_pairwise(self, pw: np.ndarray) -> np.ndarray:
        """[M, M, ...] with every pair that involves a non-finite seed set to NaN."""
        pw = np.array(pw, dtype=float)
        if self.bad_seeds:
            bad = list(self.bad_seeds)
            pw[bad] = np.nan
            pw[:, bad] = np.nan
        return pw

    def mask_per_seed(self, v: np.ndarray) -> np.ndarray:
        """[M, ...] with the rows of non-finite seeds set to NaN."""
        v = np.array(v, dtype=float)
        if self.bad_seeds:
            v[list(self.bad_seeds)] = np.nan
        return v

    def _seed_label(self, idx: Sequence[int]) -> str:
        names = [str(self.seeds[i]) if i < len(self.seeds) else f"#{i}" for i in idx]
        return ("seed " if len(names) == 1 else "seeds ") + ", ".join(names)

    def _default_why(self, finite_pairs: np.ndarray) -> str:
        """Why an element is undefined, from its [M, M] (pairwise) or [M] (per-seed) finiteness."""
        if self.bad_seeds:
            return f"{self._seed_label(self.bad_seeds)}: non-finite activations (NaN or inf)"
        if finite_pairs.ndim == 1:
            return f"{self._seed_label(np.flatnonzero(~finite_pairs))}: value is NaN or inf"
        M = finite_pairs.shape[0]
        off = ~np.eye(M, dtype=bool)
        bad = off & ~finite_pairs
        seeds = sorted(set(np.flatnonzero(bad.any(axis=0))) | set(np.flatnonzero(bad.any(axis=1))))
        return f"NaN or inf for {int(bad.sum())} of {M * (M - 1)} seed pairs ({self._seed_label(seeds)})"

    def _name_undefined(self, name: str, undefined: np.ndarray, axis: str,
                        why: Callable[[tuple[int, ...]], str]) -> None:
        """One entry per reason: '<name> <axis> i, j: <why>' (no index for a scalar)."""
        by_reason: dict[str, list[tuple[int, ...]]] = {}
        for idx in map(tuple, np.argwhere(undefined)):
            by_reason.setdefault(why(idx), []).append(tuple(int(i) for i in idx))
        for reason, idxs in by_reason.items():
            if not idxs[0]:
                where = ""
            else:
                labels = [str(i[0]) if len(i) == 1 else str(i) for i in idxs]
                where = f" {_PLURAL.get(axis, axis) if len(labels) > 1 else axis} {', '.join(labels)}"
            self.degenerate.append(f"{name}{where}: {reason}")
            if not self.bad_seeds:  # a non-finite seed is warned about once, not per measurement
                log.warning("undefined: %s", self.degenerate[-1])

    def _estimate_defined(self, name: str, x: np.ndarray, defined: np.ndarray,
                          estimate: Callable[[np.ndarray], stats.Estimate],
                          lead: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """value/lo/hi of shape x.shape[lead:] from ``estimate`` on the defined elements only."""
        shape = x.shape[lead:]
        flat = x.reshape(x.shape[:lead] + (-1,))
        keep = defined.reshape(-1)
        out = [np.full(keep.shape, np.nan) for _ in range(3)]
        if keep.any():
            try:
                est = estimate(flat[..., keep])
            except ValueError as e:  # say which measurement; the message names the entry
                raise ValueError(f"{name}: {e}") from None
            for o, v in zip(out, (est.value, est.lo, est.hi)):
                o[keep] = np.asarray(v, dtype=float).reshape(-1)
        return tuple(o.reshape(shape) for o in out)  # type: ignore[return-value]

    # -------------------------------------------------------------- measurements

    def pairwise(self, name: str, pw: np.ndarray, *, higher: bool, desc: str, axis: str = "layer",
                 why: Callable[[tuple[int, ...]], str] | None = None, masked: bool = True) -> None:
        """A mean over distinct seed pairs, ``pw`` [M, M, *shape]. Elements with a non-finite
        seed pair are NaN and named (``why(index)`` says why; ``masked=False`` for statistics
        that do not read the trained seeds' activations, e.g. the untrained family)."""
        pw = self.mask_pairwise(pw) if masked else np.array(pw, dtype=float)
        M = pw.shape[0]
        finite = np.isfinite(pw) | np.eye(M, dtype=bool).reshape((M, M) + (1,) * (pw.ndim - 2))
        defined = finite.all(axis=(0, 1))  # [*shape]
        est = ((lambda x: stats.seed_jackknife_t(x, ci=self.o.ci)) if self._jackknife else
               (lambda x: stats.seed_bootstrap(x, n_boot=self.o.n_boot, ci=self.o.ci, generator=self.gen)))
        value, lo, hi = self._estimate_defined(name, pw, defined, est, lead=2)
        if not defined.all():
            self._name_undefined(name, ~defined, axis, why or (lambda i: self._default_why(finite[(...,) + i]
                                                                                        if i else finite)))
        self.out[name] = Measurement(name=name, value=value, lo=lo, hi=hi, higher_is_better=higher,
                                     description=desc, pairwise=pw, n_seeds=M, ci=self.o.ci)

    def per_seed(self, name: str, v: np.ndarray, *, higher: bool, desc: str,
                 bounds: tuple[float, float] | None = None, axis: str = "layer", masked: bool = True,
                 baselinable: bool = True, baseline_note: str = "") -> None:
        """A mean over seeds, ``v`` [M, *shape]. ``bounds``: the statistic's range (e.g. -1, 1
        for a correlation); a t interval is clipped to it (clipping never loses coverage).
        Elements where a seed's value is NaN or inf are NaN and named."""
        v = self.mask_per_seed(v) if masked else np.array(v, dtype=float)
        finite = np.isfinite(v)
        defined = finite.all(axis=0)
        est = ((lambda x: stats.seed_t_per_seed(x, ci=self.o.ci)) if self._jackknife else
               (lambda x: stats.seed_bootstrap_per_seed(x, n_boot=self.o.n_boot, ci=self.o.ci,
                                                        generator=self.gen)))
        value, lo, hi = self._estimate_defined(name, v, defined, est, lead=1)
        if bounds is not None:
            lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
        if not defined.all():
            self._name_undefined(name, ~defined, axis,
                                 lambda i: self._default_why(finite[(slice(None),) + i]))
        self.out[name] = Measurement(name=name, value=value, lo=lo, hi=hi, higher_is_better=higher,
                                     description=desc, per_seed=v, n_seeds=v.shape[0], ci=self.o.ci,
                                     baselinable=baselinable, baseline_note=baseline_note)

    def derived(self, name: str, pw: np.ndarray, fn: Callable[[np.ndarray], float], *, higher: bool,
                desc: str, smooth: bool = True) -> None:
        """A function of the per-layer family means (a spread, a depth trend): jackknife-t
        when ``fn`` is smooth and that is the CI method, else bootstrapped over seeds with
        the Multi-Bootstrap rule (pairs of distinct original seeds only). NaN (and named)
        when any element of its input is undefined."""
        pw = self.mask_pairwise(pw)
        M = pw.shape[0]
        finite = np.isfinite(pw) | np.eye(M, dtype=bool).reshape((M, M) + (1,) * (pw.ndim - 2))
        if not finite.all():
            self.degenerate.append(f"{name}: undefined because its per-layer input is "
                                   f"({self._default_why(finite.all(axis=tuple(range(2, pw.ndim))))})")
            nan = np.asarray(np.nan)
            self.out[name] = Measurement(name=name, value=nan, lo=nan, hi=nan, higher_is_better=higher,
                                         description=desc, n_seeds=M, ci=self.o.ci)
            return
        if smooth and self._jackknife:
            try:
                est = stats.jackknife_t_function(pw, fn, ci=self.o.ci)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
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
    _anchor(C, agg)
    null = heads.head_stability(C_null, method="all_anchors")
    raw_pw, null_pw = _layer_mean(out["all_anchors"].pairwise), _layer_mean(null.pairwise)
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
                 .reshape(*raw_pw.shape[:2], -1), higher=True, axis="head (layer-major)",
                 desc="head stability per (layer, head), flattened layer-major")
    out["null"] = null
    out["raw_pw"], out["cs_pw"] = raw_pw, cs
    out["cs_heads"] = (np.asarray(out["all_anchors"].pairwise, dtype=float)
                       - np.asarray(null.pairwise, dtype=float))  # [M, M, L, H]
    return out


ANCHOR_NOTE = ("head_stability.anchor is conditional on the anchor seed; baseline head_stability.all_anchors "
               "instead (its M - 1 units all share the anchor, so they are not independent seed units)")


def _anchor(C: torch.Tensor, agg: _Aggregator) -> None:
    """The paper's measure: our first seed (the paper's seed 1) anchors, greedy matching.

    value [L] = mean over m != anchor of S(anchor, m), unchanged. Its units S(anchor, m) are
    independent given the anchor (the other seeds are independent draws) but all share it,
    so the t interval over them is a CI *conditional on the anchor seed*: it says how well
    this anchor is matched, not how stable a fresh family is. Kept as a reported number;
    not baselinable (``Measurement.unit_values`` refuses it with :data:`ANCHOR_NOTE`):
    ``head_stability.all_anchors`` is the family-level statistic.
    """
    anchor = heads.head_stability(C, method="anchor")
    rows = agg.mask_per_seed(_layer_mean(anchor.pairwise)[0])  # [M, L]: S(anchor, m), row 0 NaN
    if 0 in agg.bad_seeds:
        rows[:] = np.nan
    agg.per_seed("head_stability.anchor", rows[1:], higher=True, masked=False, baselinable=False,
                 baseline_note=ANCHOR_NOTE,
                 desc="head-pattern stability per layer, the paper's seed-1 anchor, greedy; CI: t over the "
                      "M - 1 other seeds, conditional on the anchor seed; per_seed holds those M - 1 seeds")


def _finite_capture(cap: FamilyCapture) -> tuple[FamilyCapture, tuple[int, ...]]:
    """(capture with every non-finite seed replaced by a finite placeholder, their indices).

    A seed whose activations hold NaN or inf (it diverged) would make every metric function
    raise or return garbage; its placeholder (uniform causal attention, fixed Gaussian z and
    residuals) lets the others be computed, and the aggregator sets every value that
    involves the seed to NaN, so nothing of the placeholder survives into a measurement.
    """
    def finite(k: int) -> bool:
        return bool(torch.isfinite(cap.patterns[k]).all() and torch.isfinite(cap.z[k]).all()
                    and all(torch.isfinite(r[k]).all() for r in cap.resid.values()))

    bad = tuple(k for k in range(cap.shape["seeds"]) if not finite(k))
    if not bad:
        return cap, bad
    gen = torch.Generator().manual_seed(0)
    patterns, z = cap.patterns.clone(), cap.z.clone()
    resid = {s: r.clone() for s, r in cap.resid.items()}
    T = cap.shape["tokens"]
    causal = torch.tril(torch.ones(T, T))
    uniform = causal / causal.sum(dim=-1, keepdim=True)  # [T, T]
    for k in bad:
        patterns[k] = uniform.expand_as(patterns[k])
        z[k] = torch.randn(z[k].shape, generator=gen)
        for r in resid.values():
            r[k] = torch.randn(r[k].shape, generator=gen)
    return dataclasses.replace(cap, patterns=patterns, z=z, resid=resid), bad


def _step0(family: Family, tokens: torch.Tensor, agg: _Aggregator, o: AnalysisOptions) -> None:
    cfg = family.config
    untrained = [build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                             init_seed=cfg.seed_pair(s.seed)[0], source=cfg.source) for s in family.seeds]
    cap0 = capture_family(untrained, tokens, seeds=[s.seed for s in family.seeds])
    C0 = heads.similarity(cap0.patterns)
    hs0 = heads.head_stability(C0, method="all_anchors")
    agg.pairwise("head_stability_step0.all_anchors", _layer_mean(hs0.pairwise), higher=True, masked=False,
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
    agg.extra["same_layer_fraction"] = math.nan if agg.bad_seeds else float(cl.same_layer_fraction)


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
    agg.extra["induction_heads"] = [[int(l), int(h), float(s) if k not in agg.bad_seeds else math.nan]
                                    for k, ((l, h), s) in enumerate(zip(sim.heads, sim.best_scores))]


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


def _row_stability(pw: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """pw [M, M, ...] -> [K, ...] for the K seeds in ``keep``: each one's mean against the other
    kept seeds. Rows, not columns: pw[k, m] is indexed by seed k's heads (greedy matching
    anchored at k), so row k is seed k's own heads' stability."""
    sub = np.asarray(pw, dtype=float)[np.ix_(keep, keep)]  # [K, K, ...]
    off = ~np.eye(len(keep), dtype=bool)
    return np.stack([sub[a][off[a]].mean(axis=0) for a in range(len(keep))])


def _count_undefined(r: np.ndarray, finite: np.ndarray, what: str, agg: _Aggregator) -> None:
    """Correlations undefined on finite input (one side constant: a dead layer) count as r = 0;
    counted in info and logged, so the family mean is readable and the count says how far to
    trust it."""
    n_undefined = int((np.isnan(r) & finite).sum())
    if n_undefined:
        log.warning("%s: %d of %d correlations undefined (constant input, e.g. a dead layer); "
                    "counted as r = 0", what, n_undefined, r.size)
    agg.extra.setdefault("undefined_correlations", {})[what] = n_undefined


def _seed_correlations(x: np.ndarray, pw: np.ndarray, name: Callable[[str], str], agg: _Aggregator,
                       kinds: tuple[str, ...] = ("pearson", "spearman")) -> dict[str, np.ndarray]:
    """The family-mean correlation R = mean_k r(x_k, S_k) and its seed-level units.

    x [M, *S, n]: per-seed values (ΔPPL per head, ‖W_Q‖ per layer); pw [M, M, *S, n]:
    seed-pair stability; S_k = seed k's row mean (:func:`_row_stability`); r along the last
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
        s = _row_stability(pw, keep)
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


def _per_seed_trend(r: np.ndarray) -> np.ndarray:
    """[M, L] per-layer values -> [M] slope over relative depth per seed (NaN rows stay NaN)."""
    return np.array([cka.depth_trend(row) if np.isfinite(row).all() else np.nan for row in r])


_CORRELATION_UNITS = ("per_seed: the jackknife pseudo-values of the family-mean r over seeds (recentred on "
                      "it), close to independent across seeds")


def _importance(family: Family, tokens: torch.Tensor, stab: dict[str, Any], agg: _Aggregator) -> None:
    dppl = agg.mask_per_seed(np.stack([head_importance(m, tokens) for m in family.models]))  # [M, L, H]
    agg.per_seed("importance.delta_ppl", dppl.mean(axis=-1), higher=False,
                 desc="mean perplexity increase from zero-ablating one head, per layer")
    agg.extra["delta_ppl"] = np.where(np.isfinite(dppl), dppl, np.nan).tolist()
    sources = {"": (agg.mask_pairwise(stab["all_anchors"].pairwise), "head stability"),
               "_cs": (agg.mask_pairwise(stab["cs_heads"]), "content-specific head stability")}
    for suffix, (pw, what) in sources.items():
        units = _seed_correlations(dppl, pw, lambda kind, s=suffix: f"importance.{kind}{s}", agg)  # [M, L]
        r_p, r_s = units["pearson"], units["spearman"]
        agg.per_seed(f"importance.pearson{suffix}", r_p, higher=False, bounds=(-1.0, 1.0),
                     desc=f"mean over seeds of Pearson r(ΔPPL, {what}) across a layer's heads, each seed's "
                          f"heads against the other seeds (negative: unstable heads matter more); "
                          f"{_CORRELATION_UNITS}")
        agg.per_seed(f"importance.spearman{suffix}", r_s, higher=False, bounds=(-1.0, 1.0),
                     desc=f"mean over seeds of Spearman r(ΔPPL, {what}) across a layer's heads; "
                          f"{_CORRELATION_UNITS}")
        if r_s.shape[1] >= 2:
            agg.per_seed(f"importance.spearman{suffix}.trend", _per_seed_trend(r_s), higher=False,
                         desc=f"slope over relative depth of Spearman r(ΔPPL, {what}); per_seed: the slope "
                              "of each seed's pseudo-values (the jackknife pseudo-values of the slope)")


def _qnorm(family: Family, stab: dict[str, Any], agg: _Aggregator) -> None:
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
        units = _seed_correlations(qn, agg.mask_pairwise(pw), lambda kind, s=suffix: f"qnorm.{kind}{s}", agg,
                                   kinds=("pearson",))  # [M]
        agg.per_seed(f"qnorm.pearson{suffix}", units["pearson"], higher=False, bounds=(-1.0, 1.0),
                     desc=f"mean over seeds of Pearson r(query-weight norm, {what}) across layers, each "
                          f"seed's layers against the other seeds; {_CORRELATION_UNITS}")


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


ADJUSTMENTS: tuple[str, ...] = ("max-t", "holm", "none")
COMPARE_ALTERNATIVES: tuple[str, ...] = stats.ALTERNATIVES + ("worse", "better")


def _direction(alternative: str, higher_is_better: bool) -> str:
    """'worse' / 'better' in a metric's own direction -> 'less' / 'greater' on Δ = b - a."""
    if alternative == "worse":
        return "less" if higher_is_better else "greater"
    if alternative == "better":
        return "greater" if higher_is_better else "less"
    return alternative


def _patterns(n_a: int, n_b: int, paired: bool) -> str:
    return f"2^{n_a} sign flips" if paired else f"C({n_a}+{n_b}, {n_b}) label splits"


def _check_power(a: Analysis, b: Analysis, *, n_a: int, n_b: int, paired: bool, rows: dict[str, int],
                 directions: dict[str, str], adjust: str, alpha: float, n_perm: int) -> None:
    """Raise stats.Underpowered when some row could never reach p < alpha."""
    total = sum(rows.values())
    for name, direction in directions.items():
        mult = rows[name] if adjust == "holm" else 1  # Holm multiplies the smallest p by the layers
        p_min = mult * stats.min_attainable_p(n_a, n_b, paired=paired, n_perm=n_perm, alternative=direction)
        if p_min < alpha:
            continue
        try:
            need = stats.seeds_needed(n_a, paired=paired, alpha=alpha / mult, n_perm=n_perm, alternative=direction)
            fix = (f"{need} paired seeds per family would reach it" if paired else
                   f"{need} seeds in {b.family} (against {n_a} in {a.family}) would reach it")
        except ValueError as e:
            fix = str(e)
        how = {"max-t": "max-T jointly over all rows", "holm": f"Holm across the {rows[name]} layers of {name}",
               "none": "no adjustment"}[adjust]
        raise stats.Underpowered(
            f"compare {a.family} vs {b.family}: {n_a} and {n_b} seeds ({'paired' if paired else 'unpaired'}), "
            f"{total} rows ({len(rows)} metrics x layers), {how}, alternative {direction!r}: the smallest "
            f"attainable p-value is {p_min:.3g} (1 / {_patterns(n_a, n_b, paired)}"
            f"{f' x {mult}' if mult > 1 else ''}) >= alpha {alpha:g}, so no row could ever be significant; "
            f"{fix}")


def _metric_comparison(ma: Measurement, mb: Measurement, *, paired: bool, kw: dict[str, Any]) -> stats.Comparison:
    """b - a for one metric, with its own (unadjusted) per-element p-values."""
    if ma.pairwise is not None and mb.pairwise is not None:
        return (stats.paired_difference(ma.pairwise, mb.pairwise, **kw) if paired else
                stats.permutation_difference(ma.pairwise, mb.pairwise, pairwise=True, **kw))
    if paired and ma.per_seed is not None and mb.per_seed is not None:
        return stats.paired_difference_per_seed(ma.per_seed, mb.per_seed, **kw)
    return stats.permutation_difference(ma.unit_values(), mb.unit_values(), **kw)


def compare_families(a: Analysis, b: Analysis, *, metrics: Sequence[str], n_boot: int = 1000,
                     alternative: str = "two-sided", seed: int = 0, adjust: str = "max-t",
                     ci_method: str = "jackknife-t", alpha: float | None = None,
                     n_perm: int = 10000) -> dict[str, stats.Comparison]:
    """b − a for each metric, one Comparison per metric (delta, CI, p per layer).

    Paired when the two families have the same seeds (seed k of each shares init and data
    order), else unpaired. Seed-level units: ``Measurement.unit_values()`` (jackknife
    pseudo-values for pairwise metrics, per-seed values otherwise); a measurement that is
    not baselinable (``head_stability.anchor``) is refused.

    ``alternative``: "greater" / "less" / "two-sided" on Δ, or "worse" / "better" in each
    metric's own direction (``higher_is_better``), so metrics of either direction can be
    tested together; each Comparison's ``alternative`` says the direction used on its Δ.

    ``adjust``: "max-t" (default): one joint max-T test over every row (every layer of
    every metric): the same sign flips (paired) or label splits (unpaired) for all rows,
    each row standardised, rows oriented by the alternative (stats.joint_paired /
    joint_unpaired). It controls the family-wise error over all rows, and its smallest
    attainable p stays 1/2^M or 1/C(Ma+Mb, Mb) however many rows are tested. "holm":
    Holm across each metric's layers only (not across metrics); "none": raw p-values.

    ``alpha``: when given, raise :class:`harness.stats.Underpowered` if no row could ever
    reach p < alpha with these seeds and this adjustment (such a check could never fail);
    the message names the seed counts, the rows, that p-value and the seed count that would do.
    CIs: ``ci_method`` as in :class:`AnalysisOptions`, per metric, not adjusted.
    """
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"adjust: expected one of {ADJUSTMENTS}, got {adjust!r}")
    if alternative not in COMPARE_ALTERNATIVES:
        raise ValueError(f"alternative: expected one of {COMPARE_ALTERNATIVES}, got {alternative!r}")
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))
                              or not 0.0 < alpha < 1.0):
        raise ValueError(f"alpha: expected a level strictly between 0 and 1 (e.g. 0.05), got {alpha!r}")
    if not metrics:
        raise ValueError("metrics: name at least one measurement to compare")
    gen = np.random.default_rng(seed)
    paired = tuple(a.seeds) == tuple(b.seeds)
    units_a, units_b, directions, rows = {}, {}, {}, {}
    for name in metrics:
        ma, mb = a[name], b[name]
        if np.shape(ma.value) != np.shape(mb.value):
            raise ValueError(f"cannot compare {name} of {a.family} and {b.family} layer by layer: shapes "
                             f"{np.shape(ma.value)} and {np.shape(mb.value)} differ (different layer counts?)")
        if ma.higher_is_better != mb.higher_is_better:
            raise ValueError(f"{name}: higher_is_better is {ma.higher_is_better} in {a.family} but "
                             f"{mb.higher_is_better} in {b.family}; the metric's definition differs")
        try:
            ua, ub = ma.unit_values(), mb.unit_values()
        except ValueError as e:
            raise ValueError(f"cannot compare {name}: {e}") from None
        units_a[name], units_b[name] = ua.reshape(ua.shape[0], -1), ub.reshape(ub.shape[0], -1)  # [M, rows]
        directions[name] = _direction(alternative, ma.higher_is_better)
        rows[name] = units_a[name].shape[1]
    n_a = {u.shape[0] for u in units_a.values()}
    n_b = {u.shape[0] for u in units_b.values()}
    if len(n_a) > 1 or len(n_b) > 1:
        raise ValueError(f"metrics {list(metrics)} have different numbers of seed-level values "
                         f"({sorted(n_a)} in {a.family}, {sorted(n_b)} in {b.family}); compare them separately")
    n_a, n_b = n_a.pop(), n_b.pop()
    if alpha is not None:
        _check_power(a, b, n_a=n_a, n_b=n_b, paired=paired, rows=rows, directions=directions,
                     adjust=adjust, alpha=alpha, n_perm=n_perm)
    out = {}
    for name in metrics:
        kw = dict(n_boot=n_boot, generator=gen, alternative=directions[name], ci_method=ci_method, n_perm=n_perm)
        try:
            c = _metric_comparison(a[name], b[name], paired=paired, kw=kw)
        except ValueError as e:
            raise ValueError(f"cannot compare {name} of {a.family} and {b.family}: {e}") from None
        if adjust == "holm" and np.size(c.p_value) > 1:
            c = dataclasses.replace(c, p_value=stats.holm(c.p_value), adjustment="holm",
                                    method=c.method + " (Holm across layers)")
        out[name] = c
    if adjust == "max-t":
        out = _joint_max_t(out, units_a, units_b, directions, paired=paired, n_perm=n_perm, generator=gen)
    return out


def _joint_max_t(out: dict[str, stats.Comparison], units_a: dict[str, np.ndarray], units_b: dict[str, np.ndarray],
                 directions: dict[str, str], *, paired: bool, n_perm: int,
                 generator: np.random.Generator) -> dict[str, stats.Comparison]:
    """Replace every Comparison's p-values by those of one joint max-T test over all rows."""
    names = list(out)
    two_sided = {directions[n] == "two-sided" for n in names}
    alternative = "two-sided" if two_sided == {True} else "greater"
    orient = np.concatenate([np.full(units_a[n].shape[1], -1.0 if directions[n] == "less" else 1.0) for n in names])
    ua = np.concatenate([units_a[n] for n in names], axis=1)  # [Ma, R]
    ub = np.concatenate([units_b[n] for n in names], axis=1)  # [Mb, R]
    joint = (stats.joint_paired if paired else stats.joint_unpaired)(
        ua, ub, alternative=alternative, orientation=orient, n_perm=n_perm, generator=generator)
    R, start, result = ua.shape[1], 0, {}
    for n in names:
        c, k = out[n], units_a[n].shape[1]
        p = joint.p_value[start:start + k].reshape(np.shape(c.p_value))
        start += k
        result[n] = dataclasses.replace(
            c, p_value=float(p) if p.ndim == 0 else p, adjustment="max-t", n_rows=R, n_perm=joint.n_perm,
            exact=joint.exact, method=c.method + f" (max-T jointly over {R} rows of {len(names)} metrics)")
    return result
