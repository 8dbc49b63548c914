"""What the analysis cache saves: a fresh analysis against a warm-cache read of the same
family, paired, in one process (a smoke-sized family: 2 attention-only layers, 4 heads,
6 seeds, 64 probe prompts; trained briefly into a temp store, since the numbers compare
two ways of getting the same Analysis, not trained quality).

    python benchmarks/bench_analysis_cache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.analysis import AnalysisOptions, analyze_family  # noqa: E402
from harness.analysis_cache import analyze_cached  # noqa: E402
from harness.config import load_family  # noqa: E402
from harness.family import obtain_family  # noqa: E402

SPEC = """
    name: bench_cache
    seeds: [0, 1, 2, 3, 4, 5]
    model: {n_layers: 2, n_heads: 4, d_model: 64, attn_only: true}
    data: {kind: synthetic, vocab_size: 64, seq_len: 64}
    train: {optimizer: adam, lr: 3.0e-3, steps: 20, batch_size: 32, threads: 1}
    probe: {n_prompts: 64, seed: 1234}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "bench_cache.yaml"
        spec.write_text(textwrap.dedent(SPEC))
        family = obtain_family(load_family(spec), store=Path(tmp) / "store", progress="off")
        options = AnalysisOptions()
        cache = Path(tmp) / "store" / "analyses"
        analyze_cached(family, options=options, cache_dir=cache)  # fills the cache
        fresh, cached = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            analyze_family(family, options=options)
            fresh.append(time.perf_counter() - t)
            t = time.perf_counter()
            analyze_cached(family, options=options, cache_dir=cache)
            cached.append(time.perf_counter() - t)
    f, c = statistics.median(fresh), statistics.median(cached)
    print(f"analysis, fresh       median {f:8.3f} s  ({', '.join(f'{x:.3f}' for x in fresh)})")
    print(f"analysis, warm cache  median {c:8.3f} s  ({', '.join(f'{x:.3f}' for x in cached)})")
    print(f"speed-up {f / c:.0f}x")


if __name__ == "__main__":
    main()
