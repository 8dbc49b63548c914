"""The plugin is registered in every pytest run of an environment where seedstab is installed
(the pytest11 entry point), so loading it must cost nothing: no torch, scipy or mlflow until
a seedstab fixture or suite is used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFTEST = '''
import json, sys
def pytest_sessionfinish(session):
    heavy = [m for m in ("torch", "scipy", "mlflow", "matplotlib", "transformers") if m in sys.modules]
    plugins = [name for name, _ in session.config.pluginmanager.list_name_plugin()]
    open("modules.json", "w").write(json.dumps({"heavy": heavy, "plugins": plugins}))
'''


def run_unrelated(tmp_path: Path, *args: str) -> dict:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_app.py").write_text("def test_app():\n    assert 1 + 1 == 2\n")
    (tmp_path / "ci.yaml").write_text("jobs: {build: {steps: []}}\n")  # YAML that is not a suite
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "modules.json").read_text())


def test_an_unrelated_project_imports_nothing_heavy(tmp_path):
    seen = run_unrelated(tmp_path, "-p", "harness.plugin") if not _installed() else run_unrelated(tmp_path)
    assert any("seedstab" in p or "harness.plugin" in p for p in seen["plugins"]), seen["plugins"]
    assert seen["heavy"] == [], f"loading the seedstab plugin imported {seen['heavy']}"


def test_collect_only_imports_nothing_heavy(tmp_path):
    args = () if _installed() else ("-p", "harness.plugin")
    seen = run_unrelated(tmp_path, "--co", *args)
    assert seen["heavy"] == []


def test_the_plugins_spelled_out_constants_match_the_library():
    from harness import baselines, executors, plugin, progress, pytest_summary, session, stats
    from harness.family import DEFAULT_STORE

    assert plugin.CI_METHODS == stats.CI_METHODS
    assert plugin.EXECUTORS == executors.EXECUTORS
    assert plugin.PROGRESS_MODES == progress.PROGRESS_MODES
    assert pytest_summary.OBTAINED_SUFFIX == baselines.OBTAINED_SUFFIX
    assert session.DEFAULT_STORE == DEFAULT_STORE


def _installed() -> bool:
    from importlib import metadata

    return any(ep.name == "seedstab" for ep in metadata.entry_points(group="pytest11"))
