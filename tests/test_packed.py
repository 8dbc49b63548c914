"""Packed families: k seeds as one batched model. Each seed keeps its own init and data,
packed runs repeat bit for bit, the store keeps them apart from one-at-a-time runs, and the
project's own paired comparison cannot tell a packed family from a one-at-a-time one
(while it does tell a change of learning rate)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.analysis import AnalysisOptions, analyze_family, compare_families
from harness.config import load_family
from harness.family import obtain_family, store_key
from harness.model import build_model
from harness.packed import pack_support, train_packed
from harness.train import TrainingDiverged, train_seed
from harness.units import TrainUnit, run_unit

CPU = torch.device("cpu")

SPEC = """
    name: tiny
    seeds: [0, 1, 2, 3]
    model: {n_layers: 2, n_heads: 2, d_model: 32, attn_only: true}
    data: {vocab_size: 32, seq_len: 32, synthetic: {span_min: 4, span_max: 8}}
    train: {lr: 3.0e-3, steps: %(steps)d, batch_size: 8, device: cpu}
    probe: {n_prompts: 16}
"""


def family_cfg(tmp_path: Path, steps: int = 20):
    path = tmp_path / "f.yaml"
    path.write_text(textwrap.dedent(SPEC % {"steps": steps}))
    return load_family(path)


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_packed_runs_repeat_bit_for_bit_and_stay_close_to_one_at_a_time(tmp_path):
    cfg = family_cfg(tmp_path)
    first = train_packed(cfg, (0, 1, 2), device=CPU)
    again = train_packed(cfg, (0, 1, 2), device=CPU)
    alone = [train_seed(cfg, s, device=CPU) for s in (0, 1, 2)]
    for a, b, c in zip(first, again, alone):
        assert max_diff(a.state_dict, b.state_dict) == 0.0, "packed runs must repeat bit for bit"
        assert a.log["curve"] == b.log["curve"]
        # one-at-a-time differs only in rounding (batched kernels sum in another order) ...
        assert max_diff(a.state_dict, c.state_dict) < 1e-4
        assert [r[0] for r in a.log["curve"]] == [r[0] for r in c.log["curve"]]
        assert np.allclose([r[1] for r in a.log["curve"]], [r[1] for r in c.log["curve"]], atol=1e-4)
    # ... while different seeds differ by far more: the test can tell seeds apart
    assert max_diff(first[0].state_dict, first[1].state_dict) > 1e-2


def test_each_packed_seed_starts_from_its_own_init(tmp_path, monkeypatch):
    cfg = family_cfg(tmp_path).replace(train={"optimizer": "sgd", "steps": 1})
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, closure=None: None)  # weights stay put
    for seed, result in zip((2, 0), train_packed(cfg, (2, 0), device=CPU)):
        init = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                           init_seed=cfg.seed_pair(seed)[0]).state_dict()
        assert max_diff(result.state_dict, init) == 0.0


def test_a_diverging_packed_seed_is_named_with_its_first_bad_step(tmp_path):
    cfg = family_cfg(tmp_path, steps=40).replace(train={"lr": 1e12})
    with pytest.raises(TrainingDiverged) as packed:
        train_packed(cfg, (1, 2), device=CPU)
    with pytest.raises(TrainingDiverged) as alone:
        train_seed(cfg, 1, device=CPU)
    assert "seed 1 (init_seed 1, data_seed 1)" in str(packed.value)
    step = lambda e: int(str(e.value).split("at step ")[1].split(";")[0])  # noqa: E731
    assert step(packed) == step(alone), "the first bad step, not the step it was noticed at"


def test_units_pickle_without_their_stream_and_run_where_they_land(tmp_path):
    import io
    import pickle

    cfg = family_cfg(tmp_path, steps=3)
    unit = TrainUnit(cfg=cfg, seeds=(0, 1), device="cpu", pack=2, progress="lines",
                     progress_stream=io.StringIO())
    back = pickle.loads(pickle.dumps(unit))
    assert back.progress_stream is None and back == unit
    results = run_unit(back)
    assert [seed for seed, _, _ in results] == [0, 1]
    assert all(log["pack"] == 2 and log["trained_by"]["pid"] > 0 for _, _, log in results)


def test_store_keeps_packed_and_one_at_a_time_apart(tmp_path, caplog):
    cfg = family_cfg(tmp_path, steps=5)
    store = tmp_path / "store"
    seq = obtain_family(cfg, store=store)  # auto on the CPU: one at a time
    packed = obtain_family(cfg, store=store, pack=2)
    assert seq.trained_now == 4 and packed.trained_now == 4, "packed entries never stand in for sequential"
    assert {s.log["pack"] for s in packed.seeds} == {2} and {s.log["pack"] for s in seq.seeds} == {1}
    assert obtain_family(cfg, store=store, pack=2).trained_now == 0
    assert store_key(CPU, 1, 2) == "cpu-t1-pk2" and store_key(CPU, 1) == "cpu-t1"
    # an optimizer that is not element-wise-known falls back, and says why
    other = cfg.replace(train={"optimizer": "rmsprop"})
    assert pack_support(other) is not None
    with caplog.at_level(logging.INFO, logger="harness.family"):
        fam = obtain_family(other, store=store, pack=4, seeds=(0,))
        fam = obtain_family(other, store=store, pack=4, seeds=(0, 1))
    assert {s.log["pack"] for s in fam.seeds} == {1}
    assert "not packed" in caplog.text and "rmsprop" in caplog.text
    with pytest.raises(ValueError, match="pack: expected"):
        obtain_family(cfg, store=store, pack=0)


@pytest.fixture(scope="module")
def three_families(tmp_path_factory):
    """One family trained one seed at a time, the same packed, and a real change (lr / 10)
    packed; 4 seeds, 2 layers, 150 steps."""
    tmp = tmp_path_factory.mktemp("packed")
    cfg = family_cfg(tmp, steps=150)
    store = tmp / "store"
    opts = AnalysisOptions(n_boot=200, step0=False, importance=False, cross_layer=False,
                           kernels=("linear",), prompt_lengths=(1.0,))
    seq = analyze_family(obtain_family(cfg, store=store, pack=1), options=opts)
    packed = analyze_family(obtain_family(cfg, store=store, pack=4), options=opts)
    slower = analyze_family(obtain_family(cfg.replace(train={"lr": 3e-4}), store=store, pack=4), options=opts)
    return seq, packed, slower


METRICS = ["head_stability.all_anchors", "content_specific.all_anchors", "resid_cka.linear.mid"]


def test_paired_comparison_finds_no_difference_between_packed_and_one_at_a_time(three_families):
    seq, packed, slower = three_families
    same = compare_families(seq, packed, metrics=METRICS, n_boot=200, adjust="none")
    changed = compare_families(seq, slower, metrics=METRICS, n_boot=200, adjust="none")
    for name in METRICS:
        s, c = same[name], changed[name]
        assert s.paired and c.paired
        assert np.all(np.asarray(s.lo) <= 0) and np.all(np.asarray(s.hi) >= 0), (name, s)
        assert np.max(np.abs(s.delta)) < 1e-3, (name, s.delta)
    # the same comparison does see a real change: |delta| far above the packing noise,
    # and an interval that excludes 0
    biggest = max(np.max(np.abs(changed[n].delta)) for n in METRICS)
    assert biggest > 0.05, {n: changed[n].delta for n in METRICS}
    assert any(np.any((np.asarray(changed[n].lo) > 0) | (np.asarray(changed[n].hi) < 0)) for n in METRICS)
