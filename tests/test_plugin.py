"""End-to-end tests of the seedstab pytest plugin through ``pytester`` (no training: the
analyses are built from synthetic per-seed values in the generated test module)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch  # noqa: F401  imported here, outside pytester's in-process runs: the plugin
# imports torch lazily (for the header's versions), and pytester drops modules first imported
# inside a run from sys.modules afterwards; unloading torch that way segfaults at the next GC.

# Everything the inner runs import, imported here first, for the same reason (numpy's and
# scipy's extension modules cannot be loaded twice in one process).
import harness.analysis  # noqa: F401
import harness.baseline_fixture  # noqa: F401
import harness.gate  # noqa: F401
import harness.plugin as plugin

REPO = Path(__file__).resolve().parents[1]
# Block the installed entry point (if any) and load the module: works installed or not.
PLUGIN = ("-p", "no:seedstab", "-p", "harness.plugin")

MODULE = '''
import json
import pathlib

import numpy as np
import pytest

from harness.results import Analysis, Measurement

P = json.loads(pathlib.Path(__file__).with_name("params.json").read_text())


def family(*, seeds, shift, fingerprint, name="adam", n_layers=4):
    """Per-layer per-seed stability (~0.8 +- 0.01) and a pairwise scalar (~0.9 +- 0.01)."""
    ps = np.stack([0.8 + 0.01 * np.random.default_rng(s).standard_normal(n_layers)
                   for s in seeds]) + shift                        # (M, L)
    v = ps.mean(0)
    layers = Measurement("head_stability", v, v - 0.01, v + 0.01, True, per_seed=ps,
                         n_seeds=len(seeds))
    M = len(seeds)
    noise = np.random.default_rng(1000 + seeds[0]).standard_normal((M, M)) * 0.01
    pw = 0.9 + (noise + noise.T) / 2 + shift                      # (M, M)
    pw[np.arange(M), np.arange(M)] = np.nan
    f = float(np.nanmean(pw))
    scalar = Measurement("resid_cka", np.asarray(f), np.asarray(f - 0.01),
                         np.asarray(f + 0.01), True, pairwise=pw, n_seeds=M)
    return Analysis(name, fingerprint, tuple(seeds), "cpu", "probe-1",
                    {"head_stability": layers, "resid_cka": scalar})


def run_check(stability_baseline, **over):
    p = {**P, **over}
    fam = family(seeds=list(range(p["start"], p["start"] + 6)), shift=p["shift"],
                 fingerprint=p["fp"])
    return stability_baseline.check(fam, metrics=["head_stability", "resid_cka"],
                                    tolerance=0.02, alpha=0.05, suite="demo")


def test_alpha(stability_baseline):
    v = run_check(stability_baseline)
    assert v.status in ("pass", "updated")


def test_beta(stability_baseline):
    v = run_check(stability_baseline, shift=0.0, fp="fp-beta")
    assert v.status in ("pass", "updated")
'''


@pytest.fixture
def proj(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with one stability test module (two tests) and its params file."""
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Other installed plugins (hypothesis, benchmark, ...) triple the cost of each inner run.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setattr(plugin, "_cuda_available", lambda: False)
    # harness.plugin is imported by this file first, so the inner runs cannot rewrite it
    pytester.makeini("[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n")
    pytester.makepyfile(test_mod=MODULE)
    set_params(pytester)
    return pytester


def set_params(pytester: pytest.Pytester, *, start: int = 0, shift: float = 0.0,
               fp: str = "fp-1") -> None:
    (pytester.path / "params.json").write_text(json.dumps({"start": start, "shift": shift, "fp": fp}))


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, "-rA", *args)


def bpath(pytester: pytest.Pytester, test: str) -> Path:
    return pytester.path / "baselines" / "cpu" / "demo" / f"{test}.json"


def snapshot(paths: list[Path]) -> list[tuple[int, bytes]]:
    return [(p.stat().st_mtime_ns, p.read_bytes()) for p in paths]


