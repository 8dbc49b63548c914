"""One pytest session's families and analyses, computed once and shared by every test.

The pytest plugin registers one :class:`SessionHooks` per run. Suites reach it through the
``seedstab`` fixture, a per-test :class:`TestView` that records which families the test
looked at. After each test, the families it touched are logged to MLflow by
:class:`harness.session_tracking.TrackingHooks` (one run per family per session, named
``<suite>/<family>``, each test's verdict added to it), and the run ids are added to the
test's report. A ``--seedstab-summary`` file gets a Markdown table of all
verdicts. Families are trained or loaded through the store (a second session trains
nothing); analyses are cached per (file, family) for the whole session.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from typing import TYPE_CHECKING

from harness.config import ConfigError, FamilyConfig, Suite, load_suite

if TYPE_CHECKING:  # torch and scipy load only when a test asks for a family
    from harness.analysis import AnalysisOptions
    from harness.family import Family
    from harness.results import Analysis

# harness.family.DEFAULT_STORE, spelled out so configuring pytest imports no torch
DEFAULT_STORE = Path(".seedstab") / "store"

log = logging.getLogger(__name__)

_TOUCHED = pytest.StashKey[list]()
_P_RUN = "mlflow_run"  # harness.session_tracking.P_RUN, spelled out: importing it here costs nothing either


@dataclass
class StabilitySession:
    """Families and analyses by (suite file, family name), computed at most once."""

    store: Path = DEFAULT_STORE
    device: str | None = None
    n_boot: int = 1000
    ci_method: str = "jackknife-t"
    seed_offset: int | None = None
    progress: str = "auto"  # harness.family.obtain_family's modes: auto, bar, lines, off
    pack: int | None = None  # seeds trained together (None: the harness decides)
    executor: str = "local"  # harness.executors.make_executor's names
    ray_address: str | None = None
    _executor: Any = None  # made on first use: a Ray executor connects to its cluster
    _suites: dict[str, Suite] = field(default_factory=dict)
    _families: dict[tuple[str, str], Family] = field(default_factory=dict)
    _analyses: dict[tuple[str, str], Analysis] = field(default_factory=dict)

    @staticmethod
    def key(path: str | Path, name: str) -> tuple[str, str]:
        return str(Path(path).resolve()), name

    def suite(self, path: str | Path) -> Suite:
        key = str(Path(path).resolve())
        if key not in self._suites:
            self._suites[key] = load_suite(path)
        return self._suites[key]

    def config(self, path: str | Path, name: str) -> FamilyConfig:
        suite = self.suite(path)
        if name not in suite.families:
            raise KeyError(f"{path}: no family {name!r}; the suite has: {', '.join(suite.families)}")
        cfg = suite.families[name]
        if self.seed_offset:  # fresh seeds: same config, seeds shifted (paired families stay paired)
            cfg = cfg.replace(seeds=[s + self.seed_offset for s in cfg.seeds])
        return cfg

    def family(self, path: str | Path, name: str) -> Family:
        key = self.key(path, name)
        if key not in self._families:
            self._families[key] = self._obtain(self.config(path, name))
        return self._families[key]

    def _obtain(self, cfg: FamilyConfig) -> Family:
        from harness.family import obtain_family

        if self._executor is None:
            from harness.executors import make_executor

            self._executor = make_executor(self.executor, address=self.ray_address)
        return obtain_family(cfg, store=self.store, device=self.device, progress=self.progress,
                             pack=self.pack, executor=self._executor)

    def close(self) -> None:
        """Release the executor (a Ray executor's connection), if one was made."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    @property
    def options(self) -> AnalysisOptions:
        from harness.analysis import AnalysisOptions

        return AnalysisOptions(n_boot=self.n_boot, ci_method=self.ci_method)

    def analysis_of(self, cfg: FamilyConfig) -> tuple[tuple[str, str], Analysis]:
        """The analysis of a family config (trained or loaded once), and its cache key. A
        config that is its suite's family as this session sees it shares the fixture's
        cache entry; another one (the reference's own seeds under --seedstab-seed) gets its own."""
        key = self.key(cfg.source, cfg.name)
        try:
            same = self.config(cfg.source, cfg.name) == cfg
        except (KeyError, ValueError, OSError):
            same = False
        if not same:
            key = (key[0], f"{cfg.name}@seeds={','.join(map(str, cfg.seeds))}")
        if key not in self._families:
            self._families[key] = self._obtain(cfg)
        if key not in self._analyses:
            from harness.analysis_cache import analyze_cached

            self._analyses[key] = analyze_cached(self._families[key], options=self.options,
                                                 cache_dir=Path(self.store) / "analyses")
        return key, self._analyses[key]

    def analysis(self, path: str | Path, name: str) -> Analysis:
        key = self.key(path, name)
        if key not in self._analyses:
            from harness.analysis_cache import analyze_cached

            self._analyses[key] = analyze_cached(self.family(path, name), options=self.options,
                                                 cache_dir=Path(self.store) / "analyses")
        return self._analyses[key]

    def compare(self, path: str | Path, baseline: str, candidate: str, *, metrics: list[str],
                alternative: str = "greater", adjust: str = "max-t", alpha: float | None = None) -> dict[str, Any]:
        """candidate − baseline per metric (paired when the seeds match); p-values max-T
        adjusted jointly over every metric and layer by default. With ``alpha``, raises
        :class:`harness.stats.Underpowered` when no row could reach p < alpha with these seeds
        (see :func:`harness.analysis.compare_families`)."""
        from harness.analysis import compare_families

        return compare_families(self.analysis(path, baseline), self.analysis(path, candidate), metrics=metrics,
                                n_boot=self.n_boot, alternative=alternative, ci_method=self.ci_method,
                                adjust=adjust, alpha=alpha)


@contextlib.contextmanager
def _spec_errors() -> Iterator[None]:
    """A bad spec fails the test with its one line (file: key: problem), not a traceback
    through the harness."""
    try:
        yield
    except ConfigError as e:
        pytest.fail(f"seedstab: {e}", pytrace=False)


class TestView:
    """What the ``seedstab`` fixture gives a test: the session's families, remembering which
    ones this test used (they are logged to MLflow with its outcome)."""

    __test__ = False  # not a test class, whatever pytest's name rules say

    def __init__(self, hooks: "SessionHooks", node: pytest.Item) -> None:
        self._hooks, self._node = hooks, node
        node.stash.setdefault(_TOUCHED, [])

    @property
    def session(self) -> StabilitySession:
        return self._hooks.session

    def suite(self, path: str | Path) -> Suite:
        with _spec_errors():
            return self.session.suite(path)

    def family(self, path: str | Path, name: str) -> Family:
        with self._hooks.live_output(), _spec_errors():
            return self.session.family(path, name)

    def analysis(self, path: str | Path, name: str) -> Analysis:
        key = StabilitySession.key(path, name)
        if key not in self._node.stash[_TOUCHED]:
            self._node.stash[_TOUCHED].append(key)
        with self._hooks.live_output(), _spec_errors():
            return self.session.analysis(path, name)

    def compare(self, path: str | Path, baseline: str, candidate: str, *, metrics: list[str],
                alternative: str = "greater", adjust: str = "max-t", alpha: float | None = None) -> dict[str, Any]:
        """:meth:`StabilitySession.compare`, recording both families as used by this test."""
        self.analysis(path, baseline)  # recorded as used by this test (and computed once)
        self.analysis(path, candidate)
        return self.session.compare(path, baseline, candidate, metrics=metrics, alternative=alternative,
                                    adjust=adjust, alpha=alpha)


class SessionHooks:
    """pytest hooks for families, MLflow logging and the Markdown summary."""

    def __init__(self, config: pytest.Config, opts: Any) -> None:
        self.config = config
        self.opts = opts
        self.session = StabilitySession(
            store=opts.store or Path(os.environ.get("SEEDSTAB_STORE") or DEFAULT_STORE).resolve(),
            device=None if opts.device == "auto" else opts.device, n_boot=opts.n_boot,
            ci_method=opts.ci_method, seed_offset=opts.seed_offset,
            # xdist workers share the controller's stderr: bars of two workers would overwrite
            # each other on one terminal line, plain lines interleave readably
            progress="lines" if opts.progress == "auto" and hasattr(config, "workerinput")
            else opts.progress,
            pack=opts.pack, executor=opts.executor, ray_address=opts.ray_address)
        self.uri: str | None = None
        self.tracking: Any = None  # harness.session_tracking.TrackingHooks, when logging to MLflow
        self.outcomes: dict[str, dict[str, str]] = {}
        self._updated: set[str] = set()  # reference baselines this process rewrote
        self.check_specs: list[Any] = []  # every YAML check collected in this run
        if not opts.no_mlflow:
            from harness import tracking

            # The sqlite schema is created on the first log, under a file lock beside the db
            # (tracking.prepare): two xdist workers creating a new sqlite file at the same
            # moment otherwise fail. Lazy, so a run that logs nothing creates no mlflow.db.
            self.uri = tracking.tracking_uri(opts.mlflow_uri)
            from harness.session_tracking import TrackingHooks

            self.tracking = TrackingHooks(config, uri=self.uri, session=self.session, touched=_TOUCHED,
                                          role="baseline" if opts.update_baselines else "candidate")
            config.pluginmanager.register(self.tracking, "seedstab-mlflow")

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.check_specs = [i.spec for i in items if hasattr(i, "spec")]

    def view(self, node: pytest.Item) -> TestView:
        return TestView(self, node)

    def options_record(self) -> dict[str, Any]:
        from harness.gate import options_record

        return options_record(self.session.options)

    def run_check(self, item: pytest.Item) -> Any:
        """Run a YAML check item through the gate with this session's families; the families
        it analysed are logged to MLflow with its verdict like those of any test."""
        from harness.family import device_class, resolve_device
        from harness.gate import baseline_metrics, run_check
        from harness.plugin import update_command

        spec = item.spec
        device = device_class(resolve_device(self.session.device or spec.candidate.train.device))
        # every metric any collected check (or a check of the reference's own file) asks of
        # the reference goes into its baseline, whichever check rewrites it first
        wanted = baseline_metrics(spec, self.check_specs)
        touched = item.stash.setdefault(_TOUCHED, [])
        from harness.gate import fresh_seeds
        from harness.session_tracking import CHECK_CANDIDATE, CHECK_OUTCOME

        candidate = fresh_seeds(spec.candidate, self.opts.seed_offset)

        def analyze(cfg: FamilyConfig) -> Analysis:
            with self.live_output():
                key, a = self.session.analysis_of(cfg)
            if key not in touched:
                touched.append(key)
            if cfg == candidate:  # the check's verdict goes on the candidate's MLflow run
                item.stash[CHECK_CANDIDATE] = key
            return a

        outcome = run_check(spec, analyze=analyze, baselines_dir=self.opts.baselines_dir,
                            device_class=device, options=self.session.options,
                            update=self.opts.update_baselines, baseline_metrics=wanted,
                            seed_offset=self.opts.seed_offset, inconclusive=self.opts.inconclusive,
                            update_command=update_command(item.nodeid),
                            already_updated=self._updated)
        item.stash[CHECK_OUTCOME] = outcome  # its rows go into MLflow with the verdict
        return outcome

    @contextlib.contextmanager
    def live_output(self) -> Iterator[None]:
        """Let training progress through pytest's output capture while families train."""
        if self.session.progress == "off":
            yield
            return
        from harness.plugin import live_stderr

        with live_stderr(self.config):
            yield

    # -------------------------------------------------------------------- summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and not report.passed):
            props = dict((k, v) for k, v in report.user_properties)
            self.outcomes[report.nodeid] = {
                "outcome": report.outcome, "status": str(props.get("seedstab_status", "")),
                "run": str(props.get(_P_RUN, "")),
            }

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = self.config.getoption("seedstab_summary")
        if not path or hasattr(self.config, "workerinput"):
            return
        icon = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}
        rows = ["| test | outcome | baseline | MLflow run |", "|---|---|---|---|"]
        for nodeid, o in sorted(self.outcomes.items()):
            rows.append(f"| `{nodeid}` | {icon.get(o['outcome'], '')} {o['outcome']} | {o['status'] or '-'} | "
                        f"{o['run'] or '-'} |")
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("## seedstab verdicts\n\n" + "\n".join(rows) + "\n")
