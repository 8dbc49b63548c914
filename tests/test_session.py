"""The session cache behind the ``seedstab`` fixture."""

from __future__ import annotations

import textwrap

import pytest

from harness.session import StabilitySession

SUITE = """
    suite: s
    defaults:
      seeds: [0, 1, 2]
      model: {n_layers: 1, n_heads: 2, d_model: 16, attn_only: true}
      data: {vocab_size: 32, seq_len: 32, synthetic: {span_min: 4, span_max: 8}}
      train: {steps: 3, batch_size: 4}
      probe: {n_prompts: 4}
    families:
      a: {}
      b: {extends: a, train: {optimizer: adamw, weight_decay: 0.1}}
"""


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return path


def test_fresh_seeds_shift_every_family_alike(suite, tmp_path):
    session = StabilitySession(store=tmp_path / "store", seed_offset=100, progress="off")
    assert session.config(suite, "a").seeds == (100, 101, 102)
    assert session.config(suite, "b").seeds == (100, 101, 102)  # paired families stay paired
    assert StabilitySession(store=tmp_path / "store").config(suite, "a").seeds == (0, 1, 2)


def test_families_and_analyses_are_computed_once(suite, tmp_path):
    session = StabilitySession(store=tmp_path / "store", n_boot=20, progress="off")
    fam = session.family(suite, "a")
    assert fam.trained_now == 3 and session.family(str(suite), "a") is fam
    assert session.analysis(suite, "a") is session.analysis(suite, "a")


def test_unknown_family_names_the_file_and_the_choices(suite, tmp_path):
    with pytest.raises(KeyError, match=r"no family 'c'; the suite has: a, b"):
        StabilitySession(store=tmp_path / "store").config(suite, "c")


def test_compare_refuses_a_comparison_that_could_never_reject(suite, tmp_path):
    """3 paired seeds: the smallest attainable one-sided p is 1/8, so alpha 0.05 is refused
    with the numbers, and alpha 0.2 is not; p-values are max-T adjusted over every row."""
    from harness.stats import Underpowered

    session = StabilitySession(store=tmp_path / "store", n_boot=20, progress="off")
    metrics = ["head_stability.all_anchors", "attention_entropy"]
    with pytest.raises(Underpowered, match=r"3 and 3 seeds \(paired\), 2 rows .* 0\.125 .* 5 paired seeds"):
        session.compare(suite, "a", "b", metrics=metrics, alpha=0.05)
    cmp = session.compare(suite, "a", "b", metrics=metrics, alpha=0.2)
    assert all(c.adjustment == "max-t" and c.n_rows == 2 for c in cmp.values())
