"""The seedstab pytest plugin: options, markers and the ``stability_baseline`` fixture.

Loaded through the ``pytest11`` entry point ``seedstab`` once the package is installed; from a
source checkout, ``pytest -p harness.plugin``. Both at once would register the module twice
(pluggy refuses that), so code that must work either way (e.g. pytester tests) passes
``-p no:seedstab -p harness.plugin``: the first blocks the entry point, the second loads it.

The gate lives in :mod:`harness.gate` (what is decided before training, in which order) and
:mod:`harness.verdict` (the pure policy); this module registers options, collects YAML
``checks:`` (:mod:`harness.pytest_checks`) and talks to people. Choices:

- every check ends in one status, shown in its failure message and the terminal summary:
  PASS, REGRESSED (worse beyond the tolerance and significant over the whole check),
  INCONCLUSIVE (worse beyond the tolerance but not significant; passes with a warning by
  default, fails with ``--seedstab-inconclusive fail`` or ``inconclusive: fail`` in YAML),
  UNDERPOWERED (the check could never fail at its seed counts: refused before training),
  STALE (the reference's baseline no longer describes it: refused before training, never
  reported as a regression), MISSING, INVALID (a baseline that cannot be used, or values that
  are undefined; never a bare traceback), UPDATED;
- a missing, stale, invalid or regressed check writes ``<family>.obtained.json`` beside the
  baseline, so accepting a result is a rename or a rerun with ``--update-baselines``;
- ``--update-baselines`` rewrites the *reference's* baseline (trained or loaded, then
  analysed) and then still compares the candidate against it: a changed family is never
  accepted without being compared. To accept an intended change, make it the reference.
  The plugin never deletes a file;
- a stale baseline *fails* (it does not xfail): a green run must mean the stability was
  checked, and an xfail hides that nothing was;
- "unused baselines" are listed only after a full run: no test deselected (-k, -m,
  --deselect, --lf, ...), no node id or file given on the command line, not stopped early
  (-x, interrupt). Only device classes that some test used are scanned (a CPU run does
  not list the GPU baselines). Under xdist the workers report what they deselected and
  each test's baseline path travels in ``user_properties``, so the list is computed on the
  controller. The same properties (``seedstab_status``, ``seedstab_baseline``,
  ``seedstab_written``, ``seedstab_report``) appear in ``--junitxml`` output.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pytest

# Spelled out rather than imported (harness.stats.CI_METHODS, harness.baselines.OBTAINED_SUFFIX;
# a test keeps them equal) so that loading the plugin imports neither scipy nor numpy: it is
# registered in every pytest run of the environment, seedstab's or not.
CI_METHODS = ("jackknife-t", "multi-bootstrap")
OBTAINED_SUFFIX = ".obtained.json"

if TYPE_CHECKING:
    from harness.baseline_fixture import StabilityBaseline

__all__ = ["SeedstabOptions"]

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_P_STATUS, _P_BASELINE, _P_WRITTEN = "seedstab_status", "seedstab_baseline", "seedstab_written"


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


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("seedstab", "seed stability of transformer internals")
    g.addoption("--update-baselines", action="store_true", default=False,
                help="(re)write the stability baselines of the tests that run, instead of "
                     "comparing against them")
    g.addoption("--baselines-dir", metavar="DIR", default=None,
                help="root of the stored baselines (default: <rootdir>/baselines)")
    g.addoption("--device", type=_device, default="auto",
                help="device to train and analyse on: auto (CUDA when present), cpu, cuda, cuda:N")
    g.addoption("--require-gpu", action="store_true", default=False,
                help="a test marked gpu fails (instead of skipping) when no CUDA device is present")
    g.addoption("--mlflow-uri", metavar="URI", default=None,
                help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    g.addoption("--no-mlflow", action="store_true", default=False, help="do not log to MLflow")
    g.addoption("--store", metavar="DIR", default=None,
                help="artifact store of trained seeds (default: the harness's)")
    g.addoption("--seedstab-seed", metavar="N", type=_offset, default=None,
                help="offset added to every family's seeds, to draw fresh seeds")
    g.addoption("--n-boot", metavar="N", type=_positive, default=1000,
                help="bootstrap resamples (comparisons; multi-bootstrap CIs) (default 1000)")
    g.addoption("--ci-method", choices=CI_METHODS, default="jackknife-t",
                help="confidence intervals over seeds: jackknife-t (default) or the percentile Multi-Bootstrap")
    g.addoption("--seedstab-inconclusive", choices=("fail", "pass"), default=None,
                help="whether a check worse than its tolerance but not significant fails (default: "
                     "the check's `inconclusive:`, else fail)")
    g.addoption("--seedstab-summary", metavar="PATH", default=None,
                help="write a Markdown table of the verdicts to PATH (e.g. for $GITHUB_STEP_SUMMARY)")


@dataclass(frozen=True)
class SeedstabOptions:
    """The plugin's command-line options, resolved (paths absolute)."""

    update_baselines: bool
    baselines_dir: Path
    device: str
    require_gpu: bool
    mlflow_uri: str | None
    no_mlflow: bool
    store: Path | None
    seed_offset: int | None
    inconclusive: str | None = None


