"""Worked example: is a change (new optimizer, architecture tweak, own model) less stable than
the reference? Paired seeds (seed k: same data order), content-specific and raw head
stability, one-sided: a change fails when it is worse by more than the tolerance and the
seed-level test says so (p-values Holm-adjusted across layers by compare, and α split over
the two metrics, so the whole check keeps its false-alarm rate at α).

    pytest examples -k lion        # one change
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from harness import expect

SUITE = Path(__file__).with_name("check_changes.yaml")
METRICS = ["content_specific.all_anchors", "head_stability.all_anchors"]
ALPHA = 0.05


@pytest.mark.parametrize("candidate", ["lion", "qk_norm", "parallel"])
def test_change_does_not_destabilize_heads(seedstab, candidate):
    tolerance = seedstab.suite(SUITE).regression["tolerance"]
    cmp = seedstab.compare(SUITE, "adam", candidate, metrics=METRICS, alternative="less")
    rows, bad = [], False
    for metric, c in cmp.items():
        for l, (d, lo, hi, p) in enumerate(zip(*(np.atleast_1d(x) for x in (c.delta, c.lo, c.hi, c.p_value)))):
            worse = d < -tolerance and p < ALPHA / len(METRICS)
            bad |= worse
            rows.append([metric, str(l), d, lo, hi, p, "WORSE" if worse else "ok"])
    table = expect.table(["metric", "layer", "Δ", "CI lo", "CI hi", "p", ""], rows)
    print(f"{candidate} - adam\n{table}")
    assert not bad, f"{candidate} is less stable than adam beyond the tolerance {tolerance}\n{table}"
