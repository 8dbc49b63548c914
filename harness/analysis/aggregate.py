"""Seed-level arrays -> Measurements: the family estimate, its interval clipped to the
metric's range, and a name for everything that is undefined."""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np

from harness import stats
from harness.metrics import cka
from harness.analysis.options import AnalysisOptions
from harness.analysis.ranges import Bounds, clip_interval, metric_range
from harness.results import Measurement

log = logging.getLogger("harness.analysis")


_PLURAL = {"layer": "layers", "prompt length": "prompt lengths", "head (layer-major)": "heads (layer-major)"}


class Aggregator:
    """Turns seed-level arrays into Measurements, and names what is undefined.

    Undefined values (a seed whose activations are non-finite, a statistic with no room
    above its null) never reach harness.stats as NaN: the defined elements are estimated
    as usual, the undefined ones become NaN in value/lo/hi, and each is named in
    ``degenerate`` ("<metric> layer 1: <why>"), which analyze_family puts into
    ``Analysis.info["degenerate"]``.

    Every measurement carries its range (harness.analysis.ranges, or ``bounds`` given
    explicitly); its interval is clipped to that range, and a clipped interval says so in
    ``Measurement.ci_note``. Values are never clipped.
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
        self.absent: dict[str, str] = {}  # measurement -> why it is not computed

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

    def _put(self, name: str, value: np.ndarray, lo: np.ndarray, hi: np.ndarray, *,
             bounds: Bounds | None, **fields: Any) -> None:
        """Store one Measurement, its interval clipped to ``bounds`` (default: the declared range)."""
        bounds = metric_range(name) if bounds is None else bounds
        lo, hi, note = clip_interval(lo, hi, bounds)
        if note:
            log.info("%s: %s", name, note)
        self.out[name] = Measurement(name=name, value=np.asarray(value, dtype=float), lo=lo, hi=hi,
                                     bounds=bounds, ci_note=note, ci=self.o.ci, **fields)

    def pairwise(self, name: str, pw: np.ndarray, *, higher: bool, desc: str, axis: str = "layer",
                 why: Callable[[tuple[int, ...]], str] | None = None, masked: bool = True,
                 bounds: Bounds | None = None) -> None:
        """A mean over distinct seed pairs, ``pw`` [M, M, *shape]. Elements with a non-finite
        seed pair are NaN and named (``why(index)`` says why; ``masked=False`` for statistics
        that do not read the trained seeds' activations, e.g. the untrained family).
        ``bounds``: the statistic's range when it is not the declared one of ``name``."""
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
        self._put(name, value, lo, hi, bounds=bounds, higher_is_better=higher, description=desc,
                  pairwise=pw, n_seeds=M)

    def per_seed(self, name: str, v: np.ndarray, *, higher: bool, desc: str,
                 bounds: Bounds | None = None, axis: str = "layer", masked: bool = True,
                 baselinable: bool = True, baseline_note: str = "") -> None:
        """A mean over seeds, ``v`` [M, *shape]; its t interval is clipped to the range
        (clipping never loses coverage). Elements where a seed's value is NaN or inf are
        NaN and named."""
        v = self.mask_per_seed(v) if masked else np.array(v, dtype=float)
        finite = np.isfinite(v)
        defined = finite.all(axis=0)
        est = ((lambda x: stats.seed_t_per_seed(x, ci=self.o.ci)) if self._jackknife else
               (lambda x: stats.seed_bootstrap_per_seed(x, n_boot=self.o.n_boot, ci=self.o.ci,
                                                        generator=self.gen)))
        value, lo, hi = self._estimate_defined(name, v, defined, est, lead=1)
        if not defined.all():
            self._name_undefined(name, ~defined, axis,
                                 lambda i: self._default_why(finite[(slice(None),) + i]))
        self._put(name, value, lo, hi, bounds=bounds, higher_is_better=higher, description=desc,
                  per_seed=v, n_seeds=v.shape[0], baselinable=baselinable, baseline_note=baseline_note)

    def derived(self, name: str, pw: np.ndarray, fn: Callable[[np.ndarray], float], *, higher: bool,
                desc: str, smooth: bool = True, bounds: Bounds | None = None) -> None:
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
            self._put(name, nan, nan, nan, bounds=bounds, higher_is_better=higher, description=desc, n_seeds=M)
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
        self._put(name, np.asarray(value), np.asarray(lo), np.asarray(hi), bounds=bounds,
                  higher_is_better=higher, description=desc, n_seeds=M)


def layer_mean(pw_heads: np.ndarray) -> np.ndarray:
    return np.asarray(pw_heads, dtype=float).mean(axis=-1)  # [M, M, L, H] -> [M, M, L]


def per_seed_trend(r: np.ndarray) -> np.ndarray:
    """[M, L] per-layer values -> [M] slope over relative depth per seed (NaN rows stay NaN)."""
    return np.array([cka.depth_trend(row) if np.isfinite(row).all() else np.nan for row in r])
