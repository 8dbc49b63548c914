"""What installing seedstab costs every other pytest run: ``pytest --co`` in an unrelated
temporary project with the plugin and without it (``-p no:seedstab``), alternated in one
process, best of N. Prints; never asserts.

    python benchmarks/bench_plugin_import.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="seedstab-unrelated-") as d:
        Path(d, "test_app.py").write_text("def test_app():\n    assert True\n")
        times: dict[str, list[float]] = {"with seedstab": [], "without (-p no:seedstab)": []}
        for _ in range(args.repeat):
            for label, extra in (("with seedstab", []), ("without (-p no:seedstab)", ["-p", "no:seedstab"])):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", *extra],
                               cwd=d, capture_output=True, check=True)
                times[label].append(time.perf_counter() - t)
    for label, ts in times.items():
        ts.sort()
        print(f"pytest --co, unrelated project, {label:<26} best {ts[0]:.2f} s  median {ts[len(ts) // 2]:.2f} s")


if __name__ == "__main__":
    main()
