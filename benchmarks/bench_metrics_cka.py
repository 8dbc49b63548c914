"""Timing of the CKA metrics and the seed bootstrap on a family-sized input (prints, no test).

Family: 8 seeds x 8 layers, 100 prompts x 64 tokens (63 per prompt after dropping
position 0 -> 6300 rows), d_model 64 and 128, 8 heads. Activations are synthetic (a shared
component plus seed noise); the cost does not depend on the values.

    python benchmarks/bench_metrics_cka.py [--threads 1] [--repeats 3]

Reports the median of ``--repeats`` runs (the machines have slow spells).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

_ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
_ap.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
_ap.add_argument("--repeats", type=int, default=3, help="runs per timing; the median is shown")
_ap.add_argument("--d-model", type=int, nargs="+", default=[64, 128])
ARGS = _ap.parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before numpy loads its BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness.metrics.cka import head_cka, head_output_cka, layer_cka  # noqa: E402
from harness.stats import paired_difference, seed_bootstrap  # noqa: E402

M, L, P, T, H = 8, 8, 100, 64, 8


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def family(d_model: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    shared = torch.randn(1, L, P, T, d_model, generator=gen)  # (1, L, P, T, d)
    resid = {k: shared + 0.8 * torch.randn(M, L, P, T, d_model, generator=gen)
             for k in ("pre", "mid", "post")}  # (M, L, P, T, d) each
    z = resid["mid"].reshape(M, L, P, T, H, d_model // H)  # (M, L, P, T, H, d_head)
    return {**resid, "z": z}


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    print(f"threads={ARGS.threads} repeats={ARGS.repeats} torch={torch.__version__} "
          f"numpy={np.__version__}; family M={M} L={L} P={P} T={T} H={H}, rows/layer="
          f"{P * (T - 1)}; rbf on 2048 subsampled rows")
    print(f"{'d_model':>7} {'stream':>6} {'kernel':>9} {'seconds':>8}  (all layers, all pairs)")
    gen = torch.Generator().manual_seed(0)
    for d_model in ARGS.d_model:
        fam = family(d_model, gen)
        for stream in ("pre", "mid", "post", "z"):
            for kernel in ("linear", "debiased", "rbf"):
                if stream == "z":
                    def run(kernel=kernel):
                        return head_output_cka(fam["z"], kernel=kernel,
                                               generator=np.random.default_rng(0))
                else:
                    def run(kernel=kernel, stream=stream):
                        return layer_cka(fam[stream], kernel=kernel,
                                         generator=np.random.default_rng(0))
                reps = 1 if kernel == "rbf" else ARGS.repeats
                sec, out = timed(run, reps)
                print(f"{d_model:>7} {stream:>6} {kernel:>9} {sec:8.3f}  "
                      f"mean off-diag={np.nanmean(out):.3f}")
        match = np.broadcast_to(np.arange(H), (M, M, L, H)).copy()
        for kernel in ("linear", "debiased"):
            sec, _ = timed(lambda kernel=kernel: head_cka(fam["z"], match, kernel=kernel),
                           ARGS.repeats)
            print(f"{d_model:>7} {'z/head':>6} {kernel:>9} {sec:8.3f}  (matched single heads)")

    rng = np.random.default_rng(0)
    pw = rng.random((M, M, L))  # (M, M, L)
    pw = (pw + pw.transpose(1, 0, 2)) / 2
    sec, _ = timed(lambda: seed_bootstrap(pw, n_boot=1000, generator=np.random.default_rng(1)),
                   ARGS.repeats)
    print(f"seed_bootstrap [8,8,8] n_boot=1000: {sec:.4f} s")
    pw_p = rng.random((M, M, L, P))  # (M, M, L, P)
    sec, _ = timed(lambda: seed_bootstrap(pw_p, n_boot=1000, prompt_axis=3,
                                          generator=np.random.default_rng(1)), ARGS.repeats)
    print(f"seed_bootstrap [8,8,8,100] n_boot=1000 with prompts: {sec:.4f} s")
    sec, _ = timed(lambda: paired_difference(pw, pw + 0.01, n_boot=1000,
                                             generator=np.random.default_rng(1)), ARGS.repeats)
    print(f"paired_difference [8,8,8] n_boot=1000, 256 exact sign flips: {sec:.4f} s")


if __name__ == "__main__":
    main()
