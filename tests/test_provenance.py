"""Provenance: a harness, library or runtime change retrains (never reads as a regression,
never hides one), and training leaves the caller's torch state as it found it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import harness.provenance as provenance
from harness.config import FamilyConfig, family_from_dict, fingerprint
from harness.provenance import (code_digest, harness_digest, metric_digest, runtime_versions,
                                store_fingerprint, torch_digest)
from harness.store import _check_key

HARNESS = Path(provenance.__file__).resolve().parent

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "model": {"n_layers": 1, "n_heads": 2, "d_model": 16, "d_mlp": 32},
    "data": {"vocab_size": 32, "seq_len": 40},
    "train": {"lr": 1e-3, "steps": 6, "batch_size": 4, "checkpoint_every": 3, "device": "cpu"},
    "probe": {"n_prompts": 4},
}


def tiny(**train) -> FamilyConfig:
    """The tiny family with ``train`` keys replaced."""
    raw = {**TINY, "train": {**TINY["train"], **train}}
    return family_from_dict(raw)


# ------------------------------------------------------------------------- the store key


def test_store_key_format_is_readable_and_a_valid_store_key():
    cfg = tiny()
    key = store_fingerprint(cfg)
    assert key == f"{fingerprint(cfg)}-h{harness_digest()}-t{torch_digest()}"
    assert re.fullmatch(r"[0-9a-f]{16}-h[0-9a-f]{8}-t[0-9a-f]{8}", key)
    assert _check_key("fingerprint", key) == key
    versions = runtime_versions()
    assert set(versions) == {"torch", "cuda", "cudnn", "numpy", "scipy", "python", "seedstab"}
    assert versions["torch"] == str(torch.__version__)
    assert versions["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_store_key_changes_with_torch_cuda_and_cudnn_versions(monkeypatch):
    cfg = tiny()
    keys = [store_fingerprint(cfg)]
    monkeypatch.setattr(torch, "__version__", "2.99.0+cpu")
    keys.append(store_fingerprint(cfg))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    keys.append(store_fingerprint(cfg))
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    keys.append(store_fingerprint(cfg))
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90200)
    keys.append(store_fingerprint(cfg))
    assert len(set(keys)) == len(keys), keys
    # what the family means is untouched: baselines stay valid
    assert len({k.split("-")[0] for k in keys}) == 1
    assert runtime_versions()["cudnn"] == "90200" and runtime_versions()["cuda"] == "12.4"


# -------------------------------------------------------------------- installed libraries


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    """An installed distribution ``fakeopt`` 1.0 in a site-packages of its own: the optimizer
    class in ``fakeopt/impl.py``, its per-step arithmetic in ``fakeopt/_kernels.py``."""
    site = tmp_path / "site-packages"
    pkg = site / "fakeopt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from fakeopt.impl import FakeSGD\n")
    (pkg / "impl.py").write_text(textwrap.dedent("""
        import torch
        from fakeopt._kernels import scale

        class FakeSGD(torch.optim.SGD):
            @torch.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(scale())
                return super().step(closure)
    """))
    (pkg / "_kernels.py").write_text("def scale():\n    return 1.0\n")
    info = site / "fakeopt-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeopt\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("fakeopt\n")
    (info / "RECORD").write_text("".join(f"{p},,\n" for p in (
        "fakeopt/__init__.py", "fakeopt/impl.py", "fakeopt/_kernels.py", "fakeopt-1.0.dist-info/METADATA",
        "fakeopt-1.0.dist-info/top_level.txt", "fakeopt-1.0.dist-info/RECORD")))
    monkeypatch.syspath_prepend(str(site))
    roots = provenance._install_roots()
    monkeypatch.setattr(provenance, "_install_roots", lambda: roots + (site.resolve(),))
    try:
        yield site
    finally:
        for name in [m for m in sys.modules if m == "fakeopt" or m.startswith("fakeopt.")]:
            del sys.modules[name]


def test_store_key_follows_every_file_and_the_version_of_an_installed_library(fake_site):
    assert provenance._installed(fake_site / "fakeopt" / "impl.py")
    cfg = tiny(optimizer="fakeopt:FakeSGD")
    assert provenance._distributions()["fakeopt"] == ["fakeopt"]
    code, key = code_digest(cfg), store_fingerprint(cfg)
    assert code is not None and key.endswith(f"-code{code}")
    assert code_digest(cfg) == code, "the same files give the same digest"

    # a helper the optimizer calls every step, neither the named module nor the defining one
    (fake_site / "fakeopt" / "_kernels.py").write_text("def scale():\n    return 0.5\n")
    assert code_digest(cfg) != code and store_fingerprint(cfg) != key
    code, key = code_digest(cfg), store_fingerprint(cfg)

    impl = fake_site / "fakeopt" / "impl.py"
    impl.write_text(impl.read_text() + "FakeSGD.edited = True\n")
    assert code_digest(cfg) != code and store_fingerprint(cfg) != key
    code, key = code_digest(cfg), store_fingerprint(cfg)

    metadata = fake_site / "fakeopt-1.0.dist-info" / "METADATA"
    metadata.write_text(metadata.read_text().replace("Version: 1.0", "Version: 1.1"))
    assert code_digest(cfg) != code and store_fingerprint(cfg) != key
    assert fingerprint(cfg) == key.split("-")[0], "what the family means is unchanged"


def test_a_library_without_import_path_has_no_code_digest():
    assert code_digest(tiny()) is None
    assert code_digest(tiny(optimizer="adamw")) is None


# ------------------------------------------------------------------------- harness code


@pytest.fixture
def harness_copy(tmp_path) -> Path:
    root = tmp_path / "harness"
    shutil.copytree(HARNESS, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path.name} no longer holds {old!r}"
    path.write_text(text.replace(old, new, 1))


def test_harness_digest_follows_training_code_not_docstrings(harness_copy):
    root = harness_copy
    base = harness_digest(root=root)
    assert base == harness_digest(), "a copy of the harness has the harness's digest"
    family = root / "family.py"
    edit(family, '"""Seed families:', '"""Seed families (docstring edit):')  # the module docstring
    edit(family, '"""The baseline class of a device', '"""The baseline (class) of a device')
    family.write_text(family.read_text() + "\n# a comment\n")
    assert harness_digest(root=root) == base
    for name in ("store.py", "analysis/analyze.py", "metrics/heads.py", "plugin.py"):
        (root / name).write_text((root / name).read_text() + "\nEDITED = True\n")
    assert harness_digest(root=root) == base, "only the training path counts"
    for name in ("family.py", "config.py", "spec_validate.py", "import_paths.py", "model.py", "train.py", "data.py"):
        before = harness_digest(root=root)
        (root / name).write_text((root / name).read_text() + "\nEDITED = True\n")
        assert harness_digest(root=root) != before, name


def test_metric_digest_follows_measurement_code_not_docstrings(harness_copy):
    root = harness_copy
    base = metric_digest(root=root)
    assert base == metric_digest() and base != harness_digest()
    heads = root / "metrics" / "heads.py"
    text = heads.read_text()
    assert text.startswith('"""')
    heads.write_text('"""Edited. ' + text[3:])
    assert metric_digest(root=root) == base
    for name in ("family.py", "train.py", "store.py", "verdict.py"):
        (root / name).write_text((root / name).read_text() + "\nEDITED = True\n")
    assert metric_digest(root=root) == base, "training code is not measurement code"
    for name in ("metrics/heads.py", "metrics/cka.py", "analysis/analyze.py", "capture.py", "results.py"):
        before = metric_digest(root=root)
        (root / name).write_text((root / name).read_text() + "\nEDITED = True\n")
        assert metric_digest(root=root) != before, name
    (root / "metrics" / "new_metric.py").write_text("X = 1\n")
    assert metric_digest(root=root) != before, "a new metric module counts"


