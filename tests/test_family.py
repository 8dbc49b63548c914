"""Seed families: reproducible training, the store as a cache, resume, corruption, concurrency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main
import harness.provenance
from harness.config import fingerprint, load_family
from harness.family import obtain_family
from harness.provenance import code_digest, store_fingerprint, torch_digest
from harness.store import Store
from harness.train import TrainingDiverged, train_seed

SPEC = """
    name: tiny
    seeds: [0, 1]
    model: {n_layers: 1, n_heads: 2, d_model: 16, d_mlp: 32}
    data: {vocab_size: 32, seq_len: 64}
    train: {lr: 1.0e-3, steps: %(steps)d, batch_size: 4, checkpoint_every: %(ckpt)d, device: cpu}
    probe: {n_prompts: 4}
"""


def spec(tmp_path: Path, steps: int = 12, ckpt: int = 5, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(SPEC % {"steps": steps, "ckpt": ckpt}))
    return path


def weights(fam) -> list[dict[str, torch.Tensor]]:
    return [s.model.state_dict() for s in fam.seeds]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_bits_different_seeds_differ(tmp_path):
    cfg = load_family(spec(tmp_path))
    a = obtain_family(cfg, store=tmp_path / "s1")
    b = obtain_family(cfg, store=tmp_path / "s2")
    wa, wb = weights(a), weights(b)
    assert same(wa[0], wb[0]) and same(wa[1], wb[1])
    assert not same(wa[0], wa[1])
    assert a.seeds[0].log["threads"] == 1 and a.trained_now == 2


def test_second_run_trains_nothing_and_relevant_keys_retrain(tmp_path):
    cfg = load_family(spec(tmp_path))
    store = Store(tmp_path / "store")
    assert obtain_family(cfg, store=store).trained_now == 2
    again = obtain_family(cfg, store=store)
    assert again.trained_now == 0
    # probe set and seed list changes reuse what is stored; a new seed trains alone
    assert obtain_family(cfg.replace(probe={"n_prompts": 9}), store=store).trained_now == 0
    assert obtain_family(cfg.replace(seeds=[0, 1, 2]), store=store).trained_now == 1
    assert obtain_family(cfg.replace(train={"lr": 2e-3}), store=store).trained_now == 2


def test_cli_says_nothing_to_train(tmp_path, capsys):
    path = spec(tmp_path)
    args = ["train", str(path), "--store", str(tmp_path / "store"), "--no-progress"]
    assert main(args) == 0
    assert "trained 2 of 2 seeds" in capsys.readouterr().out
    assert main(args) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert main(["ls", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "init0-data0" in out and "init1-data1" in out and "2 seeds in" in out


def test_corrupt_weights_are_detected_and_retrained(tmp_path, caplog):
    cfg = load_family(spec(tmp_path))
    store = Store(tmp_path / "store")
    first = weights(obtain_family(cfg, store=store))
    path = store.seed_dir(store_fingerprint(cfg), "cpu-t1", "init0-data0") / "weights.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    fam = obtain_family(cfg, store=store)
    assert fam.trained_now == 1 and fam.seeds[0].trained_now
    assert "weights.pt" in caplog.text
    assert same(weights(fam)[0], first[0]), "the retrained seed must be the same bits"


def test_resume_from_checkpoint_is_bitwise_identical(tmp_path):
    cfg = load_family(spec(tmp_path, steps=12, ckpt=5))
    full = train_seed(cfg, 0, device=torch.device("cpu"))
    saved = {}
    train_seed(cfg, 0, device=torch.device("cpu"), on_checkpoint=lambda step, p: saved.setdefault(step, p))
    assert sorted(saved) == [5, 10]
    resumed = train_seed(cfg, 0, device=torch.device("cpu"), resume=saved[5])
    assert resumed.log["resumed_from"] == 5
    assert same(resumed.state_dict, full.state_dict)
    assert resumed.log["curve"] == full.log["curve"]


def test_killed_training_resumes_on_rerun(tmp_path):
    path = spec(tmp_path, steps=300, ckpt=10)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "harness.cli", "train", str(path), "--store", str(store), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not list(store.glob("*/*/init0-data0/checkpoint.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cfg = load_family(path).replace(seeds=[0])
    fam = obtain_family(cfg, store=store)
    assert fam.trained_now == 1
    assert 10 <= fam.seeds[0].log["resumed_from"] < 300
    uninterrupted = train_seed(cfg, 0, device=torch.device("cpu"))
    assert same(fam.seeds[0].model.state_dict(), uninterrupted.state_dict)


def test_two_concurrent_runs_train_each_seed_once(tmp_path):
    path = spec(tmp_path, steps=60, ckpt=1000)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "harness.cli", "train", str(path), "--store", str(store), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    new_lines = sum(out.count("(new)") for out, _ in outs)
    assert new_lines == 2, outs


def test_nan_loss_stops_with_seed_and_step(tmp_path):
    cfg = load_family(spec(tmp_path)).replace(train={"lr": 1e12, "steps": 50})
    with pytest.raises(TrainingDiverged, match=r"seed 1 \(init_seed 1, data_seed 1\): the loss became .* at step \d+"):
        train_seed(cfg, 1, device=torch.device("cpu"))
    store = Store(tmp_path / "store")
    with pytest.raises(TrainingDiverged):
        obtain_family(cfg, store=store)
    assert not store.entries(), "a diverged seed must not be stored"


def test_edited_user_optimizer_retrains_but_keeps_the_fingerprint(tmp_path):
    """Editing the code behind an import path must not serve stale weights from the cache,
    yet it is the change a baseline is *tested* against, so the fingerprint stays."""
    module = tmp_path / "seedstab_test_user_opt.py"
    module.write_text("import torch\nclass MySGD(torch.optim.SGD):\n    pass\n")
    path = spec(tmp_path)
    path.write_text(path.read_text().replace("train: {", "train: {optimizer: 'seedstab_test_user_opt:MySGD', "))
    cfg = load_family(path)
    store = Store(tmp_path / "store")
    fp = fingerprint(cfg)
    assert obtain_family(cfg, store=store).trained_now == 2
    assert obtain_family(cfg, store=store).trained_now == 0
    # comments and formatting are no change to the code: the cache still serves
    module.write_text("import torch\n\n# a comment\nclass MySGD( torch.optim.SGD ):\n    pass\n")
    assert obtain_family(cfg, store=store).trained_now == 0
    module.write_text(module.read_text() + "MySGD.edited = True\n")
    again = obtain_family(cfg, store=store)
    assert again.trained_now == 2 and fingerprint(cfg) == fp and again.fingerprint == fp


def test_edited_file_of_a_user_package_retrains(tmp_path):
    """``pkg:Cls`` names the package, but Cls lives in ``pkg/impl.py``: editing that file
    (or any other file of the package) retrains; the fingerprint stays."""
    pkg = tmp_path / "seedstab_test_pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .impl import MyAdam\n")
    impl = pkg / "impl.py"
    impl.write_text("import torch\nclass MyAdam(torch.optim.Adam):\n    pass\n")
    path = spec(tmp_path)
    path.write_text(path.read_text().replace("train: {", "train: {optimizer: 'seedstab_test_pkgx:MyAdam', "))
    cfg = load_family(path)
    store = Store(tmp_path / "store")
    fp, code = fingerprint(cfg), code_digest(cfg)
    assert obtain_family(cfg, store=store).trained_now == 2
    assert obtain_family(cfg, store=store).trained_now == 0
    impl.write_text(impl.read_text() + "MyAdam.edited = True\n")
    assert code_digest(cfg) != code
    again = obtain_family(cfg, store=store)
    assert again.trained_now == 2 and fingerprint(cfg) == fp and again.fingerprint == fp
    # a helper the class may import is part of the package, so it counts too
    code = code_digest(cfg)
    (pkg / "helpers.py").write_text("SCALE = 2\n")
    assert code_digest(cfg) != code


def test_edited_harness_training_code_retrains_but_keeps_the_fingerprint(tmp_path, monkeypatch):
    """An edit to the harness's training code changes harness_digest(): the store
    must retrain, while the fingerprint (what baselines are keyed by) stays."""
    cfg = load_family(spec(tmp_path))
    store = Store(tmp_path / "store")
    fp = fingerprint(cfg)
    assert obtain_family(cfg, store=store).trained_now == 2
    assert obtain_family(cfg, store=store).trained_now == 0
    monkeypatch.setattr(harness.provenance, "harness_digest", lambda: "0123abcd")
    assert store_fingerprint(cfg) == f"{fp}-h0123abcd-t{torch_digest()}"
    again = obtain_family(cfg, store=store)
    assert again.trained_now == 2 and fingerprint(cfg) == fp and again.fingerprint == fp
    assert obtain_family(cfg, store=store).trained_now == 0


_SHARER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from harness.config import load_family
    from harness.family import obtain_family

    spec, store, work, name = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    cfg = load_family(spec)
    (work / f"ready-{name}").touch()
    while not (work / "go").exists():
        time.sleep(0.005)
    fam = obtain_family(cfg, store=store)
    (work / f"{name}.json").write_text(json.dumps({
        "trained": [s.seed for s in fam.seeds if s.trained_now],
        "seeds": [s.seed for s in fam.seeds],
        "by": {str(s.seed): s.log["trained_by"]["pid"] for s in fam.seeds}}))
    """
)


