"""The plugin's options, ini keys and marker through ``pytester``: every name is namespaced
(the plugin loads in every pytest run of the environment), contradictions are usage errors,
and the training options reach ``obtain_family`` (captured by a stand-in: nothing trains)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch  # noqa: F401  (see tests/test_plugin.py: torch must be imported outside pytester runs)

# Everything the inner runs import, imported here first (as torch): pytester drops modules
# first imported inside a run, and a later test would see a second copy of their classes.
import harness.analysis  # noqa: F401
import harness.baseline_fixture  # noqa: F401
import harness.family  # noqa: F401
import harness.gate  # noqa: F401
import harness.stats  # noqa: F401
import harness.plugin as plugin

REPO = Path(__file__).resolve().parents[1]
PLUGIN = ("-p", "no:seedstab", "-p", "harness.plugin")
INI = "[pytest]\nfilterwarnings = ignore::pytest.PytestAssertRewriteWarning\n"
OLD_NAMES = ("--device cpu", "--store st", "--update-baselines", "--baselines-dir bl",
             "--mlflow-uri sqlite:///m.db", "--no-mlflow", "--n-boot 10", "--ci-method jackknife-t",
             "--require-gpu")

GPU_MODULE = '''
import pytest

@pytest.mark.seedstab_gpu
def test_on_gpu():
    pass

def test_plain():
    pass
'''

SUITE = """
suite: s
defaults:
  seeds: [0, 1, 2]
  model: {n_layers: 1, n_heads: 2, d_model: 16, attn_only: true}
  data: {vocab_size: 32, seq_len: 32}
  train: {steps: 3, batch_size: 4}
  probe: {n_prompts: 4}
families:
  a: {}
"""


@pytest.fixture(scope="module", autouse=True)
def _warm_imports(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Load a suite once outside the inner runs: validating its optimizer imports parts of
    torch lazily, and pytester drops modules first imported inside a run (torch's operator
    libraries then fail to register a second time, in later tests of the same process)."""
    from harness.config import load_suite
    import harness.executors  # noqa: F401
    import harness.session  # noqa: F401

    path = tmp_path_factory.mktemp("warm") / "s.yaml"
    path.write_text(SUITE)
    load_suite(path)


