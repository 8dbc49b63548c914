"""Tests for harness.store: round trips, corruption handling, atomicity, locking."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import store as store_mod
from harness.store import Checkpoint, Entry, SeedRecord, Store, StoreError

FP = "ab12cd34ef56"
DEV = "cpu"
KEY = "init0-data0"
REPO = Path(__file__).resolve().parents[1]


def make_state(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        [
            ("wte.weight", torch.randn(16, 8, generator=g)),
            ("blocks.0.attn.c_attn.weight", torch.randn(24, 8, generator=g)),
            ("ln_f.weight", torch.randn(8, generator=g).to(torch.bfloat16)),
            ("pos.idx", torch.arange(5, dtype=torch.int64)),
            ("scalar", torch.tensor(float("nan"))),  # bitwise, not ==: NaN must survive
        ]
    )


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(-1).view(torch.uint8), b[k].view(-1).view(torch.uint8)), k


CONFIG = {"name": "tiny", "model": {"n_layer": 2, "d_model": 8}, "train": {"lr": 1e-3}}
LOG = {"steps": 10, "final_loss": 2.5, "loss": [3.0, 2.5], "threads": 1, "tokens_per_s": 1e4}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def save(store: Store, key: str = KEY, seed: int = 0, **kw) -> SeedRecord:
    return store.save_seed(
        FP, DEV, key, state_dict=make_state(seed),
        config=kw.get("config", CONFIG), log=kw.get("log", LOG),
    )


def flip_byte(path: Path, offset: int = -10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_with_valid_checksum(d: Path, name: str, data: bytes) -> None:
    """Replace a file *and* fix its manifest record: only content checks can catch it."""
    (d / name).write_bytes(data)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": store_mod._sha256(data), "size": len(data)}
    (d / "manifest.json").write_text(json.dumps(manifest))


def quarantined(store: Store, key: str = KEY) -> list[Path]:
    return sorted(store.seed_dir(FP, DEV, key).parent.glob(f"{key}.corrupt-*"))


# ------------------------------------------------------------------ round trip


def test_round_trip_is_bitwise(store: Store) -> None:
    assert not store.has_seed(FP, DEV, KEY)
    assert store.load_seed(FP, DEV, KEY) is None
    saved = save(store)
    assert store.has_seed(FP, DEV, KEY)
    rec = store.load_seed(FP, DEV, KEY)
    assert isinstance(rec, SeedRecord)
    assert (rec.fingerprint, rec.device_class, rec.seed_key) == (FP, DEV, KEY)
    assert rec.path == store.root / FP / DEV / KEY
    assert_bitwise_equal(rec.state_dict, make_state(0))
    assert_bitwise_equal(saved.state_dict, make_state(0))
    assert rec.config == CONFIG and rec.log == LOG
    assert saved.config == CONFIG and saved.log == LOG
    assert all(t.device.type == "cpu" for t in rec.state_dict.values())


def test_files_and_manifest_layout(store: Store) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    names = sorted(p.name for p in d.iterdir())
    assert names == ["config.json", "log.json", "manifest.json", "weights.pt"]
    text = (d / "config.json").read_text()
    assert text == json.dumps(CONFIG, sort_keys=True, indent=2) + "\n"
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["schema"] == store_mod.SCHEMA_VERSION
    assert set(manifest["files"]) == {"weights.pt", "config.json", "log.json"}
    for name, rec in manifest["files"].items():
        data = (d / name).read_bytes()
        assert rec == {"sha256": store_mod._sha256(data), "size": len(data)}
    assert manifest["created"].endswith("+00:00")


def test_overwrite_replaces_entry(store: Store) -> None:
    save(store, seed=0)
    save(store, seed=1, log={**LOG, "steps": 20})
    rec = store.load_seed(FP, DEV, KEY)
    assert rec is not None and rec.log["steps"] == 20
    assert_bitwise_equal(rec.state_dict, make_state(1))


def test_seeds_are_independent(store: Store) -> None:
    save(store, key="init0-data0", seed=0)
    save(store, key="init1-data1", seed=1)
    rec = store.load_seed(FP, DEV, "init1-data1")
    assert rec is not None
    assert_bitwise_equal(rec.state_dict, make_state(1))
    assert not store.has_seed(FP, "cuda-h100", "init0-data0")
    assert not store.has_seed("ffff", DEV, "init0-data0")


# ------------------------------------------------------------------ corruption


def test_truncated_weights_moved_aside_and_retrainable(store: Store, caplog) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    w = d / "weights.pt"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert not store.has_seed(FP, DEV, KEY)
    assert d.exists()  # has_seed has no side effects
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    [rec] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(w) in rec.getMessage() and "truncated" in rec.getMessage()
    assert not d.exists()
    [aside] = quarantined(store)
    assert (aside / "weights.pt").exists()  # kept for inspection
    assert aside.name in rec.getMessage()
    # the caller retrains into a clean dir; the quarantined one stays invisible
    save(store, seed=3)
    again = store.load_seed(FP, DEV, KEY)
    assert again is not None
    assert_bitwise_equal(again.state_dict, make_state(3))
    assert [e.seed_key for e in store.entries()] == [KEY]


@pytest.mark.parametrize("name", ["log.json", "config.json", "weights.pt", "manifest.json"])
def test_flipped_byte_detected(store: Store, caplog, name: str) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    flip_byte(d / name, offset=len((d / name).read_bytes()) // 2)
    assert not store.has_seed(FP, DEV, KEY)
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert name in caplog.text
    assert len(quarantined(store)) == 1


def test_missing_file_detected(store: Store, caplog) -> None:
    save(store)
    (store.seed_dir(FP, DEV, KEY) / "log.json").unlink()
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert "log.json" in caplog.text and "missing" in caplog.text


def test_torch_load_failure_with_valid_checksum(store: Store, caplog) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    rewrite_with_valid_checksum(d, "weights.pt", b"not a zip file at all")
    assert not store.has_seed(FP, DEV, KEY)
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert "weights.pt" in caplog.text and "torch.load" in caplog.text


def test_weights_not_a_state_dict(store: Store, caplog) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    buf = io.BytesIO()
    torch.save([torch.zeros(2)], buf)
    rewrite_with_valid_checksum(d, "weights.pt", buf.getvalue())
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert "not a dict of str -> Tensor" in caplog.text


@pytest.mark.parametrize(
    "data, msg",
    [
        (b"{not json", "unreadable JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b"\xff\xfe", "unreadable JSON"),
    ],
)
def test_bad_json_with_valid_checksum(store: Store, caplog, data: bytes, msg: str) -> None:
    save(store)
    rewrite_with_valid_checksum(store.seed_dir(FP, DEV, KEY), "config.json", data)
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert "config.json" in caplog.text and msg in caplog.text


@pytest.mark.parametrize(
    "edit, msg",
    [
        (lambda m: m.pop("files"), "no 'files' table"),
        (lambda m: m["files"].pop("log.json"), "malformed"),
        (lambda m: m["files"]["weights.pt"].update(size="12"), "malformed"),
        (lambda m: m.update(schema="1"), "schema is '1'"),
        (lambda m: m.update(seed_key="init9-data9"), "belongs to"),
    ],
)
def test_malformed_manifest(store: Store, caplog, edit, msg: str) -> None:
    save(store)
    path = store.seed_dir(FP, DEV, KEY) / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert str(path) + ":" in caplog.text
    assert msg in caplog.text
    assert len(quarantined(store)) == 1


def test_newer_schema_is_an_error_not_corruption(store: Store) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["schema"] = store_mod.SCHEMA_VERSION + 1
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="newer seedstab.*upgrade") as exc:
        store.load_seed(FP, DEV, KEY)
    assert str(d / "manifest.json") in str(exc.value)
    assert d.exists() and not quarantined(store)  # another version's data is not destroyed


def test_missing_manifest_is_absent(store: Store, caplog) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    (d / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert not store.has_seed(FP, DEV, KEY)
        assert store.load_seed(FP, DEV, KEY) is None
    assert caplog.text == ""  # a crash before the manifest is not corruption
    assert d.exists() and not quarantined(store)
    assert store.entries() == []
    save(store, seed=2)
    assert store.has_seed(FP, DEV, KEY)


def test_quarantine_falls_back_to_delete(store: Store, monkeypatch, caplog) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    flip_byte(d / "weights.pt")

    def no_rename(*a, **k):
        raise OSError("cross-device")

    monkeypatch.setattr(store_mod.os, "rename", no_rename)
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert not d.exists() and not quarantined(store)
    assert "deleted" in caplog.text


def test_quarantine_impossible_raises(store: Store, monkeypatch) -> None:
    save(store)
    d = store.seed_dir(FP, DEV, KEY)
    flip_byte(d / "weights.pt")

    def fail(*a, **k):
        raise OSError("read-only filesystem")

    monkeypatch.setattr(store_mod.os, "rename", fail)
    monkeypatch.setattr(store_mod.shutil, "rmtree", fail)
    with pytest.raises(StoreError, match="neither moved aside nor deleted.*by hand") as exc:
        store.load_seed(FP, DEV, KEY)
    assert str(d) in str(exc.value)


# ------------------------------------------------------------------ atomicity


def _leftover_tmp(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.endswith(".tmp")] if d.exists() else []


def test_crash_on_first_replace_leaves_nothing(store: Store, monkeypatch) -> None:
    def crash(src, dst):
        assert Path(src).exists()  # the temp file was fully written first
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(StoreError, match="could not write .*weights.pt"):
        save(store)
    monkeypatch.undo()
    d = store.seed_dir(FP, DEV, KEY)
    assert not store.has_seed(FP, DEV, KEY)
    assert store.load_seed(FP, DEV, KEY) is None
    assert _leftover_tmp(d) == []
    assert not (d / "weights.pt").exists()


def test_crash_before_manifest_leaves_no_complete_entry(store: Store, monkeypatch) -> None:
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if Path(dst).name == "manifest.json":
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(StoreError, match="manifest.json"):
        save(store)
    monkeypatch.undo()
    d = store.seed_dir(FP, DEV, KEY)
    assert (d / "weights.pt").exists() and not (d / "manifest.json").exists()
    assert _leftover_tmp(d) == []
    assert not store.has_seed(FP, DEV, KEY)
    assert store.load_seed(FP, DEV, KEY) is None
    assert store.entries() == []
    save(store)
    assert store.has_seed(FP, DEV, KEY)


def test_crash_while_overwriting_does_not_mix_old_and_new(
    store: Store, monkeypatch, caplog
) -> None:
    save(store, seed=0)
    real_replace = os.replace

    def crash_on_log(src, dst):
        if Path(dst).name == "log.json":
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_log)
    with pytest.raises(StoreError):
        save(store, seed=1)
    monkeypatch.undo()
    # new weights are on disk but the old manifest is gone: not complete, not corrupt
    assert not store.has_seed(FP, DEV, KEY)
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_seed(FP, DEV, KEY) is None
    assert caplog.text == "" and not quarantined(store)


# ------------------------------------------------------------------ checkpoints


def make_payload() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    g = torch.Generator().manual_seed(7)
    torch.randn(3, generator=g)  # advance the generator past its seed state
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),  # int keys, tuples, floats, bools, None
        "generators": {"init": g.get_state(), "data": torch.Generator().manual_seed(1).get_state()},
        "step": 5,
        "losses": [3.0, 2.9, float("inf")],
        "done": False,
        "note": None,
    }


def test_checkpoint_round_trip(store: Store) -> None:
    assert store.load_checkpoint(FP, DEV, KEY) is None
    payload = make_payload()
    store.save_checkpoint(FP, DEV, KEY, step=5, payload=payload)
    ck = store.load_checkpoint(FP, DEV, KEY)
    assert isinstance(ck, Checkpoint) and ck.step == 5
    assert_bitwise_equal(ck.payload["model"], payload["model"])
    assert ck.payload["optimizer"]["param_groups"] == payload["optimizer"]["param_groups"]
    for i, st in payload["optimizer"]["state"].items():
        assert_bitwise_equal(ck.payload["optimizer"]["state"][i], st)
    g = torch.Generator()
    g.set_state(ck.payload["generators"]["init"])
    ref = torch.Generator()
    ref.set_state(payload["generators"]["init"])
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=ref))
    assert ck.payload["losses"] == [3.0, 2.9, float("inf")]
    assert ck.payload["done"] is False and ck.payload["note"] is None
    # a newer checkpoint replaces the older one; the seed is still not complete
    store.save_checkpoint(FP, DEV, KEY, step=9, payload={"step": 9})
    assert store.load_checkpoint(FP, DEV, KEY).step == 9  # type: ignore[union-attr]
    assert not store.has_seed(FP, DEV, KEY)


@pytest.mark.parametrize(
    "damage, msg",
    [
        (lambda d: flip_byte(d / "checkpoint.pt"), "sha256 mismatch"),
        (lambda d: (d / "checkpoint.pt").write_bytes(b"x"), "truncated"),
        (lambda d: (d / "checkpoint.json").unlink(), "missing, but checkpoint.pt exists"),
        (lambda d: (d / "checkpoint.json").write_text("{"), "unreadable JSON"),
        (lambda d: (d / "checkpoint.json").write_text('{"step": -1}'), "step is -1"),
        (lambda d: (d / "checkpoint.pt").unlink(), "file is missing"),
        (
            lambda d: (d / "checkpoint.json").write_text('{"step": 3}'),
            "record for checkpoint.pt is malformed",
        ),
    ],
)
def test_corrupt_checkpoint_is_dropped(store: Store, caplog, damage, msg: str) -> None:
    store.save_checkpoint(FP, DEV, KEY, step=3, payload={"x": torch.ones(100)})
    d = store.seed_dir(FP, DEV, KEY)
    damage(d)
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.load_checkpoint(FP, DEV, KEY) is None
    assert msg in caplog.text and "checkpoint" in caplog.text
    assert not (d / "checkpoint.pt").exists() and not (d / "checkpoint.json").exists()
    assert store.load_checkpoint(FP, DEV, KEY) is None


def test_checkpoint_not_loadable_with_valid_checksum(store: Store, caplog) -> None:
    store.save_checkpoint(FP, DEV, KEY, step=1, payload={"x": 1})
    d = store.seed_dir(FP, DEV, KEY)
    for data, msg in ((b"garbage", "torch.load"), (None, "not a dict")):
        if data is None:
            buf = io.BytesIO()
            torch.save([1, 2], buf)
            data = buf.getvalue()
        (d / "checkpoint.pt").write_bytes(data)
        (d / "checkpoint.json").write_text(
            json.dumps({"step": 1, "sha256": store_mod._sha256(data), "size": len(data)})
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="harness.store"):
            assert store.load_checkpoint(FP, DEV, KEY) is None
        assert msg in caplog.text


def test_save_seed_removes_checkpoint(store: Store) -> None:
    store.save_checkpoint(FP, DEV, KEY, step=3, payload={"x": torch.ones(2)})
    d = store.seed_dir(FP, DEV, KEY)
    assert (d / "checkpoint.pt").exists()
    save(store)
    assert not (d / "checkpoint.pt").exists() and not (d / "checkpoint.json").exists()
    assert store.load_checkpoint(FP, DEV, KEY) is None
    assert store.has_seed(FP, DEV, KEY)


def test_checkpoint_crash_leaves_old_checkpoint_or_none(store: Store, monkeypatch) -> None:
    store.save_checkpoint(FP, DEV, KEY, step=1, payload={"x": torch.zeros(3)})
    real_replace = os.replace

    def crash_on_meta(src, dst):
        if Path(dst).name == "checkpoint.json":
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_meta)
    with pytest.raises(StoreError):
        store.save_checkpoint(FP, DEV, KEY, step=2, payload={"x": torch.ones(3)})
    monkeypatch.undo()
    # new .pt, old .json: never a checkpoint whose step and content disagree
    assert store.load_checkpoint(FP, DEV, KEY) is None


# ------------------------------------------------------------------ payload validation


class Opaque:
    pass


@pytest.mark.parametrize(
    "payload, where",
    [
        ({"obj": Opaque()}, "payload.obj"),
        ({"nested": {"list": [1, Opaque()]}}, r"payload.nested.list\[1\]"),
        ({"arr": np.zeros(3)}, "payload.arr"),
        ({("a", 1): torch.ones(1)}, "dict key"),
        ({"s": {1, 2}}, "payload.s"),
        ({"b": b"bytes"}, "payload.b"),
    ],
)
def test_non_weights_only_payload_rejected(store: Store, payload: dict, where: str) -> None:
    with pytest.raises(StoreError, match=where) as exc:
        store.save_checkpoint(FP, DEV, KEY, step=1, payload=payload)
    assert "checkpoint.pt" in str(exc.value)
    assert not store.seed_dir(FP, DEV, KEY).exists()  # rejected before touching the disk


def test_payload_must_be_a_dict_and_step_an_int(store: Store) -> None:
    with pytest.raises(StoreError, match="expected a dict, got list"):
        store.save_checkpoint(FP, DEV, KEY, step=1, payload=[1])  # type: ignore[arg-type]
    for step in (-1, 1.0, True, "3"):
        with pytest.raises(StoreError, match="step must be an int"):
            store.save_checkpoint(FP, DEV, KEY, step=step, payload={})  # type: ignore[arg-type]


def test_tensor_subclass_rejected(store: Store) -> None:
    class MyTensor(torch.Tensor):
        pass

    t = torch.ones(2).as_subclass(MyTensor)
    with pytest.raises(StoreError, match="tensor subclass MyTensor"):
        store.save_checkpoint(FP, DEV, KEY, step=1, payload={"t": t})


def test_round_trip_failure_rejected(store: Store, monkeypatch) -> None:
    def refuse(*a, **k):
        raise RuntimeError("Unsupported global")

    monkeypatch.setattr(store_mod.torch, "load", refuse)
    with pytest.raises(StoreError, match="does not round-trip.*Unsupported global"):
        store.save_checkpoint(FP, DEV, KEY, step=1, payload={"x": torch.ones(1)})


def test_bad_seed_inputs_rejected(store: Store) -> None:
    with pytest.raises(StoreError, match="str -> Tensor"):
        store.save_seed(
            FP, DEV, KEY, state_dict={"w": [1.0]}, config=CONFIG, log=LOG  # type: ignore[dict-item]
        )
    with pytest.raises(StoreError, match="config.json: not JSON-serializable"):
        store.save_seed(FP, DEV, KEY, state_dict=make_state(), config={"x": Opaque()}, log=LOG)
    with pytest.raises(StoreError, match="log.json: expected a dict"):
        store.save_seed(
            FP, DEV, KEY, state_dict=make_state(), config=CONFIG, log=[1]  # type: ignore[arg-type]
        )
    assert not store.has_seed(FP, DEV, KEY)


@pytest.mark.parametrize(
    "bad", ["", "../x", "a/b", ".hidden", "x.lock", "k.corrupt-1", "y.tmp", "a" * 129, 3]
)
def test_bad_keys_rejected(store: Store, bad) -> None:
    with pytest.raises(ValueError, match="seed_key"):
        store.seed_dir(FP, DEV, bad)
    with pytest.raises(ValueError, match="fingerprint"):
        store.has_seed(bad, DEV, KEY)


# ------------------------------------------------------------------ unusable root


def test_root_under_a_file_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="unusable") as exc:
        Store(blocker / "store")
    assert str(blocker / "store") in str(exc.value)
    with pytest.raises(StoreError, match="unusable") as exc:
        Store(blocker)
    assert str(blocker) in str(exc.value)


def test_root_that_becomes_unusable_raises_on_write(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    # replace the fingerprint dir by a file: every write below it fails, whoever we run as
    (store.root / FP).write_text("in the way")
    with pytest.raises(StoreError, match="could not create") as exc:
        save(store)
    assert str(store.root) in str(exc.value)
    with pytest.raises(StoreError, match="could not create"):
        store.lock(FP, DEV, KEY).__enter__()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_root_raises(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o500)
    try:
        store = Store(root)
        with pytest.raises(StoreError) as exc:
            save(store)
        assert str(root) in str(exc.value)
    finally:
        root.chmod(0o700)


# ------------------------------------------------------------------ locking

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    from harness.store import Store

    root, work, name = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    store = Store(root)
    (work / f"ready-{name}").touch()
    while not (work / "go").exists():
        time.sleep(0.005)
    requested = time.time()
    with store.lock("ab12cd34ef56", "cpu", "init0-data0"):
        start = time.time()
        if store.load_seed("ab12cd34ef56", "cpu", "init0-data0") is None:
            time.sleep(0.8)  # "training"
            store.save_seed("ab12cd34ef56", "cpu", "init0-data0",
                            state_dict={"w": torch.full((3,), float(len(name)))},
                            config={"name": name}, log={"steps": 1})
            action = "trained"
        else:
            action = "loaded"
        end = time.time()
    with open(work / "events.jsonl", "a") as f:
        f.write(json.dumps({"name": name, "requested": requested, "start": start,
                            "end": end, "action": action}) + "\\n")
    """
)


