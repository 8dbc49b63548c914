"""The README's worked examples load, and each change trains and is captured (a few steps)."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.capture import capture_family
from harness.config import load_suite
from harness.family import obtain_family

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_worked_examples_train_through_the_protocol(tmp_path):
    suite = load_suite(EXAMPLES / "check_changes.yaml")
    assert set(suite.families) == {"adam", "lion", "qk_norm", "parallel"}
    assert suite.families["lion"].train.optimizer == "my_optim:Lion"
    for name in ("lion", "qk_norm", "parallel"):
        cfg = suite.families[name].replace(seeds=[0, 1], train={"steps": 3})
        fam = obtain_family(cfg, store=tmp_path)
        assert fam.trained_now == 2
        tokens = torch.randint(cfg.vocab_size, (2, cfg.data.seq_len), generator=torch.Generator().manual_seed(0))
        cap = capture_family(fam.models, tokens, seeds=cfg.seeds)
        assert cap.patterns.shape == (2, 2, 2, 4, cfg.data.seq_len, cfg.data.seq_len)
        assert cap.z.shape[-2:] == (4, 16)
