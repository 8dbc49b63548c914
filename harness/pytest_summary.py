"""The ``seedstab`` section of pytest's terminal summary: every check's status and baseline,
then the baselines no test used.

Everything it reports reaches it through test reports (``user_properties``) and, under xdist,
the workers' ``workeroutput``, so it works the same on a single process and on the xdist
controller. "Unused baselines" are listed only after a full run: no test deselected (-k, -m,
--deselect, --lf, ...), no node id or file given on the command line, not stopped early (-x,
interrupt). Only device classes that some test used are scanned (a CPU run does not list the
GPU baselines). Imports nothing heavy: the plugin registers it in every pytest run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pytest

# harness.baselines.OBTAINED_SUFFIX, spelled out so that loading the plugin imports no numpy
# (a test keeps them equal)
OBTAINED_SUFFIX = ".obtained.json"
P_STATUS, P_BASELINE, P_WRITTEN = "seedstab_status", "seedstab_baseline", "seedstab_written"


@dataclass
class _Record:
    status: str = ""
    baselines: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)


def _rel(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def unused_baselines(baselines_dir: Path, used: set[Path]) -> tuple[list[Path], list[str]]:
    """Baseline files under ``baselines_dir`` that no test used, in the device classes some
    test used; and the other device classes present (not scanned)."""
    root = baselines_dir.resolve()
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


class SummaryHooks:
    """Per-run hooks (one instance per pytest config) that collect the verdicts and write the
    ``seedstab`` terminal section."""

    def __init__(self, config: pytest.Config, baselines_dir: Path) -> None:
        self.config, self.baselines_dir = config, baselines_dir
        self.records: dict[str, _Record] = {}  # nodeid -> what its reports said
        self.deselected = 0
        self.failures = 0

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failures += 1
        props = [(k, v) for k, v in report.user_properties if str(k).startswith("seedstab_")]
        if not props:
            return
        rec = _Record()
        for k, v in props:
            if k == P_STATUS:
                rec.status = str(v)
            elif k == P_BASELINE:
                rec.baselines.append(str(v))
            elif k == P_WRITTEN:
                rec.written.append(str(v))
        self.records[report.nodeid] = rec  # later phases carry all earlier properties

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):  # an xdist worker: tell the controller
            self.config.workeroutput["seedstab_deselected"] = self.deselected

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        out = getattr(node, "workeroutput", None) or {}
        self.deselected += int(out.get("seedstab_deselected", 0))

    def _full_run(self, exitstatus: int) -> tuple[bool, str]:
        """Whether every test ran (so an unused baseline is really unused); if not, why."""
        config = self.config
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            return False, "the run was interrupted"
        if self.deselected:
            return False, "some tests were deselected (-k, -m, --deselect, --lf, ...)"
        if config.getoption("maxfail", 0) and self.failures:
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
        if hasattr(self.config, "workerinput") or not self.records:
            return
        tr, root = terminalreporter, Path(self.config.rootpath)
        tr.write_sep("=", "seedstab")
        width = max([9, *(len(r.status or "error") for r in self.records.values())])
        for nodeid, rec in sorted(self.records.items()):
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
        used = {Path(b).resolve() for rec in self.records.values() for b in rec.baselines}
        unused, other = unused_baselines(self.baselines_dir, used)
        if unused:
            tr.write_line("unused baselines (no test used them in this run; nothing was deleted):",
                          yellow=True)
            for p in unused:
                tr.write_line(f"  {_rel(p, root)}")
        else:
            tr.write_line("unused baselines: none")
        if other:
            tr.write_line(f"(baselines of other device classes, not checked: {', '.join(other)})")
