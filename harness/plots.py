"""PNG plots of an :class:`~harness.results.Analysis` (and of captured patterns: meta-SNE).

Every function draws on a fresh :class:`matplotlib.figure.Figure` (no pyplot, so no global
figure registry and no GUI backend), writes one PNG and returns its path. A raw stability
number means little on its own (near-uniform attention scores ~1), so the layer plot draws
the shuffled-prompt null and the step-0 ceiling beside it by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from harness.results import Analysis, Measurement

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    fig.clear()  # a Figure without pyplot is freed by GC; clearing drops its artists now
    return path


def _per_layer(analysis: Analysis, name: str) -> Measurement:
    m = analysis[name]
    if np.ndim(m.value) != 1:
        raise ValueError(f"{analysis.family}: measurement {name!r} is not per layer "
                         f"(value shape {np.shape(m.value)}); plot a per-layer measurement")
    return m


def _band(ax, m: Measurement, *, label: str, color=None, linestyle: str = "-", marker: str = "o",
          band: bool = True, relative: bool = False):
    """Line of ``m.value`` [L] over layer (or relative depth l / (L - 1)), shaded lo..hi;
    returns the line's colour."""
    x = _depth(len(m.value), relative)
    (line,) = ax.plot(x, m.value, linestyle=linestyle, marker=marker, color=color, label=label)
    if band:
        ax.fill_between(x, np.asarray(m.lo, dtype=float), np.asarray(m.hi, dtype=float),
                        color=line.get_color(), alpha=0.2, linewidth=0)
    return line.get_color()


def _depth(n_layers: int, relative: bool) -> np.ndarray:
    x = np.arange(n_layers, dtype=float)
    return x / max(n_layers - 1, 1) if relative else x


def _layer_axis(ax, n_layers: int, relative: bool = False) -> None:
    if relative:  # families of different depth: first layer at 0, last at 1
        ax.set_xlabel("relative depth, layer / (layers − 1)")
        ax.set_xticks(np.linspace(0.0, 1.0, 5))
    else:
        ax.set_xlabel("layer")
        ax.set_xticks(range(n_layers))
    ax.ticklabel_format(axis="y", useOffset=False)  # stabilities near 1 must read as such
    ax.grid(alpha=0.3)


