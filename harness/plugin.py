"""The seedstab pytest plugin: options, markers and the ``stability_baseline`` fixture.

Loaded through the ``pytest11`` entry point ``seedstab`` once the package is installed; from a
source checkout, ``pytest -p harness.plugin``. Both at once would register the module twice
(pluggy refuses that), so code that must work either way (e.g. pytester tests) passes
``-p no:seedstab -p harness.plugin``: the first blocks the entry point, the second loads it.

Because the entry point loads it into every pytest run of the environment, seedstab's or
not, every option it adds starts with ``--seedstab-``, its marker is ``seedstab_gpu``, its ini
keys start with ``seedstab_``, and loading it imports nothing heavy (no torch, numpy, scipy
or mlflow until a seedstab fixture or suite is used).

The gate lives in :mod:`harness.gate` (what is decided before training, in which order) and
:mod:`harness.verdict` (the pure policy); this module registers options, collects YAML
``checks:`` (:mod:`harness.pytest_checks`) and talks to people (the terminal section:
:mod:`harness.pytest_summary`). Choices:

- every check ends in one status, shown in its failure message and the terminal summary:
  PASS, REGRESSED (worse beyond the tolerance and significant over the whole check),
  INCONCLUSIVE (worse beyond the tolerance but not significant; passes with a warning by
  default, fails with ``--seedstab-inconclusive fail`` or ``inconclusive: fail`` in YAML),
  UNDERPOWERED (the check could never fail at its seed counts: refused before training),
  STALE (the reference's baseline no longer describes it: refused before training, never
  reported as a regression), MISSING, INVALID (a baseline that cannot be used, or values that
  are undefined; never a bare traceback), UPDATED;
- a missing, stale, invalid or regressed check writes ``<family>.obtained.json`` beside the
  baseline, so accepting a result is a rename or a rerun with ``--seedstab-update-baselines``;
- ``--seedstab-update-baselines`` rewrites the *reference's* baseline (trained or loaded, then
  analysed) and then still compares the candidate against it: a changed family is never
  accepted without being compared. To accept an intended change, make it the reference.
  The plugin never deletes a file;
- a stale baseline *fails* (it does not xfail): a green run must mean the stability was
  checked, and an xfail hides that nothing was;
- "unused baselines" are listed only after a full run (see :mod:`harness.pytest_summary`).
  Under xdist the workers report what they deselected and each test's baseline path travels
  in ``user_properties``, so the list is computed on the controller. The same properties
  (``seedstab_status``, ``seedstab_baseline``, ``seedstab_written``, ``seedstab_report``)
  appear in ``--junitxml`` output;
- a project sets the store, the baselines folder and the MLflow URI once, as ini keys
  (``seedstab_store``, ``seedstab_baselines_dir``, ``seedstab_mlflow_uri`` under
  ``[tool.pytest.ini_options]``; relative paths are relative to the ini file); the command
  line wins over the environment (``$SEEDSTAB_STORE``, ``$MLFLOW_TRACKING_URI``), which wins
  over the ini file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.pytest_summary import SummaryHooks

# Spelled out rather than imported (harness.stats.CI_METHODS; a test keeps them equal) so that
# loading the plugin imports neither scipy nor numpy.
CI_METHODS = ("jackknife-t", "multi-bootstrap")
PROGRESS_MODES = ("auto", "bar", "lines", "off")
EXECUTORS = ("local", "ray")
UPDATE_FLAG = "--seedstab-update-baselines"
GPU_MARKER = "seedstab_gpu"

if TYPE_CHECKING:
    from harness.baseline_fixture import StabilityBaseline

__all__ = ["SeedstabOptions", "update_command"]

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def update_command(nodeid: str) -> str:
    """The command that rewrites the baseline behind test ``nodeid``."""
    return f"pytest {shlex.quote(nodeid)} {UPDATE_FLAG}"


# ----------------------------------------------------------------------------- options


def _device(value: str) -> str:
    if not _DEVICE_RE.match(value):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, mps, cuda or cuda:N, got {value!r}")
    return value


def _offset(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value!r}")
    return n


def _positive(value: str) -> int:
    n = _offset(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _pack(value: str) -> int | None:
    """``auto`` (None: the harness decides) or a positive number of seeds trained together."""
    if value == "auto":
        return None
    try:
        return _positive(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto or a positive integer, got {value!r}") from None


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("seedstab", "seed stability of transformer internals")
    g.addoption(UPDATE_FLAG, action="store_true", default=False,
                help="(re)write the stability baselines of the tests that run, then compare against them")
    g.addoption("--seedstab-baselines-dir", metavar="DIR", default=None,
                help="root of the stored baselines (default: ini seedstab_baselines_dir, else "
                     "<rootdir>/baselines)")
    g.addoption("--seedstab-device", type=_device, default="auto",
                help="device to train and analyse on: auto (CUDA when present), cpu, mps, cuda, cuda:N")
    g.addoption("--seedstab-require-gpu", action="store_true", default=False,
                help=f"a test marked {GPU_MARKER} fails (instead of skipping) when no CUDA device is present")
    g.addoption("--seedstab-mlflow-uri", metavar="URI", default=None,
                help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ini seedstab_mlflow_uri, "
                     "else sqlite:///mlflow.db)")
    g.addoption("--seedstab-no-mlflow", action="store_true", default=False, help="do not log to MLflow")
    g.addoption("--seedstab-store", metavar="DIR", default=None,
                help="artifact store of trained seeds (default: $SEEDSTAB_STORE, else ini "
                     "seedstab_store, else .seedstab/store)")
    g.addoption("--seedstab-seed", metavar="N", type=_offset, default=None,
                help="offset added to every family's seeds, to draw fresh seeds")
    g.addoption("--seedstab-n-boot", metavar="N", type=_positive, default=1000,
                help="bootstrap resamples (comparisons; multi-bootstrap CIs) (default 1000)")
    g.addoption("--seedstab-ci-method", choices=CI_METHODS, default="jackknife-t",
                help="confidence intervals over seeds: jackknife-t (default) or the percentile Multi-Bootstrap")
    g.addoption("--seedstab-inconclusive", choices=("fail", "pass"), default=None,
                help="whether a check worse than its tolerance but not significant fails (default: "
                     "the check's `inconclusive:`, else pass)")
    g.addoption("--seedstab-summary", metavar="PATH", default=None,
                help="write a Markdown table of the verdicts to PATH (e.g. $GITHUB_STEP_SUMMARY)")
    g.addoption("--seedstab-progress", choices=PROGRESS_MODES, default="auto",
                help="training progress on stderr, shown live through pytest's capture: bar, lines "
                     "(a plain line every ~10 %%, for CI logs), off; auto (default): bars on a "
                     "terminal, lines otherwise and under xdist")
    g.addoption("--seedstab-pack", metavar="N", type=_pack, default=None,
                help="seeds of a family trained together in one batched model (default: auto)")
    g.addoption("--seedstab-executor", choices=EXECUTORS, default="local",
                help="where seeds train: local (this process, default) or ray (a Ray cluster)")
    g.addoption("--seedstab-ray-address", metavar="ADDR", default=None,
                help="the Ray cluster for --seedstab-executor ray (default: $RAY_ADDRESS, else a "
                     "local Ray)")
    for name, what in (("seedstab_store", "artifact store of trained seeds (relative to the ini file)"),
                       ("seedstab_baselines_dir", "root of the stored baselines (relative to the ini file)"),
                       ("seedstab_mlflow_uri", "MLflow tracking URI")):
        parser.addini(name, what, default="")


@dataclass(frozen=True)
class SeedstabOptions:
    """The plugin's options, resolved (paths absolute; ``store`` None: the default store)."""

    update_baselines: bool
    baselines_dir: Path
    device: str
    require_gpu: bool
    mlflow_uri: str | None
    no_mlflow: bool
    store: Path | None
    seed_offset: int | None
    inconclusive: str | None = None
    n_boot: int = 1000
    ci_method: str = "jackknife-t"
    progress: str = "auto"
    pack: int | None = None
    executor: str = "local"
    ray_address: str | None = None