@pytest.fixture
def proj(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    for var in ("SEEDSTAB_STORE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(plugin, "_cuda_available", lambda: False)
    pytester.makeini(INI)
    return pytester


class FakeExecutor:
    def __init__(self, name: str, log: list) -> None:
        self.name, self.log = name, log

    def close(self) -> None:
        self.log.append(("closed", self.name))

    def __eq__(self, other: object) -> bool:
        return other == f"executor {self.name}"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*PLUGIN, "-rA", *args)


# ----------------------------------------------------------------------------- the marker


def test_gpu_marker_skips_without_cuda(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_gpu=GPU_MODULE)
    res = run(proj, "test_gpu.py")
    res.assert_outcomes(passed=1, skipped=1)
    assert "torch sees none" in res.stdout.str()


def test_gpu_marker_fails_with_require_gpu(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_gpu=GPU_MODULE)
    res = run(proj, "test_gpu.py", "--seedstab-require-gpu")
    res.assert_outcomes(passed=1, errors=1)
    assert ("marked seedstab_gpu and --seedstab-require-gpu was given, but torch sees no CUDA device"
            in res.stdout.str())


def test_gpu_marker_runs_with_cuda(proj: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    proj.makepyfile(test_gpu=GPU_MODULE)
    monkeypatch.setattr(plugin, "_cuda_available", lambda: True)
    run(proj, "test_gpu.py", "--seedstab-require-gpu").assert_outcomes(passed=2)
    run(proj, "test_gpu.py", "--seedstab-device", "cpu").assert_outcomes(passed=1, skipped=1)


def test_a_plain_gpu_marker_is_not_ours(proj: pytest.Pytester) -> None:
    """Another project's own ``gpu`` marker means nothing to seedstab: its tests run."""
    proj.makepyfile(test_theirs="import pytest\n\n@pytest.mark.gpu\ndef test_theirs():\n    pass\n")
    run(proj, "test_theirs.py").assert_outcomes(passed=1)


def test_markers_registered(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_gpu=GPU_MODULE)
    res = run(proj, "test_gpu.py", "--strict-markers")
    res.assert_outcomes(passed=1, skipped=1)
    res = run(proj, "--markers")
    res.stdout.fnmatch_lines(["@pytest.mark.seedstab_gpu:*", "@pytest.mark.slow:*"])
    assert "@pytest.mark.gpu:" not in res.stdout.str()


# ----------------------------------------------------------------------------- options


def test_every_option_is_namespaced(proj: pytest.Pytester) -> None:
    res = run(proj, "--help")
    section = res.stdout.str().split("seed stability of transformer internals:")[1].split("\n\n")[0]
    flags = [w for w in section.split() if w.startswith("--")]
    assert len(flags) >= 16 and all(f.startswith("--seedstab-") for f in flags), flags


@pytest.mark.parametrize("old", OLD_NAMES)
def test_old_option_names_are_gone(proj: pytest.Pytester, old: str) -> None:
    res = run(proj, *old.split())
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert f"unrecognized arguments: {old.split()[0]}" in res.stderr.str()


def test_options_are_validated(proj: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [(("--seedstab-device", "tpu"), "expected auto, cpu, mps, cuda or cuda:N, got 'tpu'"),
           (("--seedstab-seed", "-3"), "expected a non-negative integer, got '-3'"),
           (("--seedstab-n-boot", "0"), "expected a positive integer, got '0'"),
           (("--seedstab-pack", "0"), "expected auto or a positive integer, got '0'"),
           (("--seedstab-pack", "many"), "expected auto or a positive integer, got 'many'"),
           (("--seedstab-progress", "loud"), "invalid choice: 'loud'"),
           (("--seedstab-executor", "slurm"), "invalid choice: 'slurm'"),
           (("--seedstab-require-gpu", "--seedstab-device", "cpu"),
            "--seedstab-require-gpu contradicts --seedstab-device cpu"),
           (("--seedstab-no-mlflow", "--seedstab-mlflow-uri", "sqlite:///m.db"),
            "--seedstab-no-mlflow contradicts --seedstab-mlflow-uri"),
           (("--seedstab-ray-address", "ray://h:10001"), "--seedstab-ray-address is for --seedstab-executor ray")]
    for args, message in bad:
        res = run(proj, *args)
        assert res.ret == pytest.ExitCode.USAGE_ERROR, args
        assert message in res.stderr.str(), (args, res.stderr.str())
    monkeypatch.setattr(plugin, "_ray_installed", lambda: False)
    res = run(proj, "--seedstab-executor", "ray")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--seedstab-executor ray: the ray package is not installed (pip install ray)" in res.stderr.str()


def test_options_fixture(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_opts='''
        from pathlib import Path

        def test_opts(seedstab_options, pytestconfig):
            o = seedstab_options
            assert o.baselines_dir == (Path(pytestconfig.invocation_params.dir) / "bl").resolve()
            assert (o.device, o.require_gpu, o.no_mlflow, o.seed_offset) == ("cuda:1", False, False, 7)
            assert o.mlflow_uri == "sqlite:///x.db" and o.update_baselines is False
            assert o.store == (Path(pytestconfig.invocation_params.dir) / "st").resolve()
            assert (o.n_boot, o.ci_method, o.inconclusive) == (17, "multi-bootstrap", "fail")
            assert (o.progress, o.pack, o.executor) == ("lines", 4, "local")

        def test_default_dir(stability_baseline, pytestconfig):
            p = stability_baseline.path_for(device_class="cpu", suite="s")
            assert p == Path(pytestconfig.rootpath) / "bl2" / "cpu" / "s" / "test_default_dir.json"
    ''')
    run(proj, "test_opts.py::test_opts", "--seedstab-baselines-dir", "bl", "--seedstab-device", "cuda:1",
        "--seedstab-seed", "7", "--seedstab-mlflow-uri", "sqlite:///x.db", "--seedstab-store", "st",
        "--seedstab-n-boot", "17", "--seedstab-ci-method", "multi-bootstrap",
        "--seedstab-inconclusive", "fail", "--seedstab-progress", "lines",
        "--seedstab-pack", "4").assert_outcomes(passed=1)
    run(proj, "test_opts.py::test_default_dir", "--seedstab-baselines-dir",
        str(proj.path / "bl2")).assert_outcomes(passed=1)


def test_defaults(proj: pytest.Pytester) -> None:
    proj.makepyfile(test_opts='''
        from pathlib import Path

        def test_default(seedstab_options, pytestconfig):
            o = seedstab_options
            assert o.baselines_dir == Path(pytestconfig.rootpath) / "baselines"
            assert (o.no_mlflow, o.mlflow_uri, o.store, o.seed_offset) == (True, None, None, None)
            assert (o.device, o.update_baselines, o.n_boot, o.ci_method) == ("auto", False, 1000, "jackknife-t")
            assert (o.progress, o.pack, o.executor, o.ray_address) == ("auto", None, "local", None)
    ''')
    run(proj, "test_opts.py", "--seedstab-no-mlflow").assert_outcomes(passed=1)


def test_ini_keys_and_what_wins(proj: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project sets the store, the baselines and the tracking URI once in its ini file
    (paths relative to it); the environment wins over the ini file, the command line over both."""
    proj.makeini(INI + "seedstab_store = cache/st\nseedstab_baselines_dir = ref/bl\n"
                       "seedstab_mlflow_uri = sqlite:///ini.db\n")
    proj.makepyfile(test_opts='''
        import json, os
        from pathlib import Path

        def test_opts(seedstab_options):
            o = seedstab_options
            Path(os.environ["OUT"]).write_text(json.dumps([str(o.store), str(o.baselines_dir), o.mlflow_uri]))
    ''')
    out = proj.path / "seen.json"
    monkeypatch.setenv("OUT", str(out))
    sub = proj.mkdir("sub")
    monkeypatch.chdir(sub)  # relative to the ini file, not to where pytest runs

    def seen(*args: str) -> list:
        run(proj, str(proj.path / "test_opts.py"), "--seedstab-no-mlflow", *args).assert_outcomes(passed=1)
        import json

        return json.loads(out.read_text())

    ini = [str(proj.path / "cache" / "st"), str(proj.path / "ref" / "bl"), "sqlite:///ini.db"]
    # (--seedstab-no-mlflow with an ini URI is no contradiction: the ini is a default)
    assert seen() == ini
    assert seen("--seedstab-store", "cli", "--seedstab-baselines-dir", "b") == \
        [str(sub / "cli"), str(sub / "b"), "sqlite:///ini.db"]
    monkeypatch.setenv("SEEDSTAB_STORE", str(proj.path / "env"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert seen() == [str(proj.path / "env"), ini[1], None]  # None: tracking reads the env


def test_training_options_reach_obtain_family(proj: pytest.Pytester,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """--seedstab-progress, --seedstab-pack, --seedstab-executor and --seedstab-ray-address
    (default $RAY_ADDRESS) are what the session passes to obtain_family; the executor is
    made once, on first use, and closed when pytest ends."""
    calls: list[dict] = []
    made: list[tuple] = []

    def fake_obtain(cfg, **kw):
        calls.append({"family": cfg.name, **kw})
        return "trained " + cfg.name

    def fake_make(name, *, address=None):
        made.append((name, address))
        return FakeExecutor(name, made)

    monkeypatch.setattr("harness.family.obtain_family", fake_obtain)
    monkeypatch.setattr("harness.executors.make_executor", fake_make)
    monkeypatch.setattr(plugin, "_ray_installed", lambda: True)
    (proj.path / "s.yaml").write_text(SUITE)
    proj.makepyfile(test_fam='''
        def test_fam(seedstab):
            assert seedstab.family("s.yaml", "a") == "trained a"
            assert seedstab.family("s.yaml", "a") == "trained a"  # cached: asked once
    ''')
    run(proj, "--seedstab-no-mlflow", "--seedstab-store", "st").assert_outcomes(passed=1)
    assert made == [("local", None), ("closed", "local")]
    assert [(c["family"], c["progress"], c["pack"], c["executor"]) for c in calls] == \
        [("a", "auto", None, "executor local")]
    assert calls[0]["store"] == (proj.path / "st").resolve() and calls[0]["device"] is None

    calls.clear(), made.clear()
    run(proj, "--seedstab-no-mlflow", "--seedstab-progress", "lines", "--seedstab-pack", "3",
        "--seedstab-executor", "ray", "--seedstab-ray-address", "ray://head:10001",
        "--seedstab-device", "cpu").assert_outcomes(passed=1)
    assert made == [("ray", "ray://head:10001"), ("closed", "ray")]
    assert [(c["progress"], c["pack"], c["executor"], c["device"]) for c in calls] == \
        [("lines", 3, "executor ray", "cpu")]

    made.clear()
    monkeypatch.setenv("RAY_ADDRESS", "ray://env:10001")
    run(proj, "--seedstab-no-mlflow", "--seedstab-executor", "ray").assert_outcomes(passed=1)
    assert made == [("ray", "ray://env:10001"), ("closed", "ray")]


def test_progress_off_leaves_capture_alone(proj: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Progress is written past pytest's capture (to the real stderr) unless it is off."""
    import sys

    def fake_obtain(cfg, **kw):
        print(f"progress of {cfg.name}: {kw['progress']}", file=sys.stderr)
        return cfg.name

    monkeypatch.setattr("harness.family.obtain_family", fake_obtain)
    monkeypatch.setattr("harness.executors.make_executor",
                        lambda name, *, address=None: FakeExecutor(name, []))
    (proj.path / "s.yaml").write_text(SUITE)
    proj.makepyfile(test_fam='''
        def test_fam(seedstab):
            seedstab.family("s.yaml", "a")
            assert 0, "show the captured output"
    ''')
    res = run(proj, "--seedstab-no-mlflow", "--seedstab-progress", "bar")
    res.assert_outcomes(failed=1)
    assert "progress of a: bar" in res.stderr.str()  # live, not in the captured section
    assert "Captured stderr call" not in res.stdout.str()
    res = run(proj, "--seedstab-no-mlflow", "--seedstab-progress", "off")
    res.assert_outcomes(failed=1)
    assert "progress of a: off" not in res.stderr.str()
    res.stdout.fnmatch_lines(["*Captured stderr call*", "progress of a: off"])


def test_entry_point_and_dash_p_together(proj: pytest.Pytester, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Once installed, the pytest11 entry point loads the plugin; ``-p no:seedstab -p
    harness.plugin`` (what these tests pass) must still work, and so must the entry point alone."""
    site = tmp_path / "site"
    dist = site / "seedstab-0.1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: seedstab\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\nseedstab = harness.plugin\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(site)]))
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    proj.makepyfile(test_gpu=GPU_MODULE)
    res = proj.runpytest_subprocess("test_gpu.py", "--seedstab-require-gpu", "--seedstab-device", "cpu")
    assert "--seedstab-require-gpu contradicts" in res.stderr.str()  # the entry point alone loads it
    res = proj.runpytest_subprocess(*PLUGIN, "test_gpu.py", "--seedstab-device", "cpu")
    res.assert_outcomes(passed=1, skipped=1)


def test_progress_starts_on_its_own_line(tmp_path: Path) -> None:
    """In a terminal or CI log, progress never continues pytest's line of dots, and a family
    that writes nothing (loaded, or cached for the session) leaves that line alone."""
    import subprocess
    import sys

    (tmp_path / "s.yaml").write_text(SUITE)
    (tmp_path / "conftest.py").write_text(
        "import sys\nimport harness.session as s\n"
        "def fake(self, cfg):\n    print('progress of ' + cfg.name, file=sys.stderr)\n    return cfg.name\n"
        "s.StabilitySession._obtain = fake\n")
    (tmp_path / "test_fam.py").write_text(
        "def test_one(seedstab):\n    seedstab.family('s.yaml', 'a')\n\n"
        "def test_two(seedstab):\n    seedstab.family('s.yaml', 'a')\n\n"
        "def test_three():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", *PLUGIN, "-p", "no:cacheprovider",
                           "--seedstab-no-mlflow", "test_fam.py"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout
    assert lines.count("progress of a") == 1, proc.stdout  # a line of its own, written once
    # the cached second call and the third test continue pytest's line, unbroken
    assert any(ln.startswith("test_fam.py ..") for ln in lines[lines.index("progress of a"):]), proc.stdout
