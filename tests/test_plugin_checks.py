"""Checks declared in suite YAML, end to end through pytest (``pytester``) and the CLI, with
tiny real families (a few seconds of CPU training each)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch  # noqa: F401  (see tests/test_plugin.py: torch must be imported outside pytester runs)
import tqdm.auto  # noqa: F401
# Everything the inner runs import, imported here first: pytester drops modules first imported
# inside a run, and re-importing torch's operator libraries raises.
import harness.analysis  # noqa: F401
import harness.family  # noqa: F401
import harness.gate  # noqa: F401
import harness.pytest_checks  # noqa: F401
import harness.session  # noqa: F401


@pytest.fixture(scope="module", autouse=True)
def _warm_imports(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Training imports parts of torch lazily (its compiler stack, through the optimizers);
    train one step once here so that those imports happen outside the inner runs."""
    from harness.config import family_from_dict
    from harness.family import obtain_family

    cfg = family_from_dict({"seeds": [0], "model": {"n_layers": 1, "n_heads": 1, "d_model": 8},
                            "data": {"vocab_size": 32, "seq_len": 32}, "train": {"steps": 1, "batch_size": 2}})
    obtain_family(cfg, store=tmp_path_factory.mktemp("warm"))

from harness.cli import main

REPO = Path(__file__).resolve().parents[1]
PLUGIN = ("-p", "no:seedstab", "-p", "harness.plugin")
SUITE = """
suite: tiny
defaults:
  seeds: [0, 1, 2, 3, 4, 5]
  model: {n_layers: 2, n_heads: 2, d_model: 16, attn_only: true}
  data: {vocab_size: 32, seq_len: 32}
  train: {optimizer: adam, lr: 3.0e-3, steps: 40, batch_size: 8}
  probe: {n_prompts: 8}
families:
  ref: {}
  hot: {extends: ref, train: {lr: 0.3}}
regression:
  alpha: 0.05
  tolerance: 0.03
  metrics: [head_stability.all_anchors, content_specific.all_anchors]
checks:
  ref: {candidate: ref}
  hot_vs_ref: {candidate: hot, reference: ref}
"""


