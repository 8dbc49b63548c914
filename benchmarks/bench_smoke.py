"""Wall time of the CPU smoke tier, cold (empty store: every family trains) and warm (the
store holds every seed). Prints numbers; never asserts.

    python benchmarks/bench_smoke.py [-n 2] [--keep-store DIR]

Runs `pytest suites/smoke` twice in a subprocess with a fresh store and no MLflow (so
only the harness is timed), then prints both wall times and pytest's last line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(store: Path, extra: list[str]) -> tuple[float, str, int]:
    env = {**os.environ, "SEEDSTAB_STORE": str(store)}
    cmd = [sys.executable, "-m", "pytest", "suites/smoke", "-q", "-p", "no:cacheprovider", "--seedstab-no-mlflow", *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    last = [l for l in proc.stdout.splitlines() if l.strip()][-1:] or ["(no output)"]
    return time.perf_counter() - t, last[0], proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", default=None, help="pytest-xdist workers (e.g. 2)")
    ap.add_argument("--keep-store", default=None, help="use this store folder (must be empty for a cold run)")
    args = ap.parse_args()
    extra = ["-n", args.n] if args.n else []
    store = Path(args.keep_store or tempfile.mkdtemp(prefix="seedstab-smoke-"))
    cold, line_c, rc_c = run(store, extra)
    print(f"cold (empty store {store}): {cold:.0f} s  exit {rc_c}  [{line_c}]")
    warm, line_w, rc_w = run(store, extra)
    print(f"warm (store holds every seed): {warm:.0f} s  exit {rc_w}  [{line_w}]")


if __name__ == "__main__":
    main()