# ----------------------------------------------------------------------------- missing / update


def test_missing_baseline_fails_and_writes_obtained(proj: pytest.Pytester) -> None:
    res = run(proj)
    res.assert_outcomes(failed=2)
    obtained = proj.path / "baselines" / "cpu" / "demo" / "test_alpha.obtained.json"
    assert obtained.is_file() and not bpath(proj, "test_alpha").exists()
    header = json.loads(obtained.read_text())["header"]
    assert header["fingerprints"] == {"adam": "fp-1"} and header["seeds"] == {"adam": list(range(6))}
    out = res.stdout.str()
    assert "MISSING baseline" in out
    assert "pytest test_mod.py::test_alpha --seedstab-update-baselines" in out
    assert "mv " in out and "test_alpha.obtained.json" in out
    assert "MISSING   test_mod.py::test_alpha  wrote baselines/cpu/demo/test_alpha.obtained.json" in out
    # accepting by rename works: the next run (other seeds) passes for that test
    obtained.rename(bpath(proj, "test_alpha"))
    set_params(proj, start=50)
    run(proj).assert_outcomes(passed=1, failed=1)


def test_update_then_rerun_passes(proj: pytest.Pytester) -> None:
    res = run(proj, "--seedstab-update-baselines")
    res.assert_outcomes(passed=2)
    assert "UPDATED   test_mod.py::test_alpha  wrote baselines/cpu/demo/test_alpha.json" in res.stdout.str()
    text = bpath(proj, "test_alpha").read_text()
    assert '"per_seed"' in text and '"pairwise"' in text
    set_params(proj, start=100)  # fresh seeds, same distribution
    res = run(proj)
    res.assert_outcomes(passed=2)
    assert "PASS      test_mod.py::test_alpha  baselines/cpu/demo/test_alpha.json" in res.stdout.str()