def test_two_processes_share_a_family_seed_by_seed(tmp_path):
    """Each process takes the next free seed (a try-lock), so both train at once, each seed
    exactly once, and each ends with every seed (waiting only at the end)."""
    path = spec(tmp_path, steps=50, ckpt=1000)
    path.write_text(path.read_text().replace("seeds: [0, 1]", "seeds: [0, 1, 2, 3]"))
    script = tmp_path / "sharer.py"
    script.write_text(_SHARER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    names = ("a", "b")
    procs = [subprocess.Popen([sys.executable, str(script), str(path), str(tmp_path / "store"), str(tmp_path), n],
                              env=env, stderr=subprocess.PIPE, text=True) for n in names]
    try:
        deadline = time.time() + 120
        while not all((tmp_path / f"ready-{n}").exists() for n in names):
            assert time.time() < deadline, "children did not start"
            assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll() is not None]
            time.sleep(0.01)
        (tmp_path / "go").touch()
        errs = [p.communicate(timeout=300)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    out = {n: __import__("json").loads((tmp_path / f"{n}.json").read_text()) for n in names}
    a, b = (set(out[n]["trained"]) for n in names)
    assert not a & b and a | b == {0, 1, 2, 3}, out
    assert a and b, f"one process trained every seed while the other waited: {out}"
    assert all(out[n]["seeds"] == [0, 1, 2, 3] for n in names)
    pids = {p.pid for p in procs}
    for n in names:  # each seed's log names the process that trained it, the same for both
        assert set(out[n]["by"].values()) <= pids and out[n]["by"] == out[names[0]]["by"]
