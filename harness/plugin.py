"""The seedstab pytest plugin: options, markers and the ``stability_baseline`` fixture.

Loaded through the ``pytest11`` entry point ``seedstab`` once the package is installed; from a
source checkout, ``pytest -p harness.plugin``. Both at once would register the module twice
(pluggy refuses that), so code that must work either way (e.g. pytester tests) passes
``-p no:seedstab -p harness.plugin``: the first blocks the entry point, the second loads it.

The algorithm lives in :mod:`harness.baselines` and :mod:`harness.verdict`; this module only
decides pass / fail and talks to people. Choices:

- a missing baseline fails and writes ``<test>.obtained.json`` where the baseline belongs;
  a *stale* one (header no longer matches) and a regressed one fail too and write it;
- a stale baseline *fails* (it does not xfail): a green run must mean the stability was
  checked, and an xfail hides that nothing was. Its message and the terminal summary say
  STALE, never REGRESSED;
- a baseline that cannot be used fails as INVALID (never a bare traceback), naming the file
  and the problem, and writes ``<test>.obtained.json``: one that does not parse or is
  inconsistent in itself (:func:`~harness.baselines.read_baseline`), and one that parses but
  cannot be compared with this run (a metric's direction flipped, a layer count cut by hand);
- ``--update-baselines`` rewrites the baselines of the tests that ran (status "updated");
  the plugin never deletes a file;
- "unused baselines" are listed only after a full run: no test deselected (-k, -m,
  --deselect, --lf, ...), no node id or file given on the command line, not stopped early
  (-x, interrupt). Only device classes that some test used are scanned (a CPU run does
  not list the GPU baselines). Under xdist the workers report what they deselected and
  each test's baseline path travels in ``user_properties``, so the list is computed on the
  controller. The same properties (``seedstab_status``, ``seedstab_baseline``,
  ``seedstab_written``) appear in ``--junitxml`` output.
"""

from __future__ import annotations

import argparse
import re
import shlex
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import numpy as np
import pytest

from harness.baselines import (OBTAINED_SUFFIX, BaselineError, baseline_path, header_notes,
                               make_header, obtained_path, read_baseline, stale_reasons,
                               write_baseline)
from harness.results import Analysis, Measurement
from harness.stats import CI_METHODS
from harness.verdict import Row, Verdict, check_parameters, compare, format_report, power_note

__all__ = ["SeedstabOptions", "StabilityBaseline"]

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
        seed_offset=config.getoption("seedstab_seed"))


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
        for nodeid, rec in sorted(self.state.records.items()):
            status = (rec.status or "error").upper()
            line = f"{status:<9} {nodeid}"
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


# ----------------------------------------------------------------------------- the fixture


def _as_mapping(analyses: Mapping[str, Analysis] | Analysis) -> dict[str, Analysis]:
    if isinstance(analyses, Analysis):
        return {analyses.family: analyses}
    if isinstance(analyses, Mapping) and analyses and \
            all(isinstance(a, Analysis) for a in analyses.values()):
        return dict(analyses)
    raise TypeError("analyses: expected an Analysis or a non-empty mapping of family name -> "
                    f"Analysis, got {type(analyses).__name__}")


def _select(analyses: Mapping[str, Analysis],
            metrics: Sequence[str]) -> dict[str, dict[str, Measurement]]:
    """family -> metric -> Measurement. ``"metric"`` is taken from every family,
    ``"family:metric"`` from that family only."""
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics: expected a non-empty list of metric names, got {metrics!r}")
    out: dict[str, dict[str, Measurement]] = {fam: {} for fam in analyses}
    for spec in metrics:
        fam, _, metric = spec.rpartition(":")
        fams = [fam] if fam else list(analyses)
        if fam and fam not in analyses:
            raise ValueError(f"metrics: {spec!r} names family {fam!r}, but the analyses are of "
                             f"{', '.join(sorted(analyses))}")
        for f in fams:
            out[f][metric] = analyses[f][metric]  # KeyError lists what the analysis has
    return {f: ms for f, ms in out.items() if ms}


def _tolerance_of(tolerance: float | Mapping[str, float], metric: str, label: str) -> float:
    if isinstance(tolerance, Mapping):
        for key in (label, metric):
            if key in tolerance:
                return tolerance[key]
        raise ValueError(f"tolerance: no entry for metric {label!r}; it has "
                         f"{', '.join(sorted(tolerance)) or 'none'}")
    return tolerance