def test_a_missing_harness_file_is_an_error_naming_it(harness_copy):
    (harness_copy / "family.py").unlink()
    with pytest.raises(FileNotFoundError, match="family.py"):
        harness_digest(root=harness_copy)


# ------------------------------------------------------------- torch state while training

DROPOUT_MODEL = '''
import torch
from torch import nn

from harness.model import GPT


class DropoutGPT(GPT):
    """The built-in GPT with dropout on the embeddings: training draws from the global RNG."""

    def __init__(self, cfg, *, vocab_size, n_ctx):
        super().__init__(cfg, vocab_size=vocab_size, n_ctx=n_ctx)
        self.drop = nn.Dropout(0.3)

    def forward(self, tokens):
        x = self.drop(self.embed(tokens) + self.pos_embed(torch.arange(tokens.shape[1], device=tokens.device)))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))


def build(cfg, *, vocab_size, n_ctx):
    return DropoutGPT(cfg, vocab_size=vocab_size, n_ctx=n_ctx)
'''


@pytest.fixture
def dropout_family(tmp_path, monkeypatch) -> FamilyConfig:
    """A tiny family of a user model with dropout (``model.custom``), 12 steps, checkpoints
    every 5."""
    name = "seedstab_test_dropout_model"
    (tmp_path / f"{name}.py").write_text(DROPOUT_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    raw = {**TINY, "model": {**TINY["model"], "custom": f"{name}:build"},
           "train": {**TINY["train"], "steps": 12, "checkpoint_every": 5}}
    try:
        yield family_from_dict(raw)
    finally:
        sys.modules.pop(name, None)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_dropout_model_resumes_bitwise(dropout_family):
    from harness.train import train_seed

    cpu = torch.device("cpu")
    full = train_seed(dropout_family, 0, device=cpu)
    assert same(train_seed(dropout_family, 0, device=cpu).state_dict, full.state_dict)
    saved: dict[int, dict] = {}
    train_seed(dropout_family, 0, device=cpu, on_checkpoint=lambda step, p: saved.setdefault(step, p))
    assert sorted(saved) == [5, 10]
    assert isinstance(saved[5]["rng"]["cpu"], torch.Tensor) and saved[5]["rng"]["cuda"] is None
    torch.rand(7)  # the caller's draws between the two runs change nothing
    for step in (5, 10):
        resumed = train_seed(dropout_family, 0, device=cpu, resume=saved[step])
        assert resumed.log["resumed_from"] == step
        assert same(resumed.state_dict, full.state_dict), f"resumed at step {step}"
        assert resumed.log["curve"] == full.log["curve"]


def test_the_dropout_model_draws_from_the_seeded_global_rng(dropout_family, monkeypatch):
    import harness.train

    cpu = torch.device("cpu")
    full = train_seed_state(dropout_family, cpu)
    monkeypatch.setattr(harness.train, "global_seed", lambda init, data: 12345)
    assert not same(train_seed_state(dropout_family, cpu), full), "dropout must draw from the global RNG"


def train_seed_state(cfg: FamilyConfig, device: torch.device) -> dict[str, torch.Tensor]:
    from harness.train import train_seed

    return train_seed(cfg, 0, device=device).state_dict


def test_a_dropout_model_resumes_bitwise_through_the_store(dropout_family, tmp_path):
    """The RNG states survive the store's checkpoint files (weights-only payloads)."""
    from harness.family import obtain_family
    from harness.store import Store
    from harness.train import train_seed

    cfg = dropout_family.replace(seeds=[0])
    store = Store(tmp_path / "store")
    saved: dict[int, dict] = {}
    train_seed(cfg, 0, device=torch.device("cpu"), on_checkpoint=lambda step, p: saved.setdefault(step, p))
    store.save_checkpoint(store_fingerprint(cfg), "cpu-t1", cfg.seed_key(0), step=5, payload=saved[5])
    fam = obtain_family(cfg, store=store)
    assert fam.seeds[0].log["resumed_from"] == 5
    assert same(fam.seeds[0].model.state_dict(), train_seed(cfg, 0, device=torch.device("cpu")).state_dict)


def test_training_leaves_the_callers_global_rng_alone(dropout_family):
    from harness.train import train_seed

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_seed(dropout_family, 0, device=torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)


def test_global_seed_is_fixed_per_seed_pair():
    from harness.train import global_seed

    assert global_seed(0, 0) == global_seed(0, 0)
    assert len({global_seed(0, 0), global_seed(0, 1), global_seed(1, 0), global_seed(1, 1)}) == 4
    assert all(0 <= global_seed(i, j) < 2**63 for i in range(3) for j in range(3))


@pytest.fixture
def caller_settings():
    """The caller's own torch settings (2 threads, deterministic off), restored after."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


def test_obtain_family_restores_the_callers_torch_settings(tmp_path, caller_settings):
    from harness.family import obtain_family

    fam = obtain_family(tiny(), store=tmp_path / "store")
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    log = fam.seeds[0].log
    assert log["threads"] == 1 and log["deterministic"] is True and log["deterministic_warn_only"] is False
    assert log["versions"] == runtime_versions()
    # loading from the store restores them as well
    assert obtain_family(tiny(), store=tmp_path / "store").trained_now == 0
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    obtain_family(tiny(), store=tmp_path / "store")
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()


def test_settings_are_restored_when_training_diverges(tmp_path, caller_settings):
    from harness.family import obtain_family
    from harness.train import TrainingDiverged

    with pytest.raises(TrainingDiverged):
        obtain_family(tiny(lr=1e12, steps=50), store=tmp_path / "store")
    assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()


def test_cuda_settings_and_workspace_variable_are_restored(monkeypatch):
    """The CUDA switches are plain attributes: pinned inside, restored after, also when the
    block raises, even without a GPU."""
    from harness.train import deterministic, precision_switches

    cudnn = torch.backends.cudnn
    cuda = torch.device("cuda")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(cudnn, "deterministic", False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    switches = precision_switches(cuda)
    assert {name for name, *_ in switches} >= {"cuda.matmul", "cudnn.conv", "cudnn.rnn"} or \
        {name for name, *_ in switches} == {"cuda.matmul.allow_tf32", "cudnn.allow_tf32"}
    before = [getattr(obj, attr) for _, obj, attr, _ in switches]
    with pytest.raises(RuntimeError, match="inside"):
        with deterministic(cuda, 1) as settings:
            assert settings["cublas_workspace_config"] == ":4096:8"
            assert (cudnn.deterministic, cudnn.benchmark) == (True, False)
            assert settings["cudnn_benchmark"] is False and settings["cudnn_deterministic"] is True
            assert all(getattr(obj, attr) == pinned for _, obj, attr, pinned in switches)
            assert set(settings["fp32_math"].values()) <= {"ieee", False}
            raise RuntimeError("inside")
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert (cudnn.deterministic, cudnn.benchmark) == (False, True)
    assert [getattr(obj, attr) for _, obj, attr, _ in switches] == before
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic(cuda, 1) as settings:
        assert settings["cublas_workspace_config"] == ":16:8", "a user's own setting is kept"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_a_sessions_lower_matmul_precision_neither_changes_the_bits_nor_is_lost(tmp_path):
    """``set_float32_matmul_precision("medium")`` in the caller's session makes CPU matmuls
    bf16; training pins full fp32 and gives the caller's setting back."""
    from harness.family import obtain_family

    cfg = tiny()
    reference = obtain_family(cfg, store=tmp_path / "a")
    try:
        torch.set_float32_matmul_precision("medium")
        fam = obtain_family(cfg, store=tmp_path / "b")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision("highest")
    assert all(same(a.model.state_dict(), b.model.state_dict()) for a, b in zip(reference.seeds, fam.seeds))
    assert set(fam.seeds[0].log["fp32_math"].values()) <= {"ieee"}


def test_without_the_per_backend_api_the_legacy_tf32_flags_are_pinned_and_restored():
    """Older torch has only ``allow_tf32``; run in a fresh interpreter, because writing the
    legacy flags next to the per-backend ones leaves torch's precision getters inconsistent."""
    code = textwrap.dedent("""
        import torch
        import harness.train as train
        train._has_fp32_precision_api = lambda: False
        m, c = torch.backends.cuda.matmul, torch.backends.cudnn
        m.allow_tf32, c.allow_tf32 = True, True
        assert train.precision_switches(torch.device("cpu")) == []
        with train.deterministic(torch.device("cuda"), 1) as settings:
            assert (m.allow_tf32, c.allow_tf32) == (False, False)
            assert settings["fp32_math"] == {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False}
        assert (m.allow_tf32, c.allow_tf32) == (True, True)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
