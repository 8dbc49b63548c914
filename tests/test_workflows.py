"""The GitHub workflows parse and keep the properties the README promises: read-only tokens,
one run per branch, a seed store saved even after a red run, the hidden unlogged folder
uploaded, and the GPU runner reached only by trusted triggers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"


def load(name: str) -> dict:
    wf = yaml.safe_load((WORKFLOWS / name).read_text())
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as True
    return wf


def steps(wf: dict, job: str) -> list[dict]:
    return wf["jobs"][job]["steps"]


@pytest.mark.parametrize("name", ["cpu.yml", "gpu.yml"])
def test_workflow_basics(name):
    wf = load(name)
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["cancel-in-progress"] is True
    for job in wf["jobs"].values():
        assert job["timeout-minutes"] > 0
        for step in job["steps"]:
            assert "uses" in step or "run" in step, step


@pytest.mark.parametrize("name, job", [("cpu.yml", "smoke"), ("gpu.yml", "paper")])
def test_the_seed_store_is_saved_even_after_a_red_run(name, job):
    s = steps(load(name), job)
    restore = [x for x in s if str(x.get("uses", "")).startswith("actions/cache/restore")]
    save = [x for x in s if str(x.get("uses", "")).startswith("actions/cache/save")]
    assert len(restore) == len(save) == 1 and not [x for x in s if x.get("uses") == "actions/cache@v4"]
    assert save[0]["if"] == "always()"
    assert restore[0]["with"]["key"] == save[0]["with"]["key"]
    assert "'**/*.py'" in save[0]["with"]["key"] and "'**/*.yaml'" in save[0]["with"]["key"]
    assert s.index(restore[0]) < s.index(save[0])
    upload = [x for x in s if str(x.get("uses", "")).startswith("actions/upload-artifact")]
    assert upload and upload[0]["with"]["include-hidden-files"] is True
    assert ".seedstab/unlogged/" in upload[0]["with"]["path"]


def test_the_gpu_runner_runs_only_trusted_triggers():
    wf = load("gpu.yml")
    assert wf["on"]["pull_request"] == {"types": ["labeled"]}  # not on later pushes
    cond = wf["jobs"]["paper"]["if"]
    assert "github.event.label.name == 'gpu-stability'" in cond
    assert "github.event.pull_request.head.repo.full_name == github.repository" in cond  # no forks
    assert wf["jobs"]["paper"]["runs-on"] == ["self-hosted", "linux", "gpu"]
    run = " ".join(x.get("run", "") for x in steps(wf, "paper"))
    assert "--seedstab-require-gpu" in run and "--seedstab-summary" in run


# ----------------------------------------------------------------------------- README, .ci/run

REPO = WORKFLOWS.parents[1]
OLD_PYTEST_OPTIONS = ("--device", "--store", "--update-baselines", "--baselines-dir", "--mlflow-uri",
                      "--no-mlflow", "--n-boot", "--ci-method", "--require-gpu")


def quickstart_commands() -> list[str]:
    """The bash blocks of the README's Quickstart, one command each."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("\n```", 1)[0].strip() for b in section.split("```bash\n")[1:]]
    assert len(blocks) == 2 and all("\n" not in b for b in blocks), blocks
    return blocks


def test_ci_run_is_the_readme_test_command():
    suites, tests = quickstart_commands()
    install, _, run = tests.rpartition(" && ")
    assert run == "python3 -m pytest tests"
    assert suites == f"{install} && python3 -m pytest suites -n 2"
    assert "'torch==2.13.0+cpu' --extra-index-url https://download.pytorch.org/whl/cpu" in install
    assert "|| python3 -m pip install torch==2.13.0)" in install  # the fallback: what pip has
    lines = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[-1] == f'{tests} "$@"'
    assert "set -euo pipefail" in lines  # a failing install or test run fails CI
    wf = load("cpu.yml")
    assert [x["run"] for x in steps(wf, "tests") if "run" in x] == [".ci/run -q -ra --junitxml=reports/tests.xml"]
    assert any(x.get("run") == install for x in steps(wf, "smoke"))  # the suites job installs alike


def _plugin_options() -> set[str]:
    from harness import plugin

    class Collect:
        def __init__(self):
            self.names: set[str] = set()

        def getgroup(self, *a, **k):
            return self

        def addoption(self, *names, **k):
            self.names.update(names)

        def addini(self, *a, **k):
            pass

    parser = Collect()
    plugin.pytest_addoption(parser)
    return parser.names


def test_every_seedstab_option_named_in_docs_and_ci_exists():
    import re

    known = _plugin_options()
    files = [REPO / "README.md", REPO / ".ci" / "run", *WORKFLOWS.glob("*.yml")]
    for f in files:
        for name in set(re.findall(r"--seedstab-[a-z][a-z-]*[a-z]", f.read_text())):
            assert name in known, f"{f.name}: {name} is not an option of the plugin"
    for name in ("cpu.yml", "gpu.yml"):
        for job in load(name)["jobs"]:
            for step in steps(load(name), job):
                words = str(step.get("run", "")).split()
                if "pytest" in words:
                    assert not set(words) & set(OLD_PYTEST_OPTIONS), (name, step["run"])
    for line in (REPO / "README.md").read_text().splitlines():
        if "pytest " in line:
            words = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line.split("seedstab check")[0]))
            assert not words & set(OLD_PYTEST_OPTIONS), line


@pytest.mark.parametrize("name, job", [("cpu.yml", "smoke"), ("gpu.yml", "paper")])
def test_the_verdict_table_reaches_the_job_summary(name, job):
    s = steps(load(name), job)
    suite = [x for x in s if "pytest suites" in str(x.get("run", ""))]
    assert len(suite) == 1 and "--seedstab-summary=reports/summary.md" in suite[0]["run"]
    assert "--seedstab-progress lines" in suite[0]["run"]  # a log: plain lines, no bars
    summary = [x for x in s if '>> "$GITHUB_STEP_SUMMARY"' in str(x.get("run", ""))]
    assert len(summary) == 1 and summary[0]["if"] == "always()"  # a red run shows its table too
    assert "cat reports/summary.md" in summary[0]["run"]
    assert s.index(suite[0]) < s.index(summary[0])
