"""Training throughput: hooks present but unused vs a bare model without hook points,
and the wall time of training a family cold. Prints numbers; never asserts.

    python benchmarks/bench_train.py [SPEC[::FAMILY]] [--steps 60] [--repeats 5] [--family-wall]

The hooked and bare runs alternate (A B A B ...) so a slow spell of the machine hits both;
medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness.config import FamilyConfig, load_family
from harness.family import obtain_family
from harness.model import build_model
from harness.train import build_optimizer, data_source, deterministic, lm_losses

ROOT = Path(__file__).resolve().parents[1]


def tokens_per_s(cfg, *, hooked: bool, steps: int) -> float:
    model = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len, init_seed=0, hooked=hooked)
    opt = build_optimizer(cfg, model)
    source = data_source(cfg)
    g = torch.Generator().manual_seed(0)
    batches = [source.sample(cfg.train.batch_size, generator=g) for _ in range(steps + 3)]
    for b in batches[:3]:  # warm-up
        loss, _ = lm_losses(model, b.tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = time.perf_counter()
    for b in batches[3:]:
        loss, _ = lm_losses(model, b.tokens, b.copy_mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * cfg.train.batch_size * (cfg.data.seq_len - 1) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=str(ROOT / "suites/smoke/smoke.yaml::adam"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--family-wall", action="store_true", help="also train the whole family cold and time it")
    args = ap.parse_args()
    cfg = load_family(args.spec)
    with deterministic(torch.device("cpu"), cfg.train.threads):
        run(cfg, args)


def run(cfg: FamilyConfig, args: argparse.Namespace) -> None:
    """Measure and print, under the family's thread count and determinism settings."""
    print(f"spec {args.spec}: {cfg.model.n_layers} layers, d_model {cfg.model.d_model}, attn_only "
          f"{cfg.model.attn_only}, batch {cfg.train.batch_size} x {cfg.data.seq_len}, threads {cfg.train.threads}")
    hooked, bare = [], []
    for _ in range(args.repeats):
        hooked.append(tokens_per_s(cfg, hooked=True, steps=args.steps))
        bare.append(tokens_per_s(cfg, hooked=False, steps=args.steps))
    mh, mb = statistics.median(hooked), statistics.median(bare)
    print(f"hooks present, unused: median {mh:,.0f} tok/s  (runs: {', '.join(f'{x:,.0f}' for x in hooked)})")
    print(f"bare, no hook points:  median {mb:,.0f} tok/s  (runs: {', '.join(f'{x:,.0f}' for x in bare)})")
    print(f"hook overhead: {100 * (mb - mh) / mb:+.1f} % (target: under 5 %)")
    if args.family_wall:
        with tempfile.TemporaryDirectory() as store:
            t = time.perf_counter()
            fam = obtain_family(cfg, store=store, device="cpu")
            cold = time.perf_counter() - t
            t = time.perf_counter()
            obtain_family(cfg, store=store, device="cpu")
            warm = time.perf_counter() - t
        print(f"family {cfg.name}: {len(fam.seeds)} seeds x {cfg.train.steps} steps: cold {cold:.1f} s, "
              f"warm (store hit) {warm:.2f} s")
        for s in fam.seeds:
            print(f"  seed {s.seed}: final loss {s.log['final_loss']:.3f}, copy loss {s.log['final_copy_loss']:.3f}, "
                  f"{s.log['tokens_per_s']:,.0f} tok/s")


if __name__ == "__main__":
    main()
