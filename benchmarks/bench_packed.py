"""Packed families: wall time of 8 seeds trained as one batched model, against one seed
alone and against the same 8 seeds one after another. Prints numbers; never asserts.

    python benchmarks/bench_packed.py [SPEC[::FAMILY]] [--seeds 8] [--steps 50] [--repeats 3] [--device cpu]

On a GPU the target is packed-8 within 2x the wall time of one seed (small models leave a
GPU idle between kernel launches; packing fills it). On the CPU the work itself is k times
larger, so expect packed-k to cost about as much as k sequential seeds, or less. The
competitors alternate (one, packed, sequential, one, ...); medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from harness.config import load_family
from harness.packed import train_packed
from harness.train import train_seed

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=str(ROOT / "suites/smoke/smoke.yaml::adam"))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cfg = load_family(args.spec)
    cfg = cfg.replace(train={"steps": args.steps}, seeds=list(range(args.seeds)))
    seeds = tuple(range(args.seeds))
    print(f"spec {args.spec}: {cfg.model.n_layers} layers, d_model {cfg.model.d_model}, batch "
          f"{cfg.train.batch_size} x {cfg.data.seq_len}, {args.steps} steps, device {dev}, threads {cfg.train.threads}")
    train_packed(cfg.replace(train={"steps": 2}), seeds, device=dev)  # warm-up (CUDA context, kernels)
    one, packed, seq = [], [], []
    for _ in range(args.repeats):
        one.append(timed(lambda: train_seed(cfg, 0, device=dev), dev))
        packed.append(timed(lambda: train_packed(cfg, seeds, device=dev), dev))
        seq.append(timed(lambda: [train_seed(cfg, s, device=dev) for s in seeds], dev))
    o, p, s = (statistics.median(x) for x in (one, packed, seq))
    k = args.seeds
    print(f"one seed:            median {o:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in one)})")
    print(f"packed-{k}:            median {p:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in packed)})")
    print(f"{k} seeds one by one:  median {s:.2f} s  (runs: {', '.join(f'{x:.2f}' for x in seq)})")
    print(f"packed-{k} / one seed:     {p / o:.2f}x  (GPU target: <= 2x)")
    print(f"packed-{k} / {k} sequential: {p / s:.2f}x")


if __name__ == "__main__":
    main()