def _options(config: pytest.Config) -> SeedstabOptions:
    here = Path(config.invocation_params.dir)
    bdir = config.getoption("baselines_dir")
    store = config.getoption("store")
    return SeedstabOptions(
        update_baselines=bool(config.getoption("update_baselines")),
        baselines_dir=(here / bdir).resolve() if bdir else Path(config.rootpath) / "baselines",
        device=config.getoption("device"), require_gpu=bool(config.getoption("require_gpu")),
        mlflow_uri=config.getoption("mlflow_uri"), no_mlflow=bool(config.getoption("no_mlflow")),
        store=(here / store).resolve() if store else None,
        seed_offset=config.getoption("seedstab_seed"),
        inconclusive=config.getoption("seedstab_inconclusive"))


# ----------------------------------------------------------------------------- session state


@dataclass
class _Record:
    status: str = ""
    baselines: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)


@dataclass
class _State:
    options: SeedstabOptions
    claimed: dict[str, str] = field(default_factory=dict)  # baseline path -> nodeid (this process)
    records: dict[str, _Record] = field(default_factory=dict)  # nodeid -> what reports said
    deselected: int = 0
    failures: int = 0


_STATE = pytest.StashKey[_State]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one unless "
                                       "--require-gpu)")
    config.addinivalue_line("markers", "slow: end-to-end work that trains real families "
                                       "(deselect with -m 'not slow')")
    # MLflow 3.17's sqlite store trips a SQLAlchemy deprecation on every run; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:.*noload.*loader strategy:DeprecationWarning")
    opts = _options(config)
    if opts.require_gpu and opts.device in ("cpu", "mps"):
        raise pytest.UsageError(f"--require-gpu contradicts --device {opts.device}; drop one")
    if opts.no_mlflow and opts.mlflow_uri:
        raise pytest.UsageError("--no-mlflow contradicts --mlflow-uri; drop one")
    state = _State(options=opts)
    config.stash[_STATE] = state
    config.pluginmanager.register(_SessionHooks(config, state), "seedstab-session")
    from harness.session import SessionHooks

    config.pluginmanager.register(SessionHooks(config, opts), "seedstab-families")


@pytest.fixture(scope="session")
def seedstab_options(pytestconfig: pytest.Config) -> SeedstabOptions:
    """The resolved seedstab command-line options."""
    return pytestconfig.stash[_STATE].options


# ----------------------------------------------------------------------------- gpu marker


def _cuda_available() -> bool:
    try:
        import torch  # lazily: only when a gpu-marked test is about to run
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is None:
        return
    opts = item.config.stash[_STATE].options
    if opts.device in ("cpu", "mps"):
        pytest.skip(f"needs a CUDA device; --device {opts.device} was given")
    if not _cuda_available():
        if opts.require_gpu:
            pytest.fail("marked gpu and --require-gpu was given, but torch sees no CUDA device "
                        "(is this the GPU runner? is the CUDA build of torch installed?)",
                        pytrace=False)
        pytest.skip("needs a CUDA device (torch sees none); --require-gpu makes this a failure")


