"""One pytest session's families and analyses, computed once and shared by every test.

The pytest plugin builds one :class:`StabilitySession` from its command-line options and
hands it to suites through the ``seedstab`` fixture. Families are trained or loaded through
the store (so a second session trains nothing); analyses are cached per (file, family).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis import AnalysisOptions, analyze_family, compare_families
from harness.config import FamilyConfig, Suite, load_suite
from harness.family import DEFAULT_STORE, Family, obtain_family
from harness.results import Analysis

log = logging.getLogger(__name__)


@dataclass
class StabilitySession:
    store: Path = DEFAULT_STORE
    device: str | None = None
    n_boot: int = 1000
    progress: bool = True
    _suites: dict[str, Suite] = field(default_factory=dict)
    _families: dict[tuple[str, str], Family] = field(default_factory=dict)
    _analyses: dict[tuple[str, str], Analysis] = field(default_factory=dict)

    def suite(self, path: str | Path) -> Suite:
        key = str(Path(path).resolve())
        if key not in self._suites:
            self._suites[key] = load_suite(path)
        return self._suites[key]

    def config(self, path: str | Path, name: str) -> FamilyConfig:
        suite = self.suite(path)
        if name not in suite.families:
            raise KeyError(f"{path}: no family {name!r}; the suite has: {', '.join(suite.families)}")
        return suite.families[name]

    def family(self, path: str | Path, name: str) -> Family:
        key = (str(Path(path).resolve()), name)
        if key not in self._families:
            self._families[key] = obtain_family(self.config(path, name), store=self.store, device=self.device,
                                                progress=self.progress)
        return self._families[key]

    def analysis(self, path: str | Path, name: str) -> Analysis:
        key = (str(Path(path).resolve()), name)
        if key not in self._analyses:
            fam = self.family(path, name)
            self._analyses[key] = analyze_family(fam, options=AnalysisOptions(n_boot=self.n_boot))
        return self._analyses[key]

    def compare(self, path: str | Path, baseline: str, candidate: str, *, metrics: list[str],
                alternative: str = "greater") -> dict[str, Any]:
        """candidate − baseline per metric (paired when the seeds match)."""
        return compare_families(self.analysis(path, baseline), self.analysis(path, candidate), metrics=metrics,
                                n_boot=self.n_boot, alternative=alternative)

    @staticmethod
    def default_store() -> Path:
        return Path(os.environ.get("SEEDSTAB_STORE") or DEFAULT_STORE)
