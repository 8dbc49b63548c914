"""Sample families, headers and baseline files shared by the baseline tests
(tests/test_baselines.py, tests/test_baseline_header.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.baselines import make_header, write_baseline
from harness.results import Analysis, Measurement

VERSIONS = {"harness_version": "0.1.0", "torch_version": "2.13.0", "cuda_version": None,
            "cudnn_version": None, "numpy_version": "2.4.0", "scipy_version": "1.17.0",
            "python_version": "3.11"}
PROVENANCE = {"metric_digest": "m1", "training_digest": "t1",
              "analysis_options": {"ci": 0.95, "kernels": ["debiased"], "null_shift": 1}}
KEYS = [f"init{s}-data{s}" for s in range(5)]  # the default seed keys of seeds 0..4


def per_layer(seed: int = 0, M: int = 5, L: int = 3, name: str = "head_stability") -> Measurement:
    ps = 0.8 + 0.01 * np.random.default_rng(seed).standard_normal((M, L))  # (M, L)
    v = ps.mean(0)
    return Measurement(name, v, v - 0.01, v + 0.01, True, description="per layer",
                       per_seed=ps, n_seeds=M)


def pairwise(seed: int = 0, M: int = 5, name: str = "resid_cka") -> Measurement:
    x = np.random.default_rng(seed).standard_normal((M, M)) * 0.01
    pw = 0.9 + (x + x.T) / 2  # (M, M)
    pw[np.arange(M), np.arange(M)] = np.nan
    f = np.asarray(np.nanmean(pw))
    return Measurement(name, f, f - 0.01, f + 0.01, False, pairwise=pw, n_seeds=M)


def analysis(family: str = "adam", fp: str = "fp-adam", *, device_class: str = "cpu",
             probe: str = "probe-1", info: dict | None = None) -> Analysis:
    return Analysis(family, fp, (0, 1, 2, 3, 4), device_class, probe,
                    {"head_stability": per_layer(), "resid_cka": pairwise()}, info=info or {})


def header(**over) -> dict:
    h = make_header({"adam": analysis(), "adamw": analysis("adamw", "fp-adamw")},
                    provenance=PROVENANCE, device_name="test-cpu",
                    created="2026-11-25T00:00:00+00:00", versions=VERSIONS)
    h.update(over)
    return h


def write_sample(path: Path) -> dict:
    h = header()
    a = analysis()
    write_baseline(path, header=h, measurements={"adam": dict(a.measurements)})
    return h
