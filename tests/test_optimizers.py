"""Optimizers users already have, with zero lines of code: by import path from PyPI packages
(lion-pytorch, pytorch-optimizer), with a lifecycle (schedule-free's train()/eval()), and by
a factory that receives the model (Muon on matrices, AdamW on the rest). Errors raised inside
training are one line naming the family, the seed and the step."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError, family_from_dict
from harness.train import TrainingError, train_seed

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CPU = torch.device("cpu")
TINY = {"seeds": [0, 1, 2], "model": {"n_layers": 2, "n_heads": 2, "d_model": 16, "attn_only": True},
        "data": {"vocab_size": 32, "seq_len": 32}, "probe": {"n_prompts": 4}}


def family(train: dict, name: str = "family"):
    return family_from_dict({**TINY, "name": name, "train": {"steps": 6, "batch_size": 2, **train}})


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("optimizer, lr", [("lion_pytorch:Lion", 3e-4), ("pytorch_optimizer:SOAP", 3e-3)])
def test_pypi_optimizers_by_import_path(optimizer, lr):
    pytest.importorskip(optimizer.partition(":")[0])
    cfg = family({"optimizer": optimizer, "lr": lr})
    a, b = train_seed(cfg, 0, device=CPU), train_seed(cfg, 0, device=CPU)
    assert same(a.state_dict, b.state_dict)
    assert a.log["final_loss"] < a.log["curve"][0][1]


# ---------------------------------------------------------------- lifecycle: train() / eval()


RECORDER = '''
import torch

CALLS = []


class Recorder(torch.optim.SGD):
    def train(self):
        CALLS.append("train")

    def eval(self):
        CALLS.append("eval")

    def step(self, closure=None):
        CALLS.append("step")
        return super().step(closure)
'''


@contextlib.contextmanager
def user_module(folder: Path, monkeypatch, name: str, source: str):
    """``source`` importable as module ``name`` for the block, forgotten afterwards."""
    (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    try:
        yield importlib.import_module(name)
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
def recorder(tmp_path, monkeypatch):
    with user_module(tmp_path, monkeypatch, "seedstab_recorder", RECORDER) as module:
        yield module


def test_train_and_eval_are_called_around_steps_checkpoints_and_the_end(recorder):
    cfg = family({"optimizer": "seedstab_recorder:Recorder", "lr": 0.1, "checkpoint_every": 4})
    train_seed(cfg, 0, device=CPU, on_checkpoint=lambda step, payload: recorder.CALLS.append(f"ckpt{step}"))
    # checkpoints keep the training point (bitwise resume); the stored weights follow eval()
    assert recorder.CALLS == ["train", "step", "step", "step", "step", "ckpt4", "step", "step", "eval"]


def test_schedule_free_stores_the_averaged_weights_and_resumes_bitwise():
    sf = pytest.importorskip("schedulefree")
    cfg = family({"optimizer": "schedulefree:AdamWScheduleFree", "lr": 3e-3, "steps": 8, "checkpoint_every": 4})
    full = train_seed(cfg, 0, device=CPU)
    saved = {}
    train_seed(cfg, 0, device=CPU, on_checkpoint=lambda s, p: saved.setdefault(s, p))
    assert same(train_seed(cfg, 0, device=CPU, resume=saved[4]).state_dict, full.state_dict)

    # by hand: the same run, its weights read in train mode (the training point) and after eval()
    from harness.model import build_model
    from harness.data import BatchStream
    from harness.train import build_optimizer, data_source, deterministic, lm_losses

    init_seed, data_seed = cfg.seed_pair(0)
    with torch.random.fork_rng(devices=[]), deterministic(CPU, cfg.train.threads):
        model = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len, init_seed=init_seed)
        opt = build_optimizer(cfg, model)
        assert isinstance(opt, sf.AdamWScheduleFree)
        opt.train()
        stream = BatchStream(data_source(cfg), batch_size=2, generator=torch.Generator().manual_seed(data_seed))
        for step in range(8):
            batch = stream.batch(step)  # the data order training uses
            loss, _ = lm_losses(model, batch.tokens, batch.copy_mask)
            opt.zero_grad()
            loss.backward()
            opt.step()
        training_point = {k: v.clone() for k, v in model.state_dict().items()}
        opt.eval()
        averaged = model.state_dict()
    assert not same(training_point, averaged)
    assert same(full.state_dict, averaged)  # the stored weights are eval()'s, bit for bit


# ---------------------------------------------------------------------------- factories


def test_a_muon_factory_gets_the_model_and_its_kwargs(monkeypatch):
    pytest.importorskip("pytorch_optimizer")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    cfg = family({"optimizer": "muon_factory:muon", "lr": 0.02, "optimizer_kwargs": {"adamw_lr": 1e-3}})
    from harness.model import build_model
    from harness.train import build_optimizer

    model = build_model(cfg.model, vocab_size=32, n_ctx=32, init_seed=0)
    opt = build_optimizer(cfg, model)
    muon, adamw = opt.param_groups
    assert muon["use_muon"] and not adamw["use_muon"]
    assert muon["lr"] == 0.02 and adamw["lr"] == 1e-3  # Muon gives its AdamW groups adamw_lr
    hidden = {id(p) for p in muon["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in hidden}
    assert names and all(n.startswith("blocks.") and "W_" in n for n in names), names
    result = train_seed(cfg, 0, device=CPU)
    assert result.log["final_loss"] < result.log["curve"][0][1]


def test_a_factory_with_an_unknown_argument_fails_at_load(monkeypatch):
    pytest.importorskip("pytorch_optimizer")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(ConfigError) as e:
        family({"optimizer": "muon_factory:muon", "lr": 0.02, "optimizer_kwargs": {"adamw_lrr": 1e-3}})
    assert e.value.key == "train.optimizer_kwargs.adamw_lrr"
    assert "muon takes no argument 'adamw_lrr'; it takes: lr, adamw_lr, weight_decay" in str(e.value)


def test_a_factory_that_returns_no_optimizer_is_named(tmp_path, monkeypatch):
    with user_module(tmp_path, monkeypatch, "seedstab_bad_factory", "def make(model, *, lr):\n    return [lr]\n"):
        cfg = family({"optimizer": "seedstab_bad_factory:make", "lr": 0.1})
        with pytest.raises(ConfigError, match="seedstab_bad_factory:make returned list, not an optimizer"):
            train_seed(cfg, 0, device=CPU)


def test_a_non_callable_optimizer_is_refused():
    with pytest.raises(ConfigError, match="neither an optimizer class nor a factory function"):
        family({"optimizer": "math:pi", "lr": 0.1})


# ------------------------------------------------------------------ errors inside training


BROKEN = '''
import torch


class Broken(torch.optim.SGD):
    def step(self, closure=None):
        if self.state_steps == 3:
            raise ValueError("needs optimizer.train() first")
        self.state_steps += 1
        return super().step(closure)

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.state_steps = 0
'''


@pytest.fixture
def broken(tmp_path, monkeypatch):
    with user_module(tmp_path, monkeypatch, "seedstab_broken", BROKEN):
        yield tmp_path


def test_an_error_inside_training_is_one_line_with_family_seed_and_step(broken):
    cfg = family({"optimizer": "seedstab_broken:Broken", "lr": 0.1}, name="mine")
    with pytest.raises(TrainingError) as e:
        train_seed(cfg, 1, device=CPU)
    msg = str(e.value)
    assert msg == ("mine: seed 1 (init_seed 1, data_seed 1), step 3: ValueError: needs optimizer.train() first")
    assert isinstance(e.value.__cause__, ValueError)


def test_the_cli_exits_1_on_a_training_error_and_2_on_bad_input(broken, capsys, monkeypatch):
    from harness.cli import main

    spec = broken / "broken.yaml"
    spec.write_text("name: mine\nseeds: [0, 1, 2]\nmodel: {n_layers: 1, n_heads: 1, d_model: 8, attn_only: true}\n"
                    "data: {vocab_size: 32, seq_len: 32}\n"
                    "train: {optimizer: 'seedstab_broken:Broken', lr: 0.1, steps: 6, batch_size: 2}\n")
    assert main(["train", str(spec), "--store", str(broken / "store"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "seedstab: error: mine: seed 0 (init_seed 0, data_seed 0), step 3: ValueError: needs" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    spec.write_text(spec.read_text().replace("lr: 0.1", "lr: fast"))
    assert main(["train", str(spec), "--store", str(broken / "store"), "--no-progress"]) == 2