def test_lock_serializes_two_processes(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(root), str(tmp_path), name], env=env)
        for name in ("a", "bb")
    ]
    try:
        deadline = time.time() + 40
        while not all((tmp_path / f"ready-{n}").exists() for n in ("a", "bb")):
            assert time.time() < deadline, "children did not start"
            assert all(p.poll() is None for p in procs), "a child died before the barrier"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        for p in procs:
            assert p.wait(timeout=40) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    events = sorted(
        (json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()),
        key=lambda e: e["start"],
    )
    first, second = events
    assert first["end"] <= second["start"], "critical sections overlapped"
    assert second["requested"] < first["end"], "no contention: the test proved nothing"
    assert [first["action"], second["action"]] == ["trained", "loaded"]
    assert Store(root).has_seed(FP, DEV, KEY)


def test_lock_timeout(store: Store) -> None:
    with store.lock(FP, DEV, KEY) as d:
        assert d == store.seed_dir(FP, DEV, KEY)
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="timed out after 0.2s") as exc:
            with store.lock(FP, DEV, KEY, timeout=0.2):
                pass
        assert time.monotonic() - t0 >= 0.15
        assert str(d) + ".lock" in str(exc.value)
        with store.lock(FP, DEV, "init1-data1", timeout=0):  # other seeds are not blocked
            pass
    with store.lock(FP, DEV, KEY, timeout=0):  # released on exit
        pass
    with pytest.raises(ValueError, match="timeout"):
        store.lock(FP, DEV, KEY, timeout=-1).__enter__()


