"""The training loop at device speed: no host sync per step, the copy loss only where it is
logged, the first bad step named, progress as plain lines, cuBLAS set up before CUDA."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import harness.data as data_mod
import harness.train as train_mod
from harness.config import load_family
from harness.family import obtain_family
from harness.progress import resolve_progress
from harness.train import TrainingDiverged, train_seed

CPU = torch.device("cpu")

SPEC = """
    name: loop
    seeds: [0, 1]
    model: {n_layers: 1, n_heads: 2, d_model: 16, d_mlp: 32}
    data: {vocab_size: 32, seq_len: 32}
    train: {lr: 1.0e-3, steps: %(steps)d, batch_size: 4, log_every: %(log)d, checkpoint_every: 1000, device: cpu}
"""


def family_cfg(tmp_path: Path, *, steps: int = 30, log: int = 10):
    path = tmp_path / "loop.yaml"
    path.write_text(textwrap.dedent(SPEC % {"steps": steps, "log": log}))
    return load_family(path)


def test_losses_reach_the_host_only_at_log_and_checkpoint_steps(tmp_path, monkeypatch):
    cfg = family_cfg(tmp_path, steps=30, log=10)
    fetches, masks = [], []
    real_fetch, real_mask = train_mod.LossWindow.fetch, data_mod.copy_mask

    def fetch(self):
        out = real_fetch(self)
        fetches.append([s for s, _, _ in out])
        return out

    real_item = torch.Tensor.item

    def no_item(self):
        # torch's own optimizers read their CPU step counters with .item(); no device sync
        if sys._getframe(1).f_globals.get("__name__", "").startswith("harness"):
            raise AssertionError("Tensor.item() inside the training loop: a host sync per call")
        return real_item(self)

    monkeypatch.setattr(train_mod.LossWindow, "fetch", fetch)
    monkeypatch.setattr(data_mod, "copy_mask", lambda t, **kw: masks.append(1) or real_mask(t, **kw))
    monkeypatch.setattr(torch.Tensor, "item", no_item)
    saved = []
    result = train_seed(cfg, 0, device=CPU, on_checkpoint=lambda s, p: saved.append(s))
    monkeypatch.undo()
    # log steps 1, 10, 20, 30: four fetches, each of every step since the previous one
    assert [w[-1] + 1 for w in fetches] == [1, 10, 20, 30]
    assert sum(fetches, []) == list(range(30))
    assert len(masks) == 4, "the copy mask is computed only at the steps that log it"
    assert [r[0] for r in result.log["curve"]] == [1, 10, 20, 30]
    assert all(r[2] == r[2] for r in result.log["curve"]), "copy losses are logged"


def test_how_often_losses_are_fetched_does_not_change_the_bits(tmp_path):
    every = train_seed(family_cfg(tmp_path, steps=24, log=1), 0, device=CPU)
    rarely = train_seed(family_cfg(tmp_path, steps=24, log=12), 0, device=CPU)
    assert all(torch.equal(every.state_dict[k], rarely.state_dict[k]) for k in every.state_dict)
    by_step = {r[0]: r[1:] for r in every.log["curve"]}
    assert all(by_step[r[0]] == r[1:] for r in rarely.log["curve"])


def test_divergence_names_the_first_bad_step_not_the_fetch(tmp_path):
    cfg = family_cfg(tmp_path, steps=60, log=1).replace(train={"lr": 1e12})
    with pytest.raises(TrainingDiverged) as each:  # fetched at every step: the reference
        train_seed(cfg, 1, device=CPU)
    with pytest.raises(TrainingDiverged) as windowed:
        train_seed(cfg.replace(train={"log_every": 50}), 1, device=CPU)
    step = lambda e: int(str(e.value).split("at step ")[1].split(";")[0])  # noqa: E731
    assert step(windowed) == step(each) and step(each) < 49, "diverged inside a window"
    assert "seed 1 (init_seed 1, data_seed 1)" in str(windowed.value)


def test_lines_progress_is_plain_lines_about_every_tenth(tmp_path):
    cfg = family_cfg(tmp_path, steps=100, log=5)
    stream = io.StringIO()
    obtain_family(cfg, store=tmp_path / "store", progress="lines", progress_stream=stream, seeds=(0,))
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 9 <= len(lines) <= 11, lines
    assert lines[-1].startswith("loop seed 0: step 100/100 loss ") and lines[-1].endswith(" tok/s")
    # auto: a bar on a terminal, lines on anything else; the old booleans still work
    assert resolve_progress("auto", io.StringIO()) == "lines"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert resolve_progress("auto", Tty()) == "bar" and resolve_progress(True, Tty()) == "bar"
    assert resolve_progress(False) == "off"
    with pytest.raises(ValueError, match="progress: expected one of auto, bar, lines, off"):
        resolve_progress("loud")
    bar = io.StringIO()
    obtain_family(cfg, store=tmp_path / "store", progress="bar", progress_stream=bar, seeds=(1,))
    assert "\r" in bar.getvalue() and "loop seed 1" in bar.getvalue()


def test_cublas_workspace_is_set_when_training_is_imported():
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    code = "import os, harness.train; print(os.environ.get('CUBLAS_WORKSPACE_CONFIG'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == train_mod.CUBLAS_WORKSPACE_CONFIG, out.stderr
    env["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == ":16:8", "a user's own setting is kept"


def test_the_log_records_the_fp32_switches(tmp_path):
    log = train_seed(family_cfg(tmp_path, steps=2), 0, device=CPU).log
    assert log["fp32_math"] and set(log["fp32_math"].values()) <= {"ieee", False}
    assert log["deterministic"] is True and log["threads"] == 1
