"""Checks declared in suite YAML files, run as pytest items.

``pytest suites`` collects every ``*.yaml`` / ``*.yml`` file that has a top-level ``checks:``
section; each check becomes an item ``suites/smoke/smoke.yaml::adam``. A spec error is one
collection error naming the file and the key (not a traceback per check). The item runs
:func:`harness.gate.run_check` through the session's family cache, records its verdict for
the terminal summary, MLflow and ``--junitxml``, and fails with the gate's report.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness.baseline_fixture import P_BASELINE, P_STATUS, P_WRITTEN, SeedstabInconclusive

_CHECKS_RE = re.compile(r"^checks\s*:", re.MULTILINE)
_FAMILIES_RE = re.compile(r"^families\s*:", re.MULTILINE)


def is_check_file(path: Path) -> bool:
    """A suite file: YAML with top-level ``families:`` and ``checks:`` keys (cheap: no YAML
    parse, no imports), so other YAML files in a project (CI configs, data) are left alone."""
    if path.suffix not in (".yaml", ".yml"):
        return False
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(_CHECKS_RE.search(text)) and bool(_FAMILIES_RE.search(text))


class CheckFailed(Exception):
    """A failing verdict; the message is the gate's report."""


class CheckFile(pytest.File):
    """A suite file's checks."""

    def collect(self) -> Iterator[pytest.Item]:
        from harness.checks import load_checks
        from harness.config import ConfigError

        try:
            checks = load_checks(self.path)
        except ConfigError as e:
            raise self.CollectError(f"seedstab: {e}") from None
        for name, spec in checks.items():
            item = CheckItem.from_parent(self, name=name, spec=spec)
            devices = {spec.candidate.train.device, spec.reference.train.device}
            if any(d.startswith("cuda") for d in devices):
                item.add_marker(pytest.mark.seedstab_gpu)
            yield item


class CheckItem(pytest.Item):
    """One declared check (see :mod:`harness.checks`)."""

    def __init__(self, *, spec: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def setup(self) -> None:
        opts = self.config.pluginmanager.get_plugin("seedstab-families").opts
        wanted = opts.device if opts.device != "auto" else self.spec.candidate.train.device
        if wanted.startswith("cuda") and self.get_closest_marker("seedstab_gpu") is None:
            from harness.plugin import _cuda_available

            if not _cuda_available():
                pytest.skip(f"the check trains on {wanted} and torch sees no CUDA device")

    def runtest(self) -> None:
        __tracebackhide__ = True
        hooks = self.config.pluginmanager.get_plugin("seedstab-families")
        outcome = hooks.run_check(self)
        v = outcome.verdict
        self.user_properties.append((P_STATUS, v.status))
        self.user_properties.append((P_BASELINE, str(outcome.baseline)))
        self.user_properties.extend((P_WRITTEN, w) for w in v.written)
        self.user_properties.append(("seedstab_report", outcome.report))
        if v.failed:
            raise CheckFailed(outcome.report)
        if v.status == "inconclusive":
            warnings.warn(SeedstabInconclusive(outcome.report), stacklevel=1)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed):
            return str(excinfo.value)
        from harness.config import ConfigError

        if isinstance(excinfo.value, (ConfigError, RuntimeError)) and not self.config.getoption("verbose"):
            return f"seedstab: {type(excinfo.value).__name__}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"seedstab check {self.name}: {self.spec.candidate.name} vs " \
                                f"{self.spec.reference.name}"
