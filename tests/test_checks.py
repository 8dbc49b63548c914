"""The checks: section of a suite file: what loads, and one ConfigError naming the file and
the key for every bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.checks import default_check, load_checks
from harness.config import ConfigError, load_suite

BASE = """
suite: s
defaults:
  seeds: [0, 1, 2, 3, 4, 5]
  model: {n_layers: 2, n_heads: 2, d_model: 16, attn_only: true}
  data: {vocab_size: 32, seq_len: 32}
  train: {steps: 10}
families:
  ref: {}
  cand: {extends: ref, train: {lr: 1.0e-3}}
regression:
  alpha: 0.05
  tolerance: {default: 0.03, head_cka.debiased: 0.05}
  metrics: [head_stability.all_anchors, head_cka.debiased]
"""


def write(tmp_path: Path, checks: str, *, base: str = BASE, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(base + textwrap.dedent(checks))
    return p


def test_a_check_takes_the_files_defaults(tmp_path: Path) -> None:
    p = write(tmp_path, """
        checks:
          self: {candidate: ref}
          change: {candidate: cand, reference: ref, alpha: 0.01, tolerance: 0.1, inconclusive: fail}
    """)
    checks = load_checks(p)
    assert list(checks) == ["self", "change"]
    s = checks["self"]
    assert s.same_family and s.reference.name == s.candidate.name == "ref"
    assert s.metrics == ("head_stability.all_anchors", "head_cka.debiased")
    assert s.tolerance == {"head_stability.all_anchors": 0.03, "head_cka.debiased": 0.05}
    assert (s.alpha, s.inconclusive, s.reference_suite) == (0.05, "pass", "s")
    c = checks["change"]
    assert not c.same_family and c.candidate.train.lr == 1e-3
    assert c.tolerance == {"head_stability.all_anchors": 0.1, "head_cka.debiased": 0.1}
    assert (c.alpha, c.inconclusive) == (0.01, "fail")


def test_a_reference_in_another_file(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    write(tmp_path / "other", "", base=BASE.replace("suite: s", "suite: elsewhere"), name="o.yaml")
    p = write(tmp_path, "checks:\n  x: {candidate: cand, reference: other/o.yaml::ref}\n")
    x = load_checks(p)["x"]
    assert x.reference_suite == "elsewhere" and x.reference.name == "ref" and not x.same_family
    assert x.reference_source.endswith("o.yaml")


@pytest.mark.parametrize("checks, key, message", [
    ("checks:\n  x: {reference: ref}\n", "checks.x.candidate", "required"),
    ("checks:\n  x: {candidate: nope}\n", "checks.x.candidate", "no family 'nope'; this file has: ref, cand"),
    ("checks:\n  x: {candidate: cand, reference: refx}\n", "checks.x.reference", "no family 'refx'"),
    ("checks:\n  x: {candidate: cand, reference: missing.yaml::ref}\n", "checks.x.reference", "does not exist"),
    ("checks:\n  x: {candidate: cand, bogus: 1}\n", "checks.x.bogus", "unknown key; expected one of"),
    ("checks:\n  x: [cand]\n", "checks.x", "expected a mapping"),
    ("checks:\n  x: {candidate: cand, metrics: head_stability}\n", "checks.x.metrics", "non-empty list"),
    ("checks:\n  x: {candidate: cand, metrics: ['bad name']}\n", "checks.x.metrics", "metric names like"),
    ("checks:\n  x: {candidate: cand, metrics: [a.b, a.b]}\n", "checks.x.metrics", "metrics repeat"),
    ("checks:\n  x: {candidate: cand, tolerance: -1}\n", "checks.x.tolerance", "expected a number >= 0"),
    ("checks:\n  x: {candidate: cand, tolerance: {head_cka.debiased: 0.1}}\n", "checks.x.tolerance",
     "no tolerance for 'head_stability.all_anchors'"),
    ("checks:\n  x: {candidate: cand, alpha: 1.5}\n", "checks.x.alpha", "strictly between 0 and 1"),
    ("checks:\n  x: {candidate: cand, alpha: true}\n", "checks.x.alpha", "strictly between 0 and 1"),
    ("checks:\n  x: {candidate: cand, inconclusive: maybe}\n", "checks.x.inconclusive", "expected fail or pass"),
    ("checks:\n  'a b': {candidate: cand}\n", "checks", "check names must be plain words"),
])
def test_bad_checks_name_file_and_key(tmp_path: Path, checks: str, key: str, message: str) -> None:
    p = write(tmp_path, checks)
    with pytest.raises(ConfigError) as e:
        load_checks(p)
    assert e.value.key == key and message in e.value.detail, str(e.value)
    assert str(e.value).startswith(f"{p}: {key}: ")


def test_defaults_must_exist_and_be_known(tmp_path: Path) -> None:
    p = write(tmp_path, "checks:\n  x: {candidate: cand}\n",
              base=BASE.replace("  metrics: [head_stability.all_anchors, head_cka.debiased]\n", ""))
    with pytest.raises(ConfigError, match=r"checks.x.metrics: required \(here or in the file's regression"):
        load_checks(p)
    p = write(tmp_path, "checks:\n  x: {candidate: cand}\n", base=BASE + "  bogus: 1\n")
    with pytest.raises(ConfigError, match="regression.bogus: unknown key"):
        load_checks(p)


def test_default_check_for_the_cli(tmp_path: Path) -> None:
    suite = load_suite(write(tmp_path, ""))
    assert load_checks(suite) == {}
    c = default_check(suite, "cand", "ref", overrides={"alpha": 0.01})
    assert c.name == "cand_vs_ref" and c.alpha == 0.01 and c.reference.name == "ref"
    assert default_check(suite, "ref").same_family
