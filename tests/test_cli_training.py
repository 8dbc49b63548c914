"""How the ``seedstab`` CLI trains families: --progress, --pack, --executor and --ray-address
reach ``obtain_family`` (captured by a stand-in: nothing trains), and bad combinations are one
line on stderr with exit code 2."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest

from harness import cli

SPEC = """
name: tiny
seeds: [0, 1, 2]
model: {n_layers: 1, n_heads: 2, d_model: 16, attn_only: true}
data: {vocab_size: 32, seq_len: 32}
train: {steps: 3, batch_size: 4}
"""


class FakeExecutor:
    def __init__(self, name: str, address: str | None) -> None:
        self.name, self.address = name, address

    def close(self) -> None:
        pass


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []

    def fake_obtain(cfg, **kw):
        calls.append(kw)
        return SimpleNamespace(seeds=(), trained_now=0, fingerprint="fp", device_class="cpu")

    monkeypatch.setattr("harness.family.obtain_family", fake_obtain)
    monkeypatch.setattr("harness.executors.make_executor",
                        lambda name, *, address=None: FakeExecutor(name, address))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    return str(path)


def train(spec: str, tmp_path, *args: str) -> int:
    return cli.main(["train", spec, "--store", str(tmp_path / "store"), *args])


def test_train_defaults(captured, spec, tmp_path):
    assert train(spec, tmp_path) == 0
    (kw,) = captured
    assert (kw["progress"], kw["pack"], kw["executor"].name, kw["executor"].address) == \
        ("auto", None, "local", None)


def test_train_passes_each_option(captured, spec, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())  # "ray is installed"
    assert train(spec, tmp_path, "--progress", "lines", "--pack", "3", "--executor", "ray",
                 "--ray-address", "ray://head:10001") == 0
    assert train(spec, tmp_path, "--no-progress", "--pack", "auto") == 0
    monkeypatch.setenv("RAY_ADDRESS", "ray://env:10001")
    assert train(spec, tmp_path, "--executor", "ray") == 0
    got = [(c["progress"], c["pack"], c["executor"].name, c["executor"].address) for c in captured]
    assert got == [("lines", 3, "ray", "ray://head:10001"), ("off", None, "local", None),
                   ("auto", None, "ray", "ray://env:10001")]


@pytest.mark.parametrize("args, message", [
    (("--pack", "0"), "--pack: expected auto or a positive integer, got '0'"),
    (("--progress", "loud"), "--progress: invalid choice: 'loud'"),
    (("--executor", "slurm"), "--executor: invalid choice: 'slurm'"),
])
def test_bad_values_are_usage_errors(captured, spec, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        train(spec, tmp_path, *args)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not captured


def test_contradictions_are_one_line(captured, spec, tmp_path, capsys, monkeypatch):
    assert train(spec, tmp_path, "--ray-address", "ray://head:10001") == 2
    assert capsys.readouterr().err.strip() == \
        "seedstab: error: --ray-address is for --executor ray; add it or drop the address"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert train(spec, tmp_path, "--executor", "ray") == 2
    assert "--executor ray needs the [ray] extra: pip install 'seedstab[ray]'" in capsys.readouterr().err
    assert not captured


def test_check_takes_the_same_training_options():
    args = cli.build_parser().parse_args(["check", "s.yaml", "--progress", "bar", "--pack", "2",
                                          "--executor", "local", "--seedstab-update-baselines"])
    with cli._training(args) as kw:
        assert (kw["progress"], kw["pack"], kw["executor"].name, args.update_baselines) == \
            ("bar", 2, "local", True)
