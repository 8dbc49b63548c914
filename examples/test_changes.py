"""Worked example: is a change (new optimizer, architecture tweak, own model) less stable than
the reference? Paired seeds (seed k: same data order), content-specific and raw head
stability, one-sided toward worse: a change fails when some layer of some metric is worse by
more than the tolerance AND the joint max-T test over every metric and layer says so, which
keeps the false-alarm rate of the whole check at alpha. A check that could never fail at
this seed count is refused (harness.stats.Underpowered) rather than passed.

    pytest examples -k lion        # one change
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import expect

SUITE = Path(__file__).with_name("check_changes.yaml")
METRICS = ["content_specific.all_anchors", "head_stability.all_anchors"]


@pytest.mark.parametrize("candidate", ["lion", "qk_norm", "parallel"])
def test_change_does_not_destabilize_heads(seedstab, candidate):
    regression = seedstab.suite(SUITE).regression
    alpha = regression["alpha"]
    cmp = seedstab.compare(SUITE, "adam", candidate, metrics=METRICS, alternative="worse", alpha=alpha)
    expect.not_worse(cmp, tolerance=regression["tolerance"], alpha=alpha, reference="adam", candidate=candidate)