def test_regression_fails_with_table(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    before = snapshot([bpath(proj, "test_alpha")])
    set_params(proj, start=100, shift=-0.1)  # worse by 5x the tolerance
    res = run(proj, "-k", "alpha")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "REGRESSED" in out
    res.stdout.fnmatch_lines([
        "*metric*layer*reference*candidate*CI*p*MDE*tolerance*flag*",
        "*head_stability*0*REGRESSED*",
        "*resid_cka*-*REGRESSED*",
        "*seeds (reference): adam: [[]0, 1, 2, 3, 4, 5[]]*",
        "*seeds (candidate): adam: [[]100, 101, 102, 103, 104, 105[]]*",
        "*pytest test_mod.py::test_alpha --seedstab-update-baselines*",
    ])
    assert "Traceback" not in out and "def check" not in out  # __tracebackhide__, pytrace=False
    assert snapshot([bpath(proj, "test_alpha")]) == before  # a failure never rewrites
    assert (bpath(proj, "test_alpha").parent / "test_alpha.obtained.json").is_file()


def test_better_candidate_and_small_change_pass(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    set_params(proj, start=100, shift=-0.008)  # worse, but within tolerance 0.02
    run(proj).assert_outcomes(passed=2)
    set_params(proj, start=100, shift=+0.2)  # much better: never a regression
    run(proj).assert_outcomes(passed=2)


def test_stale_header_is_reported_as_stale(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    set_params(proj, start=100, shift=-0.1, fp="fp-2")  # also worse: stale wins, no comparison
    res = run(proj, "-k", "alpha")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "STALE baseline (not a regression)" in out
    assert "fingerprint of family adam changed: fp-1 -> fp-2" in out
    assert "STALE     test_mod.py::test_alpha" in out
    assert "REGRESSED" not in out
    # --seedstab-update-baselines accepts the new fingerprint
    run(proj, "-k", "alpha", "--seedstab-update-baselines").assert_outcomes(passed=1)
    set_params(proj, start=200, fp="fp-2")
    run(proj, "-k", "alpha").assert_outcomes(passed=1)


def test_invalid_json_names_the_file(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    path = bpath(proj, "test_alpha")
    path.write_text('{"header": {\n  "schema_version": 1,,\n}')
    res = run(proj)
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    assert "seedstab: INVALID: the check cannot be decided" in out
    assert f"  - {path}: invalid JSON at line 2" in out and "--seedstab-update-baselines" in out
    assert "During handling" not in out  # the caught error is not shown a second time
    assert "INVALID   test_mod.py::test_alpha" in out
    assert path.read_text().startswith('{"header": {\n')  # left as it was


def _cut(x: list, m: int, axes: int) -> list:
    """The first ``m`` entries along the first ``axes`` axes of a nested list."""
    return [_cut(v, m, axes - 1) if axes > 1 else v for v in x[:m]]


def _flip_direction(ms: dict) -> str:
    ms["head_stability"]["higher_is_better"] = False
    return "head_stability: higher_is_better is False in the reference but True in the candidate"


def _pairwise_to_two_seeds(ms: dict) -> str:
    m = ms["resid_cka"]
    m["pairwise"] = _cut(m["pairwise"], 2, 2)
    return ("measurements.adam.resid_cka.pairwise holds values for 2 seed(s) but "
            "header.seeds.adam lists 6")


def _null_seed_value(ms: dict) -> str:
    ms["head_stability"]["per_seed"][2][1] = None
    return "measurements.adam.head_stability.per_seed holds null/NaN"


@pytest.mark.parametrize("mangle", [_flip_direction, _pairwise_to_two_seeds, _null_seed_value],
                         ids=["direction-flipped", "pairwise-2-seeds", "null-seed-value"])
def test_hand_edited_baseline_is_invalid_and_named(proj: pytest.Pytester, mangle) -> None:
    """A baseline that still parses but cannot be compared (caught by read_baseline, or only by
    the comparison) fails as INVALID with the file named, never as a bare traceback."""
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    path = bpath(proj, "test_alpha")
    doc = json.loads(path.read_text())
    why = mangle(doc["measurements"]["adam"])
    path.write_text(json.dumps(doc))
    edited = path.read_bytes()
    res = run(proj)
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    assert "seedstab: INVALID: the check cannot be decided" in out
    assert why in out and str(path) in out
    assert "INVALID   test_mod.py::test_alpha" in out
    assert "pytest test_mod.py::test_alpha --seedstab-update-baselines" in out
    assert "Traceback" not in out and "ValueError" not in out  # pytrace=False
    assert "During handling" not in out  # the caught error is not shown a second time
    assert path.read_bytes() == edited  # left as it was; this run's result goes beside it
    assert (path.parent / "test_alpha.obtained.json").is_file()


# ----------------------------------------------------------------------------- selection


def test_k_run_leaves_other_baselines_alone(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    stray = proj.path / "baselines" / "cpu" / "demo" / "test_removed.json"
    stray.write_bytes(bpath(proj, "test_beta").read_bytes())
    before = snapshot([bpath(proj, "test_beta"), stray])
    alpha_before = bpath(proj, "test_alpha").read_bytes()
    set_params(proj, start=300)
    res = run(proj, "-k", "alpha", "--seedstab-update-baselines")
    res.assert_outcomes(passed=1)
    out = res.stdout.str()
    assert snapshot([bpath(proj, "test_beta"), stray]) == before
    assert bpath(proj, "test_alpha").read_bytes() != alpha_before  # the selected one was rewritten
    assert "test_removed" not in out
    assert "unused baselines: not checked, some tests were deselected" in out
    # a node id selects too
    res = run(proj, "test_mod.py::test_alpha")
    res.assert_outcomes(passed=1)
    assert "test_removed" not in res.stdout.str()
    assert "selected by file or node id" in res.stdout.str()


def test_full_run_reports_unused_baseline(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    stray = proj.path / "baselines" / "cpu" / "demo" / "test_removed.json"
    stray.write_text("not even json")  # unused files are listed, never read or deleted
    other = proj.path / "baselines" / "cuda-h100" / "demo" / "test_alpha.json"
    other.parent.mkdir(parents=True)
    other.write_text("{}")
    res = run(proj)
    res.assert_outcomes(passed=2)
    res.stdout.fnmatch_lines(["*unused baselines (no test used them in this run; nothing was "
                              "deleted):*", "  baselines/cpu/demo/test_removed.json",
                              "*other device classes, not checked: cuda-h100*"])
    assert stray.read_text() == "not even json" and other.exists()
    stray.unlink()
    res = run(proj)
    assert "unused baselines: none" in res.stdout.str()


def test_stop_on_first_failure_does_not_report_unused(proj: pytest.Pytester) -> None:
    res = run(proj, "-x")  # no baselines: the first test fails, the second never runs
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "unused baselines: not checked, the run stopped at the first failure" in out
    assert not (bpath(proj, "test_beta").parent / "test_beta.obtained.json").exists()


def test_junitxml_carries_status(proj: pytest.Pytester) -> None:
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    res = run(proj, "--junitxml=out.xml")
    res.assert_outcomes(passed=2)
    xml = (proj.path / "out.xml").read_text()
    assert '<property name="seedstab_status" value="pass"' in xml
    assert 'name="seedstab_baseline"' in xml and "test_alpha.json" in xml


def test_xdist_reports_from_controller(proj: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    stray = proj.path / "baselines" / "cpu" / "demo" / "test_removed.json"
    stray.write_text("{}")
    res = proj.runpytest_subprocess(*PLUGIN, "-p", "xdist", "-n", "2", timeout=120)
    res.assert_outcomes(passed=2)
    out = res.stdout.str()
    assert "PASS      test_mod.py::test_alpha" in out and "PASS      test_mod.py::test_beta" in out
    assert "  baselines/cpu/demo/test_removed.json" in out
    assert len([ln for ln in out.splitlines() if ln.startswith("=") and " seedstab " in ln]) == 1
    # deselection happens on the workers; the controller must still know
    res = proj.runpytest_subprocess(*PLUGIN, "-p", "xdist", "-n", "2", "-k", "alpha",
                                    timeout=120)
    res.assert_outcomes(passed=1)
    out = res.stdout.str()
    assert "test_removed" not in out
    assert "unused baselines: not checked, some tests were deselected" in out


def test_same_test_name_in_two_modules_is_an_error(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_other=MODULE)
    res = run(proj, "--seedstab-update-baselines")
    res.assert_outcomes(passed=2, failed=2)
    assert "map to the same baseline file" in res.stdout.str()


def test_wrong_arguments_to_check_fail_readably(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_args='''
        import numpy as np
        import pytest
        from harness.results import Analysis, Measurement
        from test_mod import family

        def fam():
            return family(seeds=[0, 1, 2], shift=0.0, fingerprint="x")

        def test_unknown_metric(stability_baseline):
            with pytest.raises(KeyError, match="no measurement 'nope'"):
                stability_baseline.check(fam(), metrics=["nope"], tolerance=0.1, alpha=0.05,
                                         suite="s")

        def test_unknown_family(stability_baseline):
            with pytest.raises(ValueError, match="names family 'sgd'"):
                stability_baseline.check(fam(), metrics=["sgd:resid_cka"], tolerance=0.1,
                                         alpha=0.05, suite="s")

        def test_not_an_analysis(stability_baseline):
            with pytest.raises(TypeError, match="expected an Analysis"):
                stability_baseline.check({"a": 1}, metrics=["x"], tolerance=0.1, alpha=0.05,
                                         suite="s")

        def test_bad_suite(stability_baseline):
            with pytest.raises(ValueError, match="suite: expected a plain directory name"):
                stability_baseline.check(fam(), metrics=["resid_cka"], tolerance=0.1,
                                         alpha=0.05, suite="../up")

        def test_tolerance_mapping_missing_metric(stability_baseline):
            with pytest.raises(ValueError, match="tolerance: no entry for metric 'resid_cka'"):
                stability_baseline.check(fam(), metrics=["resid_cka"],
                                         tolerance={"head_stability": 0.1}, alpha=0.05, suite="s")

        def test_bad_alpha(stability_baseline):
            with pytest.raises(ValueError, match="alpha: expected a level strictly between"):
                stability_baseline.check(fam(), metrics=["resid_cka"], tolerance=0.1, alpha=5,
                                         suite="s")

        def test_negative_tolerance(stability_baseline):
            with pytest.raises(ValueError, match="tolerance: expected a finite number >= 0"):
                stability_baseline.check(fam(), metrics=["resid_cka"],
                                         tolerance={"resid_cka": -1.0}, alpha=0.05, suite="s")

        def test_per_head_values(stability_baseline):
            a = fam()
            m = a["head_stability"]
            per_head = Measurement("head_stability", np.stack([m.value, m.value], -1),
                                   np.stack([m.lo, m.lo], -1), np.stack([m.hi, m.hi], -1), True,
                                   per_seed=np.stack([m.per_seed, m.per_seed], -1), n_seeds=3)
            a = Analysis(a.family, a.fingerprint, a.seeds, a.device_class, a.probe_digest,
                         {"head_stability": per_head})
            with pytest.raises(ValueError, match=r"metrics: head_stability has shape \\(4, 2\\)"
                                                 ".*reduce per-head values to layers"):
                stability_baseline.check(a, metrics=["head_stability"], tolerance=0.1,
                                         alpha=0.05, suite="s")
    ''')
    # checked in update mode too (where no comparison uses them), and nothing gets written
    res = run(proj, "test_args.py", "--seedstab-update-baselines")
    res.assert_outcomes(passed=8)
    assert not (proj.path / "baselines" / "cpu" / "s").exists()


def test_a_check_that_cannot_fail_is_refused(proj: pytest.Pytester) -> None:
    # 3 vs 3 seeds: the smallest one-sided permutation p is 1/20 = 0.05, not below alpha.
    proj.makepyfile(test_few='''
        from test_mod import family

        def test_few(stability_baseline):
            stability_baseline.check(family(seeds=[0, 1, 2], shift=0.0, fingerprint="x"),
                                     metrics=["head_stability"], tolerance=0.1, alpha=0.05, suite="s")
    ''')
    for args in (("--seedstab-update-baselines",), ()):
        result = run(proj, "test_few.py", *args)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*UNDERPOWERED*", "*could never fail*paired on 3 seeds*"
                                     "smallest attainable p-value is 0.125*at least 5 shared seeds*"])
    assert not list(proj.path.rglob("test_few.json")), "an underpowered check must not write a baseline"


def test_summary_file_holds_the_verdict_table(proj: pytest.Pytester) -> None:
    """--seedstab-summary writes what CI appends to the job summary: one row per test with
    its outcome and baseline verdict."""
    run(proj, "--seedstab-update-baselines").assert_outcomes(passed=2)
    set_params(proj, start=100, shift=-0.1)  # test_alpha regresses, test_beta (own fp) passes
    res = run(proj, "--seedstab-no-mlflow", "--seedstab-summary", "out/summary.md")
    res.assert_outcomes(passed=1, failed=1)
    text = (proj.path / "out" / "summary.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert text.startswith("## seedstab verdicts") and len(rows) == 2, text
    assert "test_mod.py::test_alpha" in rows[0] and "failed" in rows[0] and "regressed" in rows[0]
    assert "test_mod.py::test_beta" in rows[1] and "passed" in rows[1] and "| pass |" in rows[1]
