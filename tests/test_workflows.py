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
    assert "--require-gpu" in run and "--seedstab-summary" in run
