"""Family -> Analysis: every stability metric with its seed-level CI.

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
* ``gap.cka`` = resid_cka.debiased.mid − head_cka.debiased per seed pair (like for like:
  resid_mid is the stream right after the heads wrote into it); ``gap.paper`` = RBF CKA at
  resid_pre − anchor head stability (the paper's comparison, as the authors' code makes
  it): per layer and anchor pair, CKA(anchor, m) − S(anchor, m), reported like
  ``head_stability.anchor`` (CI conditional on the anchor seed, not baselinable);
  ``gap.cka.trend`` and ``gap.paper.trend`` (scalar slopes over relative depth). Debiased
  CKA is its own chance-corrected counterpart (≈ 0 for unrelated representations), so
  ``gap.cka`` is the content-specific form of the residual-over-head claim. A gap whose
  kernel is not in ``AnalysisOptions.kernels`` is not computed; ``info["absent"]`` says so.
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

Every measurement carries its range (``Measurement.bounds``, declared in
:mod:`harness.analysis.ranges`); an interval that reached past it is clipped and says so in
``Measurement.ci_note`` (listed in ``info["ci_clipped"]``).

Modules: :mod:`~harness.analysis.analyze` (the driver), :mod:`~harness.analysis.aggregate`
(seed-level arrays -> Measurements), :mod:`~harness.analysis.patterns`,
:mod:`~harness.analysis.representations`, :mod:`~harness.analysis.importance` (the
measurements), :mod:`~harness.analysis.compare` (two families),
:mod:`~harness.analysis.ranges`, :mod:`~harness.analysis.options`.
"""


from harness.analysis.analyze import analyze_family, probe_tokens
from harness.analysis.compare import ADJUSTMENTS, COMPARE_ALTERNATIVES, compare_families
from harness.analysis.importance import head_importance
from harness.analysis.options import AnalysisOptions
from harness.analysis.patterns import ANCHOR_NOTE
from harness.analysis.ranges import UNBOUNDED, metric_range
from harness.analysis.representations import GAP_PAPER_NOTE

__all__ = ["ADJUSTMENTS", "ANCHOR_NOTE", "COMPARE_ALTERNATIVES", "GAP_PAPER_NOTE", "UNBOUNDED", "AnalysisOptions",
           "analyze_family", "compare_families", "head_importance", "metric_range", "probe_tokens"]
