"""A family's seeds trained by local Ray workers vs one after another in this process.
Prints numbers; never asserts.

    python benchmarks/bench_ray.py [SPEC[::FAMILY]] [--seeds 4] [--steps 200] [--workers 2] [--repeats 2]

Both runs train the same seeds cold into fresh temporary stores, 1 torch thread per seed:
in this process one after another (``LocalExecutor``), and as Ray tasks with ``num_cpus=1``
on a local cluster of ``--workers`` CPUs. The cluster is started once, before the runs;
its startup is printed separately. Each Ray run includes what the first tasks pay to start
workers (a Python process that imports torch). Runs alternate (local, Ray, local, ...) so a
slow spell of the machine hits both; medians are reported, and the bits compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from harness.config import load_family
from harness.executors import LocalExecutor
from harness.family import obtain_family
from harness.ray_executor import RayExecutor

ROOT = Path(__file__).resolve().parents[1]


def train_cold(cfg, executor) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory() as store:
        t = time.perf_counter()
        fam = obtain_family(cfg, store=store, device="cpu", executor=executor)
        wall = time.perf_counter() - t
    assert fam.trained_now == len(cfg.seeds)
    return wall, [s.model.state_dict() for s in fam.seeds]


def same_bits(a: list[dict], b: list[dict]) -> bool:
    return all(x.keys() == y.keys() and all(x[k].equal(y[k]) for k in x) for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", nargs="?", default=str(ROOT / "suites/smoke/smoke.yaml::adam"))
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    base = load_family(args.spec)
    cfg = base.replace(seeds=list(range(args.seeds)), train={"steps": args.steps, "threads": 1})
    print(f"spec {args.spec}: {args.seeds} seeds x {args.steps} steps, {cfg.model.n_layers} layers, "
          f"d_model {cfg.model.d_model}, batch {cfg.train.batch_size} x {cfg.data.seq_len}, 1 thread per seed")
    # a machine busy with other work cannot show the speed-up: say how busy it was
    print(f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}")

    t = time.perf_counter()
    # "local": a new cluster, never one a `ray start` left behind on this machine
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - t
    print(f"ray startup (local cluster, {args.workers} CPUs): {startup:.1f} s")
    remote = RayExecutor(num_cpus=1)
    local_walls, ray_walls, identical = [], [], True
    try:
        for _ in range(args.repeats):
            wall, local_bits = train_cold(cfg, LocalExecutor())
            local_walls.append(wall)
            wall, ray_bits = train_cold(cfg, remote)
            ray_walls.append(wall)
            identical &= same_bits(local_bits, ray_bits)
    finally:
        ray.shutdown()
    lw, rw = statistics.median(local_walls), statistics.median(ray_walls)
    print(f"one process, one seed after another: median {lw:.1f} s  (runs: {', '.join(f'{x:.1f}' for x in local_walls)})")
    print(f"ray, {args.workers} workers x 1 CPU:        median {rw:.1f} s  (runs: {', '.join(f'{x:.1f}' for x in ray_walls)})")
    print(f"speed-up: {lw / rw:.2f}x  (ray startup of {startup:.1f} s not included)")
    print(f"same bits: {'yes' if identical else 'NO'}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
