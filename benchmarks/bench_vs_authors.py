"""The harness's head and CKA metrics against loops of the authors' structure, paired in one
process (prints, no test).

Family: M=8 seeds, L=8 layers, H=8 heads, P=100 probe prompts of T=64 tokens (random causal
softmax patterns, 0.8 GiB float32); residual streams [8, 8, 100, 64, 64] (a shared part
plus seed noise). The loops (``authors_loop.py``) are run on a few prompts, layers or seed
pairs and scaled linearly by the iteration count to the full family; each line says how.
Agreement is the max abs difference between the loop and the harness on what the loop ran.
Times are CPU seconds of this process (``time.process_time``), which a shared, loaded
machine inflates far less than wall-clock seconds; the ratio is taken on them, and the
wall-clock ratio is printed beside it. The load average is printed at the start and end.

    python benchmarks/bench_vs_authors.py [--threads 1] [--loop-prompts 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
_ap.add_argument("--loop-prompts", type=int, default=4, help="prompts the anchor loop runs")
_ap.add_argument("--rbf-loop-layers", type=int, default=1, help="layers the RBF loop runs")
_ap.add_argument("--skip-cka", action="store_true")
ARGS = _ap.parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before numpy loads its BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.join(_HERE, "..")]
import authors_loop as ref  # noqa: E402
from bench_metrics_heads import make_patterns  # noqa: E402

from harness.metrics import cka  # noqa: E402
from harness.metrics import heads as hm  # noqa: E402

M, L, P, H, T = 8, 8, 100, 8, 64


class Seconds(float):
    """CPU seconds, carrying the wall-clock seconds of the same run."""

    wall: float

    def __new__(cls, cpu: float, wall: float) -> "Seconds":
        obj = super().__new__(cls, cpu)
        obj.wall = wall
        return obj

    def __mul__(self, k: float) -> "Seconds":  # linear extrapolation of both clocks
        return Seconds(float(self) * k, self.wall * k)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> "Seconds | float":  # by a count: still seconds
        if isinstance(k, Seconds):
            return float(self) / float(k)
        return Seconds(float(self) / k, self.wall / k)

    def __add__(self, other: "Seconds") -> "Seconds":
        return Seconds(float(self) + float(other), self.wall + other.wall)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return Seconds(time.process_time() - c0, time.perf_counter() - w0), out


def line(what: str, loop_s: Seconds, ours_s: Seconds, diff: float, how: str) -> None:
    print(f"{what:34s} loop {loop_s:9.2f} s   ours {ours_s:7.3f} s   x{loop_s / ours_s:7.1f} "
          f"(wall {loop_s.wall:8.2f} / {ours_s.wall:6.3f} s = x{loop_s.wall / ours_s.wall:6.1f})   "
          f"max|diff| {diff:.1e}   ({how})")


def anchor(pat: torch.Tensor) -> None:
    k = ARGS.loop_prompts
    sub = pat[:, :, :k]
    t_loop, s_loop = timed(lambda: ref.anchor_stability_loop(sub, prompts=k))
    t_ours, _ = timed(lambda: hm.head_stability(hm.similarity(pat, pairs="anchor"),
                                                method="anchor"))
    t_all, _ = timed(lambda: hm.head_stability(hm.similarity(pat), method="anchor"))
    s_ours = hm.head_stability(hm.similarity(sub, pairs="anchor"), method="anchor").per_head
    line("anchor head stability", t_loop * P / k, t_ours, np.abs(s_ours - s_loop).max(),
         f"loop on {k} prompts x {P / k:g}; ours on all {P}")
    print(f"{'':34s} (same metric from all M^2 seed pairs: {t_all:.3f} s, wall {t_all.wall:.3f})")


def full_set(pat: torch.Tensor) -> None:
    # loop: seed pair (0, 1), cross-layer raw and null, on 2 prompts; scaled to all ordered
    # seed pairs and prompts (the same-layer blocks are part of the cross-layer ones)
    sub = pat[:, :, :2]
    t_raw, raw = timed(lambda: ref.head_similarity_loop(sub, [(0, 1)], prompts=2,
                                                        cross_layer=True))
    t_null, null = timed(lambda: ref.head_similarity_loop(sub, [(0, 1)], prompts=2, shift=1,
                                                          cross_layer=True))
    loop_s = (t_raw + t_null) * M * (M - 1) * P / 2

    def ours(p: torch.Tensor):
        hs = hm.head_set(p, prompt_shift=1)
        out = [hm.head_stability(hs.C, method=m) for m in ("anchor", "all_anchors", "hungarian")]
        out.append(hm.head_stability(hs.C_null, method="all_anchors"))
        return hs, out, hm.cross_layer_match(hs.X), hm.cross_layer_match(hs.X_null)

    t_ours, _ = timed(lambda: ours(pat))

    def as_analysis(p: torch.Tensor):  # what harness/analysis.py needs: no cross-layer null
        hs = hm.head_set(p, prompt_shift=1, cross_layer_null=False)
        out = [hm.head_stability(hs.C, method=m) for m in ("anchor", "all_anchors", "hungarian")]
        out.append(hm.head_stability(hs.C_null, method="all_anchors"))
        return hs, out, hm.cross_layer_match(hs.X)

    t_part, _ = timed(lambda: as_analysis(pat))
    hs = hm.head_set(sub, prompt_shift=1)
    diff = max(max(abs(v - float(hs.X[k])) for k, v in raw.items()),
               max(abs(v - float(hs.X_null[k])) for k, v in null.items()))
    line("full head set (+null, cross-layer)", loop_s, t_ours, diff,
         f"loop on seeds (0, 1) and 2 prompts x {M * (M - 1)} pairs x {P / 2:g}")

    def separate():
        C, Cn = hm.similarity(pat), hm.similarity(pat, prompt_shift=1)
        return ([hm.head_stability(C, method=m) for m in ("anchor", "all_anchors", "hungarian")],
                hm.head_stability(Cn, method="all_anchors"), hm.cross_layer_stability(pat),
                hm.cross_layer_stability(pat, prompt_shift=1))

    t_sep, _ = timed(separate)
    # its loop: the raw cross-layer loop plus the same-layer null, 1/L of the cross-layer one
    line("head set as analysis.py needs it", (t_raw + t_null * (1 / L)) * (M * (M - 1) * P / 2),
         t_part, diff, "no cross-layer null; loop scaled as above, its null part by 1/L")
    print(f"{'':34s} (the full set as separate calls, similarity x2 and "
          f"cross_layer_stability x2: {t_sep:.3f} s, wall {t_sep.wall:.3f})")


def cka_targets() -> None:
    gen = torch.Generator().manual_seed(1)
    d = 64
    shared = torch.randn(1, L, P, T, d, generator=gen)
    resid = shared + 0.8 * torch.randn(M, L, P, T, d, generator=gen)  # [M, L, P, T, d]
    rows = resid[:, :, :, 1:].reshape(M, L, P * (T - 1), d).double().numpy()  # [M, L, n, d]

    t_loop, want = timed(lambda: ref.linear_cka_loop(rows))
    t_ours, got = timed(lambda: cka.layer_cka(resid, kernel="linear"))
    off = ~np.eye(M, dtype=bool)
    line("linear CKA, one stream", t_loop, t_ours, np.abs(got - want)[off].max(),
         f"all {L} layers, {rows.shape[2]} rows")

    t_ours, got = timed(lambda: cka.layer_cka(resid, kernel="rbf",
                                             generator=np.random.default_rng(0)))
    idx = np.sort(np.random.default_rng(0).choice(rows.shape[2], size=cka.DEFAULT_MAX_ROWS,
                                                  replace=False))
    k = ARGS.rbf_loop_layers
    t_loop, want = timed(lambda: ref.rbf_cka_loop(rows[:, :k][:, :, idx]))
    line("RBF CKA, one stream", t_loop * L / k, t_ours, np.abs(got[:, :, :k] - want)[off].max(),
         f"{cka.DEFAULT_MAX_ROWS} rows; loop on {k} layer(s) x {L / k:g}")


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    load = os.getloadavg()
    print(f"threads={ARGS.threads} torch={torch.__version__} cpus={os.cpu_count()} "
          f"load avg {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (1/5/15 min)")
    pat = make_patterns(M, L, P, H, T, generator=torch.Generator().manual_seed(0))
    anchor(pat)
    full_set(pat)
    del pat
    if not ARGS.skip_cka:
        cka_targets()
    load = os.getloadavg()
    print(f"load avg at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