class StabilityBaseline:
    """What the ``stability_baseline`` fixture returns; see :meth:`check`."""

    def __init__(self, node: pytest.Item, state: _State) -> None:
        self._node, self._state = node, state

    @property
    def update_command(self) -> str:
        return f"pytest {shlex.quote(self._node.nodeid)} --update-baselines"

    def path_for(self, *, device_class: str, suite: str) -> Path:
        """Where this test's baseline for ``device_class`` and ``suite`` lives."""
        return baseline_path(self._state.options.baselines_dir, device_class=device_class,
                             suite=suite, test=self._node.name)

    def _claim(self, path: Path) -> None:
        key, nodeid = str(path.resolve()), self._node.nodeid
        other = self._state.claimed.setdefault(key, nodeid)
        if other != nodeid:
            raise ValueError(f"{path}: tests {other} and {nodeid} map to the same baseline file; "
                             "rename one of them or give it another suite")

    def _record(self, status: str, written: Sequence[Path] = ()) -> None:
        props = self._node.user_properties
        props.append((_P_STATUS, status))
        props.extend((_P_WRITTEN, str(w)) for w in written)

    def _fail(self, verdict: Verdict, seeds_baseline: Any, seeds: Any, mlflow_run: str | None,
              extra: Sequence[str] = ()) -> NoReturn:
        __tracebackhide__ = True
        report = format_report(verdict, seeds_baseline=seeds_baseline, seeds_candidate=seeds,
                               update_command=self.update_command, mlflow_run=mlflow_run)
        pytest.fail("\n".join([report, *extra]), pytrace=False)

    def _invalid(self, path: Path, message: str, *, header: Mapping[str, Any],
                 measurements: Mapping[str, Mapping[str, Measurement]]) -> NoReturn:
        """Fail for a baseline that cannot be used (``message`` names the file and the
        problem), after writing this run's result beside it."""
        __tracebackhide__ = True
        obtained = obtained_path(path)
        write_baseline(obtained, header=header, measurements=measurements)
        self._record("invalid", [obtained])
        # raised, not pytest.fail(): called from an except block, and "from None" keeps the
        # report to this message instead of printing the caught error above it a second time
        raise pytest.fail.Exception(f"seedstab: INVALID baseline {message}\nthis run's result is "
                                    f"in {obtained}\nto rewrite the baseline: "
                                    f"{self.update_command}", pytrace=False) from None

    def check(self, analyses: Mapping[str, Analysis] | Analysis, *, metrics: Sequence[str],
              tolerance: float | Mapping[str, float], alpha: float, suite: str,
              mlflow_run: str | None = None, n_perm: int = 2000) -> Verdict:
        """Compare ``metrics`` of ``analyses`` with this test's stored baseline.

        ``metrics``: names taken from every family, or ``"family:metric"``. ``tolerance``:
        absolute, one number or per metric name. Returns the Verdict when the check passes
        (or the baseline was written by ``--update-baselines``); fails the test with a report
        when the baseline is missing, stale, unreadable or regressed.
        """
        __tracebackhide__ = True
        fams = _as_mapping(analyses)
        selected = _select(fams, metrics)
        tolerances: dict[tuple[str, str], float] = {}
        for fam, ms in selected.items():  # checked up front: --update-baselines uses neither
            for metric, m in ms.items():
                label = metric if len(fams) == 1 else f"{fam}:{metric}"
                tolerances[fam, metric] = _tolerance_of(tolerance, metric, label)
                check_parameters(tolerances[fam, metric], alpha, n_perm)
                if np.ndim(m.value) > 1:  # compare() would refuse it; not the baseline's fault
                    raise ValueError(f"metrics: {label} has shape {np.shape(m.value)}; a baseline "
                                     "check tests scalars and per-layer [L] values, reduce "
                                     "per-head values to layers first")
        header = make_header(fams)
        path = self.path_for(device_class=header["device_class"], suite=suite)
        self._claim(path)
        self._node.user_properties.append((_P_BASELINE, str(path)))
        seeds = {f: list(a.seeds) for f, a in fams.items()}
        # A check that can never fail is a defect: refuse it up front, with the way out.
        weak = [f"{fam}:{metric}: {note}" for fam, ms in selected.items() for metric, m in ms.items()
                if (note := power_note(m.unit_values().shape[0], m.unit_values().shape[0],
                                       n_layers=int(np.size(m.value)), alpha=alpha, n_perm=n_perm))]
        if weak:
            self._record("underpowered")
            pytest.fail("seedstab: UNDERPOWERED: this baseline check could never detect a regression\n"
                        + "\n".join(weak), pytrace=False)
        if self._state.options.update_baselines:
            write_baseline(path, header=header, measurements=selected)
            self._record("updated", [path])
            return Verdict("updated", baseline_path=str(path), written=(str(path),))

        obtained = obtained_path(path)
        if not path.exists():
            write_baseline(obtained, header=header, measurements=selected)
            self._record("missing", [obtained])
            self._fail(Verdict("missing", baseline_path=str(path), written=(str(obtained),)),
                       None, seeds, mlflow_run,
                       [f"to accept the obtained result, rename it: mv {shlex.quote(str(obtained))} "
                        f"{shlex.quote(str(path))}"])
        try:
            stored = read_baseline(path)
        except BaselineError as e:  # its message starts with the path
            self._invalid(path, str(e), header=header, measurements=selected)

        reasons = stale_reasons(stored.header, header)
        if not reasons:
            for fam, ms in selected.items():
                reasons += [f"measurement {m} of family {fam} is not in the baseline"
                            for m in ms if m not in stored.measurements.get(fam, {})]
        if reasons:
            write_baseline(obtained, header=header, measurements=selected)
            self._record("stale", [obtained])
            self._fail(Verdict("stale", stale_reasons=reasons, baseline_path=str(path),
                               written=(str(obtained),)), stored.header.get("seeds"), seeds,
                       mlflow_run)

        generator = np.random.default_rng(zlib.crc32(self._node.nodeid.encode()))
        rows: list[Row] = []
        notes = header_notes(stored.header, header)
        for fam, ms in selected.items():
            for metric, cand in ms.items():
                label = metric if len(fams) == 1 else f"{fam}:{metric}"
                base = stored.measurements[fam][metric]
                # The run's side was checked above (parameters, seed-level values, shape), so
                # what compare() still refuses is the stored side: a hand edit read_baseline
                # cannot see alone (direction flipped, layers cut) or a file from another model.
                try:
                    new = compare(base, cand, tolerance=tolerances[fam, metric],
                                  alpha=alpha, generator=generator, n_perm=n_perm, label=label)
                    n_base = base.unit_values().shape[0]
                except ValueError as e:
                    self._invalid(path, f"{path}: {e}", header=header, measurements=selected)
                rows += new
                note = power_note(n_base, cand.unit_values().shape[0],
                                  n_layers=len(new), alpha=alpha, n_perm=n_perm)
                if note:  # the baseline has fewer seeds than this run
                    self._record("underpowered")
                    pytest.fail(f"seedstab: UNDERPOWERED: {label}: {note}\nbaseline: {path}", pytrace=False)
            unchecked = sorted(set(stored.measurements.get(fam, {})) - set(ms))
            if unchecked:
                notes.append(f"family {fam}: in the baseline but not checked: {', '.join(unchecked)}")
        if any(r.regressed for r in rows):
            write_baseline(obtained, header=header, measurements=selected)
            self._record("regressed", [obtained])
            self._fail(Verdict("regressed", rows=rows, notes=notes, baseline_path=str(path),
                               written=(str(obtained),)), stored.header.get("seeds"), seeds,
                       mlflow_run)
        self._record("pass")
        return Verdict("pass", rows=rows, notes=notes, baseline_path=str(path))


@pytest.fixture
def seedstab(request: pytest.FixtureRequest):
    """Families and analyses of this session, trained or loaded once and shared:
    ``seedstab.analysis("suites/x.yaml", "adam")``; every family a test touches is logged to
    MLflow with the test's outcome (see harness.session)."""
    return request.config.pluginmanager.get_plugin("seedstab-families").view(request.node)


@pytest.fixture
def stability_baseline(request: pytest.FixtureRequest) -> StabilityBaseline:
    """Compare a test's stability measurements with its stored baseline:
    ``stability_baseline.check(analyses, metrics=[...], tolerance=..., alpha=..., suite=...)``."""
    return StabilityBaseline(request.node, request.config.stash[_STATE])
