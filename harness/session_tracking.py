"""MLflow logging of one pytest session: a run per family, each test's verdict on it.

After each test, every family it used gets its run in ``seedstab/<suite>`` (created the
first time, with config, metrics, plots and seed runs; found afterwards, also from another
xdist worker of the session) and the test's verdict is added to it: a YAML check's on its
candidate's run, any other test's on each family it used. The run ids go into the test's
report; a closing line names the store and how to look at it, or says what was not logged
and where it was kept (under xdist the controller says it: the note travels in the
reports).
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

log = logging.getLogger("harness.session")

__all__ = ["TrackingHooks", "CHECK_OUTCOME", "CHECK_CANDIDATE", "VERDICTS", "P_RUN", "P_UNLOGGED"]

CHECK_OUTCOME = pytest.StashKey[Any]()  # a YAML check item's harness.gate.Outcome
CHECK_CANDIDATE = pytest.StashKey[tuple]()  # the session key of the check's candidate family
VERDICTS = pytest.StashKey[list]()  # harness.verdict.Verdicts a test's stability_baseline reached
P_RUN = "mlflow_run"  # not "seedstab_*": those carry baseline records
P_UNLOGGED = "mlflow_unlogged"  # why a test's runs were not logged, and where they were kept
P_EXPERIMENT = "mlflow_experiment"  # the experiment id, for the closing hint (also under xdist)
SESSION_INPUT = "seedstab_session"  # workerinput key: the controller's session id
NOT_FAILING = ("pass", "updated", "inconclusive", "skipped")


def new_session_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def verdict_of(status: str | None, outcome: str) -> str:
    """A test's verdict word: its gate status (pass, regressed, stale, ...) when it reached
    one, else its outcome (pass, fail, skipped); a test that failed after a passing gate
    (a later assert) is "fail"."""
    verdict = status or {"passed": "pass", "failed": "fail"}.get(outcome, outcome)
    if outcome == "failed" and verdict in NOT_FAILING:
        return "fail"
    return verdict


class TrackingHooks:
    """pytest hooks that log a session's families and verdicts to MLflow at ``uri``.

    ``session``: the :class:`harness.session.StabilitySession` holding families and
    analyses; ``touched``: the stash key under which a test lists the families it used.
    """

    def __init__(self, config: pytest.Config, *, uri: str, session: Any, touched: Any, role: str) -> None:
        self.config, self.uri, self.session, self._touched, self.role = config, uri, session, touched, role
        self.session_id = str((getattr(config, "workerinput", None) or {}).get(SESSION_INPUT) or new_session_id())
        self.runs: dict[tuple[str, str], Any] = {}  # family key -> its tracking.LogResult
        self._plots: dict[tuple[str, str], dict[str, Path]] = {}
        self._plot_dir: Path | None = None
        self.note = ""  # why some runs were not logged (from this process or a worker's report)
        self.experiment_id: str | None = None
        self.logged_any = False

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:  # pytest-xdist, controller side
        node.workerinput[SESSION_INPUT] = self.session_id

    # -------------------------------------------------------------------- families

    def _plots_for(self, key: tuple[str, str], analysis: Any, family: Any) -> dict[str, Path]:
        if key in self._plots:
            return self._plots[key]
        from harness import plots

        def meta_sne(p: Path) -> Path:
            from harness.analysis import probe_tokens
            from harness.capture import capture_family

            cap = capture_family(family.models, probe_tokens(family.config), seeds=[s.seed for s in family.seeds])
            return plots.plot_meta_sne(cap.patterns, p, seeds=list(analysis.seeds))[0]

        if self._plot_dir is None:
            self._plot_dir = Path(tempfile.mkdtemp(prefix="seedstab-plots-"))
        d = self._plot_dir / f"{len(self._plots)}-{analysis.family}"
        out: dict[str, Path] = {}
        for name, fn in (("layer_stability", lambda p: plots.plot_layer_stability([analysis], p)),
                         ("resid_vs_heads", lambda p: plots.plot_resid_vs_heads(analysis, p)),
                         ("heatmap", lambda p: plots.plot_head_heatmap(analysis, p)),
                         ("importance", lambda p: plots.plot_importance(analysis, p)),
                         ("meta_sne", meta_sne)):
            try:
                out[name] = fn(d / f"{name}.png")
            except Exception as e:  # noqa: BLE001 - a plot must not fail a verdict
                log.warning("plot %s of %s failed: %s", name, analysis.family, e)
        self._plots[key] = out
        return out

    def family_run(self, key: tuple[str, str]) -> Any:
        """The family's run (a tracking.LogResult), logged on first use; None when the
        session has no analysis under ``key``."""
        if key in self.runs:
            return self.runs[key]
        analysis = self.session._analyses.get(key)
        family = self.session._families.get(key)
        if analysis is None or family is None:
            return None
        from harness import tracking

        suite = self.session.suite(key[0]).name
        name = key[1].replace("@seeds=", "@seeds ")  # a second seed set of a family (fresh seeds)
        result = tracking.log_family(
            uri=self.uri, suite=suite, run_name=f"{suite}/{name}", analysis=analysis,
            config=family.config.to_dict(), seed_logs=[dict(s.log) for s in family.seeds], role=self.role,
            session=self.session_id, plots=lambda: self._plots_for(key, analysis, family))
        self.runs[key] = result
        return result

    # -------------------------------------------------------------------- per test

    def _record(self, item: pytest.Item, report: pytest.TestReport, run_name: str, verdict: str,
                label: str) -> dict[str, Any]:
        from harness.tracking_payload import verdict_record

        props = item.user_properties
        status = next((str(v) for k, v in reversed(props) if k == "seedstab_status"), None)
        text = str(report.longrepr)[-20000:] if report.failed else ""
        gate_report = next((str(v) for k, v in reversed(props) if k == "seedstab_report"), "")
        outcome = item.stash.get(CHECK_OUTCOME, None)
        extra: dict[str, Any] = {}
        if outcome is not None:
            spec = outcome.check
            verdicts = [outcome.verdict.to_dict()]
            extra = {"check": {"name": spec.name, "source": spec.source, "candidate": spec.candidate.name,
                               "reference": spec.reference.name, "metrics": list(spec.metrics),
                               "alpha": spec.alpha, "tolerance": dict(spec.tolerance)},
                     "seeds": {"reference": list(outcome.seeds_reference),
                               "candidate": list(outcome.seeds_candidate)}}
            gate_report = gate_report or outcome.report
        else:
            verdicts = [v.to_dict() for v in item.stash.get(VERDICTS, [])]
        if status and not verdicts:
            verdicts = [{"status": status}]
        return verdict_record(test=item.nodeid, label=label, run_name=run_name, verdict=verdict,
                              outcome=report.outcome, verdicts=verdicts, report=gate_report,
                              failure=text, extra=extra)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: Any) -> Iterator[None]:
        outcome = yield
        report = outcome.get_result()
        touched = list(item.stash.get(self._touched, []))
        if report.when != "call" or not touched:
            return
        from harness import tracking
        from harness.tracking_payload import verdict_label

        is_check = CHECK_OUTCOME in item.stash
        if is_check and item.stash.get(CHECK_CANDIDATE, None) in touched:
            touched = [item.stash[CHECK_CANDIDATE]]  # a check's verdict is its candidate's
        status = next((str(v) for k, v in reversed(item.user_properties) if k == "seedstab_status"), None)
        verdict = verdict_of(status, report.outcome)
        label = verdict_label(item.name, check=is_check)
        lines = []
        for key in touched:
            family = self.family_run(key)
            if family is None:
                continue
            res = tracking.log_verdict(family, record=self._record(item, report, family.run_name, verdict, label))
            if res.logged:
                self.logged_any = True
                self.experiment_id = res.experiment_id or self.experiment_id
                url = tracking.run_url(self.uri, res.run_id, experiment_id=res.experiment_id)
                lines.append(f"{res.run_name}: MLflow run {res.run_id}" + (f" ({url})" if url else "")
                             + f", verdict.{label} = {verdict}, in experiment {res.experiment} at {self.uri}")
                report.user_properties.append((P_RUN, res.run_id))
                if res.experiment_id:
                    report.user_properties.append((P_EXPERIMENT, res.experiment_id))
            else:
                where = res.fallback_path.parent if res.fallback_path else None
                lines.append(f"{res.run_name}: NOT logged to MLflow ({res.error}); "
                             + (f"kept on disk in {res.fallback_path}" if where else "and not kept on disk"))
                self.note = (f"some runs were not logged to MLflow at {self.uri} ({res.error}); "
                             + (f"their data is kept under {where}; `seedstab mlflow sync` logs it later"
                                if where else "their data could not be written to disk either"))
                # travels with the report, so under xdist the controller says it too
                report.user_properties.append((P_UNLOGGED, self.note))
        if lines:
            report.sections.append(("seedstab mlflow", "\n".join(lines)))

    # -------------------------------------------------------------------- summary

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for k, v in report.user_properties:
            if k == P_UNLOGGED:  # a worker's (or this process's) logging failure
                self.note = str(v)
            elif k == P_EXPERIMENT:
                self.experiment_id = str(v)
            elif k == P_RUN:
                self.logged_any = True

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        if self.note:
            terminalreporter.write_line("seedstab: " + self.note, yellow=True)
        elif self.logged_any:
            from harness.tracking import ui_hint

            terminalreporter.write_line(f"seedstab: runs logged to MLflow at {self.uri} (session "
                                        f"{self.session_id}); {ui_hint(self.uri, self.experiment_id)}")