def _ini_path(config: pytest.Config, name: str) -> Path | None:
    value = str(config.getini(name) or "").strip()
    if not value:
        return None
    base = config.inipath.parent if config.inipath else Path(config.rootpath)
    return (base / value).resolve()


def _options(config: pytest.Config) -> SeedstabOptions:
    here = Path(config.invocation_params.dir)
    bdir = config.getoption("seedstab_baselines_dir")
    store = config.getoption("seedstab_store") or os.environ.get("SEEDSTAB_STORE")
    uri = config.getoption("seedstab_mlflow_uri")
    if uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        uri = str(config.getini("seedstab_mlflow_uri") or "").strip() or None
    return SeedstabOptions(
        update_baselines=bool(config.getoption("seedstab_update_baselines")),
        baselines_dir=((here / bdir).resolve() if bdir else _ini_path(config, "seedstab_baselines_dir")
                       or Path(config.rootpath) / "baselines"),
        device=config.getoption("seedstab_device"),
        require_gpu=bool(config.getoption("seedstab_require_gpu")),
        mlflow_uri=uri, no_mlflow=bool(config.getoption("seedstab_no_mlflow")),
        store=(here / store).resolve() if store else _ini_path(config, "seedstab_store"),
        seed_offset=config.getoption("seedstab_seed"),
        inconclusive=config.getoption("seedstab_inconclusive"),
        n_boot=config.getoption("seedstab_n_boot"), ci_method=config.getoption("seedstab_ci_method"),
        progress=config.getoption("seedstab_progress"), pack=config.getoption("seedstab_pack"),
        executor=config.getoption("seedstab_executor"),
        ray_address=config.getoption("seedstab_ray_address") or os.environ.get("RAY_ADDRESS") or None)