# ----------------------------------------------------------------------------- session report


def _rel(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _unused(opts: SeedstabOptions, used: set[Path]) -> tuple[list[Path], list[str]]:
    """Baseline files under the baselines dir that no test used, in the device classes some
    test used; and the other device classes present (not scanned)."""
    root = opts.baselines_dir.resolve()
    classes = {p.relative_to(root).parts[0] for p in used if p.is_relative_to(root)}
    unused: list[Path] = []
    other: set[str] = set()
    for p in sorted(root.glob("*/*/*.json")) if root.is_dir() else []:
        if p.name.endswith(OBTAINED_SUFFIX) or p.resolve() in used:
            continue
        cls = p.relative_to(root).parts[0]
        if cls in classes:
            unused.append(p)
        else:
            other.add(cls)
    return unused, sorted(other)


class _SessionHooks:
    """Per-run hooks (one instance per pytest config). Everything it reports reaches it through
    test reports (``user_properties``) and, under xdist, the workers' ``workeroutput``, so it
    works the same on a single process and on the xdist controller."""

    def __init__(self, config: pytest.Config, state: _State) -> None:
        self.config, self.state = config, state

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.state.deselected += len(items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.state.failures += 1
        props = [(k, v) for k, v in report.user_properties if str(k).startswith("seedstab_")]
        if not props:
            return
        rec = _Record()
        for k, v in props:
            if k == _P_STATUS:
                rec.status = str(v)
            elif k == _P_BASELINE:
                rec.baselines.append(str(v))
            elif k == _P_WRITTEN:
                rec.written.append(str(v))
        self.state.records[report.nodeid] = rec  # later phases carry all earlier properties

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):  # an xdist worker: tell the controller
            self.config.workeroutput["seedstab_deselected"] = self.state.deselected

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", None) or {}
        self.state.deselected += int(out.get("seedstab_deselected", 0))

    def _full_run(self, exitstatus: int) -> tuple[bool, str]:
        """Whether every test ran (so an unused baseline is really unused); if not, why."""
        config, state = self.config, self.state
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            return False, "the run was interrupted"
        if state.deselected:
            return False, "some tests were deselected (-k, -m, --deselect, --lf, ...)"
        if config.getoption("maxfail", 0) and state.failures:
            return False, "the run stopped at the first failure(s) (-x / --maxfail)"
        if config.getoption("ignore", None) or config.getoption("ignore_glob", None):
            return False, "paths were ignored (--ignore)"
        if config.args_source == pytest.Config.ArgsSource.ARGS:
            here = Path(config.invocation_params.dir)
            for arg in config.args:
                if "::" in arg or (here / arg).is_file():
                    return False, f"tests were selected by file or node id ({arg})"
        return True, ""

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput") or not self.state.records:
            return
        tr, root = terminalreporter, Path(self.config.rootpath)
        tr.write_sep("=", "seedstab")
        width = max([9, *(len(r.status or "error") for r in self.state.records.values())])
        for nodeid, rec in sorted(self.state.records.items()):
            status = (rec.status or "error").upper()
            line = f"{status:<{width}} {nodeid}"
            if rec.written:
                line += "  wrote " + ", ".join(_rel(w, root) for w in rec.written)
            elif rec.baselines:
                line += "  " + ", ".join(_rel(b, root) for b in rec.baselines)
            tr.write_line(line, red=status not in ("PASS", "UPDATED"), green=status == "PASS")
        full, why = self._full_run(exitstatus)
        if not full:
            tr.write_line(f"unused baselines: not checked, {why}")
            return
        used = {Path(b).resolve() for rec in self.state.records.values() for b in rec.baselines}
        unused, other = _unused(self.state.options, used)
        if unused:
            tr.write_line("unused baselines (no test used them in this run; nothing was deleted):",
                          yellow=True)
            for p in unused:
                tr.write_line(f"  {_rel(p, root)}")
        else:
            tr.write_line("unused baselines: none")
        if other:
            tr.write_line(f"(baselines of other device classes, not checked: {', '.join(other)})")


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