def plot_layer_stability(analyses: Sequence[Analysis], path: str | Path, *,
                         metric: str = "head_stability.all_anchors", controls: bool = True) -> Path:
    """``metric`` per layer with its CI band, one line per family.

    With ``controls``: dashed lines for each family's shuffled-prompt null and step-0 ceiling
    (when the analysis has them) and a second panel with the content-specific stability
    (raw − null) and its CI, so the raw number is read against chance.
    """
    if not analyses:
        raise ValueError("plot_layer_stability: no analyses to plot")
    n_panels = 2 if controls else 1
    fig = Figure(figsize=(6.5 * n_panels, 4.2), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    depths = {len(_per_layer(a, metric).value) for a in analyses}
    relative = len(depths) > 1  # families of different depth are drawn against relative depth
    n_layers = max(depths)
    for a in analyses:
        m = _per_layer(a, metric)
        color = _band(axes[0], m, label=f"{a.family} (M={m.n_seeds}, L={len(m.value)})", relative=relative)
        if controls:
            for ctrl, style, tag in (("head_stability_null.all_anchors", "--", "null"),
                                     ("head_stability_step0.all_anchors", ":", "step 0")):
                if ctrl in a.measurements:
                    c = a[ctrl]
                    axes[0].plot(_depth(len(c.value), relative), c.value, linestyle=style, color=color,
                                 label=f"{a.family} {tag}")
            cs = _per_layer(a, "content_specific.all_anchors")
            _band(axes[1], cs, label=a.family, color=color, relative=relative)
    axes[0].set_title(metric)
    axes[0].set_ylabel("similarity")
    _layer_axis(axes[0], n_layers, relative)
    axes[0].legend(fontsize="small")
    if controls:
        axes[1].axhline(0.0, color="grey", linewidth=0.8)
        axes[1].set_title("content_specific.all_anchors (raw − shuffled-prompt null)")
        axes[1].set_ylabel("similarity above chance")
        _layer_axis(axes[1], n_layers, relative)
        axes[1].legend(fontsize="small")
    ci = analyses[0][metric].ci
    method = analyses[0].info.get("ci_method", "jackknife-t")
    fig.suptitle(f"head stability per layer ({ci:.0%} CI over seeds, {method})")
    return _save(fig, path)


RESID_VS_HEADS = ("resid_cka.debiased.pre", "resid_cka.debiased.mid", "resid_cka.debiased.post",
                  "head_cka.debiased", "head_stability.all_anchors")


def plot_resid_vs_heads(analysis: Analysis, path: str | Path) -> Path:
    """Residual-stream CKA (pre/mid/post), head-output CKA and head-pattern stability per
    layer, each with its CI band: the residual-over-head gap at a glance."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    L = 0
    for name, marker in zip(RESID_VS_HEADS, MARKERS):
        m = _per_layer(analysis, name)
        L = max(L, len(m.value))
        _band(ax, m, label=name, marker=marker,
              linestyle="--" if name.startswith("head_stability") else "-")
    ax.set_ylabel("CKA / similarity")
    _layer_axis(ax, L)
    ax.legend(fontsize="small")
    ax.set_title(f"{analysis.family}: residual stream vs heads (M={len(analysis.seeds)} seeds)")
    return _save(fig, path)


def plot_head_heatmap(analysis: Analysis, path: str | Path) -> Path:
    """Layer x head heatmap of ``head_stability.per_head``, each cell annotated."""
    m = analysis["head_stability.per_head"]
    L, H = analysis.info.get("n_layers"), analysis.info.get("n_heads")
    values = np.asarray(m.value, dtype=float)
    if L is None or H is None or values.size != L * H:
        raise ValueError(f"{analysis.family}: head_stability.per_head has {values.size} values; "
                         f"info says n_layers={L}, n_heads={H} (the analysis is incomplete)")
    grid = values.reshape(L, H)  # layer-major, as analysis.py flattens it
    fig = Figure(figsize=(2.5 + 0.8 * H, 1.5 + 0.6 * L), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for l in range(L):
        for h in range(H):
            v = grid[l, h]
            ax.text(h, l, "-" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center",
                    fontsize=8, color="black" if np.isfinite(v) and v > 0.6 else "white")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(H))
    ax.set_yticks(range(L))
    fig.colorbar(im, ax=ax, label="head stability (all anchors)")
    ax.set_title(f"{analysis.family}: per-head stability")
    return _save(fig, path)


def plot_importance(analysis: Analysis, path: str | Path) -> Path:
    """Per layer: Spearman r(ΔPPL, head stability) with CI, and mean ΔPPL with CI and each
    seed's value as dots.

    Per-head ΔPPL is not in the Analysis (analysis.py keeps it outside ``info``), so this is
    the per-layer view; a per-head scatter needs it exported first.
    """
    rho = _per_layer(analysis, "importance.spearman")
    dppl = _per_layer(analysis, "importance.delta_ppl")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    _band(ax1, rho, label="Spearman r(ΔPPL, stability)")
    ax1.axhline(0.0, color="grey", linewidth=0.8)
    ax1.set_ylim(-1.05, 1.05)
    ax1.set_ylabel("rank correlation across a layer's heads")
    _layer_axis(ax1, len(rho.value))
    ax1.legend(fontsize="small")
    color = _band(ax2, dppl, label="mean ΔPPL (zero-ablate one head)")
    if dppl.per_seed is not None:
        per_seed = np.asarray(dppl.per_seed, dtype=float)  # [M, L]
        for k, row in enumerate(per_seed):
            ax2.scatter(np.arange(len(row)), row, s=14, color=color, alpha=0.5,
                        marker=MARKERS[k % len(MARKERS)], label="per seed" if k == 0 else None)
    ax2.set_ylabel("ΔPPL")
    _layer_axis(ax2, len(dppl.value))
    ax2.legend(fontsize="small")
    fig.suptitle(f"{analysis.family}: head importance vs stability ({rho.ci:.0%} CI)")
    return _save(fig, path)


def meta_sne_features(patterns: torch.Tensor) -> np.ndarray:
    """One row per (seed, layer, head), seed-major: the upper triangle of that head's
    prompt-by-prompt distance matrix (1 − cosine of its pattern vectors on prompt p and p').

    ``patterns`` [M, L, P, H, T, T] -> float64 [M*L*H, P*(P-1)/2].
    """
    if not isinstance(patterns, torch.Tensor) or patterns.ndim != 6:
        raise ValueError("meta-SNE: expected patterns [M, L, P, H, T, T], got "
                         f"{tuple(getattr(patterns, 'shape', ())) or type(patterns).__name__}")
    from harness.metrics.heads import pattern_vectors

    M, L, P, H, T, _ = patterns.shape
    if P < 2:
        raise ValueError(f"meta-SNE: a head is described by distances between probe prompts; "
                         f"need at least 2 prompts, got {P}")
    v = pattern_vectors(patterns.double())  # (M, L, P, H, D), unit rows
    v = v.permute(0, 1, 3, 2, 4)  # (M, L, H, P, D)
    dist = 1.0 - v @ v.transpose(-1, -2)  # (M, L, H, P, P)
    iu = torch.triu_indices(P, P, offset=1)
    feats = dist[..., iu[0], iu[1]]  # (M, L, H, P(P-1)/2)
    return feats.reshape(M * L * H, -1).numpy()


def plot_meta_sne(patterns: torch.Tensor, path: str | Path, *, generator_seed: int = 0,
                  seeds: Sequence[int] | None = None) -> tuple[Path, np.ndarray]:
    """meta-SNE of every (seed, layer, head) of a family; returns the PNG and the 2-D
    coordinates [M*L*H, 2] in seed-major, then layer, then head order.

    Each head is the vector of its prompt-to-prompt distances (:func:`meta_sne_features`);
    t-SNE with perplexity min(30, (n − 1) / 3), PCA init and ``generator_seed`` as its
    random state. Points coloured by layer, marker by seed (``seeds`` labels them).
    """
    from sklearn.manifold import TSNE

    feats = meta_sne_features(patterns)
    M, L, _, H = patterns.shape[:4]
    n = feats.shape[0]
    if seeds is not None and len(seeds) != M:
        raise ValueError(f"meta-SNE: {len(seeds)} seed labels for {M} seeds of patterns")
    if n < 4:
        raise ValueError(f"meta-SNE: needs at least 4 (seed, layer, head) points, got {n} "
                         f"({M} seeds x {L} layers x {H} heads)")
    # PCA init needs 2 feature dimensions; with 2 prompts there is only one distance.
    init = "pca" if feats.shape[1] >= 2 else "random"
    tsne = TSNE(n_components=2, perplexity=min(30.0, (n - 1) / 3), init=init,
                random_state=generator_seed)
    xy = tsne.fit_transform(feats)  # (n, 2)
    layer = np.tile(np.repeat(np.arange(L), H), M)  # (n,)
    seed = np.repeat(np.arange(M), L * H)  # (n,)

    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    labels = [f"seed {s}" for s in seeds] if seeds is not None else [f"seed #{k}" for k in range(M)]
    sc = None
    for k in range(M):
        sel = seed == k
        sc = ax.scatter(xy[sel, 0], xy[sel, 1], c=layer[sel], cmap="viridis", vmin=0,
                        vmax=max(L - 1, 1), marker=MARKERS[k % len(MARKERS)], s=36,
                        edgecolors="black", linewidths=0.4, label=labels[k])
    fig.colorbar(sc, ax=ax, label="layer")
    ax.legend(fontsize="small", title="marker", loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"meta-SNE: {n} heads ({M} seeds x {L} layers x {H} heads)")
    return _save(fig, path), xy