@pytest.fixture
def proj(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    (pytester.path / "suite.yaml").write_text(SUITE)
    return pytester


def run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest(*PLUGIN, "--seedstab-no-mlflow", "--seedstab-store", "store", "-rA", *args)


def seed_entries(p: pytest.Pytester) -> list[Path]:
    return sorted((p.path / "store").glob("*/*/init*-data*[0-9]"))


def test_checks_run_as_items_missing_then_updated_then_compared(proj: pytest.Pytester) -> None:
    res = run(proj)
    res.assert_outcomes(failed=2)
    out = res.stdout.str()
    assert "MISSING   suite.yaml::ref  wrote baselines/cpu/tiny/ref.obtained.json" in out
    assert (proj.path / "baselines/cpu/tiny/ref.obtained.json").is_file()
    assert ("to retrain the reference and rewrite its baseline: pytest suite.yaml::ref "
            "--seedstab-update-baselines") in out

    res = run(proj, "--seedstab-update-baselines")
    res.assert_outcomes(passed=1, failed=1)
    assert (proj.path / "baselines/cpu/tiny/ref.json").is_file()
    res = run(proj)
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines([
        "*seedstab: REGRESSED*[[]check hot_vs_ref: hot vs reference ref[]]",
        "*metric*layer*reference*candidate*CI*p*MDE*tolerance*flag*",
        "*head_stability.all_anchors*0*REGRESSED*",
        "*paired on 6 seeds*max-T adjusted over all 4 rows*",
    ])
    out = res.stdout.str()
    assert "PASS      suite.yaml::ref  baselines/cpu/tiny/ref.json" in out
    assert "REGRESSED suite.yaml::hot_vs_ref  baselines/cpu/tiny/ref.json" in out
    assert "Traceback" not in out
    # one reference baseline serves both checks; only the candidate trains
    assert sorted(p.name for p in (proj.path / "baselines/cpu/tiny").glob("*.json")) == [
        "ref.json", "ref.obtained.json"]


def test_stale_reference_is_reported_with_nothing_trained(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=1, failed=1)
    before = seed_entries(proj)
    suite = proj.path / "suite.yaml"
    suite.write_text(suite.read_text().replace("steps: 40", "steps: 41"))  # the reference changed
    res = run(proj)
    res.assert_outcomes(failed=2)
    out = res.stdout.str()
    assert "STALE     suite.yaml::ref" in out and "STALE     suite.yaml::hot_vs_ref" in out
    assert "fingerprint of family ref changed" in out and "REGRESSED" not in out
    assert seed_entries(proj) == before  # decided before training: no new seed in the store


def test_fresh_seeds_for_the_candidate_only(proj: pytest.Pytester) -> None:
    """--seedstab-seed 100 gives the candidate seeds 100..105: no seed is shared with the
    reference's baseline (0..5), so the check is unpaired and only the candidate trains."""
    import xml.etree.ElementTree as ET

    run(proj, "--seedstab-update-baselines", "-k", "ref and not hot").assert_outcomes(passed=1)
    before = seed_entries(proj)
    res = run(proj, "suite.yaml::ref", "--seedstab-seed", "100", "--junitxml", "out.xml")
    res.assert_outcomes(passed=1)  # the same config: nothing to flag (INCONCLUSIVE passes too)
    props = {p.get("name"): p.get("value")
             for p in ET.parse(proj.path / "out.xml").iter("property")}
    assert props["seedstab_status"] in ("pass", "inconclusive"), props
    report = props["seedstab_report"]
    assert "unpaired, 6 vs 6 seeds" in report, report
    assert "seeds (candidate): [100, 101, 102, 103, 104, 105]" in report, report
    assert "seeds (reference): [0, 1, 2, 3, 4, 5]" in report, report
    after = seed_entries(proj)
    assert set(before) <= set(after) and len(after) - len(before) == 6, "only the candidate trains"
    assert all("init10" in p.name for p in set(after) - set(before))


def test_a_spec_error_is_one_clean_line(proj: pytest.Pytester) -> None:
    suite = proj.path / "suite.yaml"
    suite.write_text(suite.read_text().replace("ref: {candidate: ref}", "ref: {candidate: ref, bogus: 1}"))
    res = run(proj)
    res.assert_outcomes(errors=1)
    out = res.stdout.str()
    assert "seedstab: " in out and "suite.yaml: checks.ref.bogus: unknown key; expected one of:" in out
    assert "Traceback" not in out and "raise " not in out


def test_inconclusive_switch_is_an_option(proj: pytest.Pytester) -> None:
    res = run(proj, "--seedstab-inconclusive", "maybe")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "invalid choice: 'maybe'" in res.stderr.str()


def test_cli_check_exit_codes(proj: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(proj.path)
    common = ["--store", "store", "--no-progress"]
    assert main(["check", "suite.yaml", *common]) == 1  # missing
    assert "MISSING baseline" in capsys.readouterr().out
    assert main(["check", "suite.yaml::ref", "--update-baselines", *common]) == 0
    capsys.readouterr()
    assert main(["check", "suite.yaml::ref", *common]) == 0
    assert "1 check(s), all passed" in capsys.readouterr().out
    assert main(["check", "suite.yaml::hot", "--reference", "suite.yaml::ref", *common]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED" in out and "check hot_vs_ref: hot vs reference ref" in out
    assert main(["check", "suite.yaml::nope", *common]) == 2
    assert "no check or family 'nope'" in capsys.readouterr().err
    assert main(["check", "suite.yaml::ref", "--alpha", "2", *common]) == 2
    assert "alpha: expected a level strictly between 0 and 1" in capsys.readouterr().err


def test_a_spec_error_in_a_python_suite_is_one_line_per_test(proj: pytest.Pytester) -> None:
    (proj.path / "bad.yaml").write_text("suite: bad\nfamilies:\n  a: {seeds: [0, 1, 2], train: {lr: fast}}\n")
    proj.makepyfile(test_bad='''
        def test_one(seedstab):
            seedstab.analysis("bad.yaml", "a")

        def test_two(seedstab):
            seedstab.suite("bad.yaml")
    ''')
    res = run(proj, "test_bad.py")
    res.assert_outcomes(failed=2)
    out = res.stdout.str()
    assert out.count("seedstab: bad.yaml: families.a.train.lr: expected a positive float, got 'fast'") >= 2, out
    assert "Traceback" not in out and "harness/config.py" not in out and "raise ConfigError" not in out


def test_runs_not_logged_on_xdist_workers_are_reported_by_the_controller(proj: pytest.Pytester) -> None:
    """An unreachable tracking server: the verdicts stand, each run's data is kept on disk, and
    the controller's summary says so even though the workers did the logging."""
    import socket

    pytest.importorskip("xdist")
    run(proj, "--seedstab-update-baselines", "-k", "ref and not hot").assert_outcomes(passed=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    uri = f"http://127.0.0.1:{port}"
    res = proj.runpytest_subprocess(*PLUGIN, "-p", "xdist", "-n", "2", "--seedstab-store", "store",
                                    "--seedstab-mlflow-uri", uri, "suite.yaml", timeout=300)
    res.assert_outcomes(passed=1, failed=1)  # ref passes, hot regresses: verdicts unaffected
    out = res.stdout.str()
    assert f"seedstab: some runs were not logged to MLflow at {uri}" in out, out
    assert "their data is kept under" in out and ".seedstab/unlogged" in out
    assert list((proj.path / ".seedstab" / "unlogged").iterdir())