def _ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _check_options(config: pytest.Config, opts: SeedstabOptions) -> None:
    """Contradictory options are a usage error, before anything runs."""
    if opts.require_gpu and opts.device in ("cpu", "mps"):
        raise pytest.UsageError(f"--seedstab-require-gpu contradicts --seedstab-device {opts.device}; "
                                "drop one")
    if opts.no_mlflow and config.getoption("seedstab_mlflow_uri"):
        raise pytest.UsageError("--seedstab-no-mlflow contradicts --seedstab-mlflow-uri; drop one")
    if config.getoption("seedstab_ray_address") and opts.executor != "ray":
        raise pytest.UsageError("--seedstab-ray-address is for --seedstab-executor ray; add it or "
                                "drop the address")
    if opts.executor == "ray" and not _ray_installed():
        raise pytest.UsageError("--seedstab-executor ray: the ray package is not installed "
                                "(pip install ray), or use --seedstab-executor local")


# ----------------------------------------------------------------------------- live output


class _NewlineFirst:
    """A stream that calls ``before()`` once, just before the first write: progress starts on
    a line of its own instead of after pytest's dots, and a family loaded from the store
    (which writes nothing) leaves pytest's line alone."""

    def __init__(self, stream: Any, before: Callable[[], None]) -> None:
        self._stream, self._before = stream, before

    def write(self, text: str) -> int:
        if self._before is not None and text:
            before, self._before = self._before, None
            before()
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # isatty, flush, fileno, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def live_stderr(config: pytest.Config) -> Iterator[None]:
    """pytest's capture suspended, so that what is written to stderr (training progress)
    reaches the terminal or CI log as it happens. Under xdist, a worker's stderr is the
    controller's, and the worker's own terminal reporter writes nowhere."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    tr = config.pluginmanager.getplugin("terminalreporter")
    with capman.global_and_fixture_disabled():
        if tr is None or hasattr(config, "workerinput"):
            yield
            return
        real = sys.stderr

        def newline() -> None:
            tr.ensure_newline()
            tr.flush()  # pytest's stdout before our stderr

        sys.stderr = _NewlineFirst(real, newline)
        try:
            yield
        finally:
            sys.stderr = real


# ----------------------------------------------------------------------------- session state


@dataclass
class _State:
    options: SeedstabOptions
    claimed: dict[str, str] = field(default_factory=dict)  # baseline path -> nodeid (this process)


_STATE = pytest.StashKey[_State]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{GPU_MARKER}: needs a CUDA device (skipped without one "
                                       "unless --seedstab-require-gpu)")
    config.addinivalue_line("markers", "slow: end-to-end work that trains real families "
                                       "(deselect with -m 'not slow')")
    # MLflow 3.17's sqlite store trips a SQLAlchemy deprecation on every run; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:.*noload.*loader strategy:DeprecationWarning")
    opts = _options(config)
    _check_options(config, opts)
    state = _State(options=opts)
    config.stash[_STATE] = state
    config.pluginmanager.register(SummaryHooks(config, opts.baselines_dir), "seedstab-session")
    from harness.session import SessionHooks

    config.pluginmanager.register(SessionHooks(config, opts), "seedstab-families")


def pytest_unconfigure(config: pytest.Config) -> None:
    hooks = config.pluginmanager.get_plugin("seedstab-families")
    if hooks is not None:
        hooks.session.close()


@pytest.fixture(scope="session")
def seedstab_options(pytestconfig: pytest.Config) -> SeedstabOptions:
    """The resolved seedstab options."""
    return pytestconfig.stash[_STATE].options


# ----------------------------------------------------------------------------- gpu marker


def _cuda_available() -> bool:
    try:
        import torch  # lazily: only when a seedstab_gpu test is about to run
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(GPU_MARKER) is None:
        return
    opts = item.config.stash[_STATE].options
    if opts.device in ("cpu", "mps"):
        pytest.skip(f"needs a CUDA device; --seedstab-device {opts.device} was given")
    if not _cuda_available():
        if opts.require_gpu:
            pytest.fail(f"marked {GPU_MARKER} and --seedstab-require-gpu was given, but torch sees no "
                        "CUDA device (is this the GPU runner? is the CUDA build of torch installed?)",
                        pytrace=False)
        pytest.skip("needs a CUDA device (torch sees none); --seedstab-require-gpu makes this a failure")


# ----------------------------------------------------------------------------- YAML checks


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Suite files with a ``checks:`` section run their checks as test items."""
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    from harness.pytest_checks import CheckFile, is_check_file

    if is_check_file(file_path):
        return CheckFile.from_parent(parent, path=file_path)
    return None


# ----------------------------------------------------------------------------- the fixtures


@pytest.fixture
def seedstab(request: pytest.FixtureRequest):
    """Families and analyses of this session, trained or loaded once and shared:
    ``seedstab.analysis("suites/x.yaml", "adam")``; every family a test touches is logged to
    MLflow with the test's outcome (see harness.session)."""
    return request.config.pluginmanager.get_plugin("seedstab-families").view(request.node)


@pytest.fixture
def stability_baseline(request: pytest.FixtureRequest) -> "StabilityBaseline":
    """Compare a test's stability measurements with its stored baseline:
    ``stability_baseline.check(analyses, metrics=[...], tolerance=..., alpha=..., suite=...)``."""
    from harness.baseline_fixture import StabilityBaseline

    state = request.config.stash[_STATE]
    hooks = request.config.pluginmanager.get_plugin("seedstab-families")
    return StabilityBaseline(request.node, baselines_dir=state.options.baselines_dir,
                             update=state.options.update_baselines, claimed=state.claimed,
                             analysis_options=hooks.options_record(),
                             inconclusive=state.options.inconclusive)