def test_try_lock_yields_none_at_once_when_held(store: Store) -> None:
    with store.lock(FP, DEV, KEY) as d:
        t0 = time.monotonic()
        with store.try_lock(FP, DEV, KEY) as got:
            assert got is None
        assert time.monotonic() - t0 < 0.5, "try_lock must not wait"
        with store.try_lock(FP, DEV, "init1-data1") as other:  # other seeds are free
            assert other == store.seed_dir(FP, DEV, "init1-data1")
            with store.try_lock(FP, DEV, "init1-data1") as again:  # held now, even by us
                assert again is None
    with store.try_lock(FP, DEV, KEY) as got:  # released on exit
        assert got == d
    with pytest.raises(KeyError):
        with store.try_lock(FP, DEV, KEY):
            raise KeyError("boom")
    with store.lock(FP, DEV, KEY, timeout=0):  # released on an exception too
        pass


def test_lock_released_on_exception(store: Store) -> None:
    with pytest.raises(KeyError):
        with store.lock(FP, DEV, KEY):
            raise KeyError("boom")
    with store.lock(FP, DEV, KEY, timeout=0):
        pass


# ------------------------------------------------------------------ listing and family meta


def test_entries_lists_complete_seeds_only(store: Store, caplog) -> None:
    assert store.entries() == []
    save(store, key="init1-data1", seed=1)
    save(store, key="init0-data0", seed=0, log={"steps": 7, "final_loss": 1.25})
    store.save_seed(
        "00ff", "cuda-h100", "init0-data0", state_dict=make_state(), config={}, log={}
    )
    save(store, key="init2-data2")
    (store.seed_dir(FP, DEV, "init2-data2") / "manifest.json").unlink()  # incomplete
    save(store, key="init3-data3")
    flip_byte(store.seed_dir(FP, DEV, "init3-data3") / "weights.pt")  # corrupt
    store.save_checkpoint(FP, DEV, "init4-data4", step=1, payload={})  # only a checkpoint
    with store.lock(FP, DEV, "init5-data5"):  # only a lock file
        pass
    (store.root / "README").write_text("junk")
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        entries = store.entries()
    assert [(e.fingerprint, e.device_class, e.seed_key) for e in entries] == [
        ("00ff", "cuda-h100", "init0-data0"),
        (FP, DEV, "init0-data0"),
        (FP, DEV, "init1-data1"),
    ]
    assert "init3-data3" in caplog.text and "sha256 mismatch" in caplog.text
    e = entries[1]
    assert isinstance(e, Entry)
    assert (e.name, e.steps, e.final_loss) == ("tiny", 7, 1.25)
    assert entries[0].name is None and entries[0].steps is None and entries[0].final_loss is None
    assert e.path == store.seed_dir(FP, DEV, "init0-data0")
    sizes = [(e.path / n).stat().st_size for n in ("weights.pt", "config.json", "log.json")]
    assert e.size_bytes == sum(sizes)
    assert e.created.endswith("+00:00")
    assert store.seed_dir(FP, DEV, "init3-data3").exists()  # entries() is read-only


def test_family_meta(store: Store, caplog) -> None:
    assert store.family_meta(FP) is None
    path = store.save_family_meta(FP, config=CONFIG)
    assert path == store.root / FP / "family.json"
    assert store.family_meta(FP) == CONFIG
    assert json.loads(path.read_text())["config"] == CONFIG
    path.write_text('{"config": ')
    with caplog.at_level(logging.WARNING, logger="harness.store"):
        assert store.family_meta(FP) is None
    assert "family.json" in caplog.text
    path.write_text('{"schema": 1}')
    assert store.family_meta(FP) is None
    with pytest.raises(StoreError, match="not JSON-serializable"):
        store.save_family_meta(FP, config={"x": Opaque()})


def test_records_are_frozen(store: Store) -> None:
    rec = save(store)
    with pytest.raises(AttributeError):
        rec.seed_key = "other"  # type: ignore[misc]
