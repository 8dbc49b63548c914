"""Train one seed of a family: the paper's loop (constant lr, no warmup, no clipping, fp32).

Pure with respect to the disk: checkpoints go out through a callback and come back in as
an argument, so the store (harness.store) stays the only module that writes files. Pure
with respect to torch's process-wide state too: determinism flags, the thread count and
the global RNG are set for the duration of training and restored afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ConfigError, FamilyConfig, is_optimizer_factory, resolve_optimizer
import harness.data as data_mod
from harness.model import build_model
from harness.provenance import runtime_versions

log = logging.getLogger(__name__)


# cuBLAS needs a fixed workspace for deterministic results (CUDA >= 10.2). cuBLAS reads the
# variable when it creates its first handle, so it is set (unless the user set one) when
# this module is imported, before any training can touch CUDA.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; names the seed and the step."""


class TrainingError(RuntimeError):
    """Something raised inside training (a model's forward, an optimizer's step): one line
    naming the family, the seed and the step, the original exception chained."""


@contextlib.contextmanager
def deterministic(device: torch.device, threads: int) -> Iterator[dict[str, Any]]:
    """Deterministic kernels, ``threads`` CPU threads and full-precision fp32 math inside
    the block; on CUDA also deterministic, non-benchmarking cuDNN. Everything is restored
    on exit, also when the block raises, so the caller's session keeps its own settings.

    Saved and restored: ``torch.use_deterministic_algorithms`` (with its ``warn_only``),
    ``torch.get_num_threads()``, the switches of :func:`precision_switches`, and on CUDA
    ``cudnn.deterministic``, ``cudnn.benchmark`` and the ``CUBLAS_WORKSPACE_CONFIG``
    environment variable (set when unset, removed again afterwards). cuBLAS reads that
    variable when it first creates a handle, so it holds only if no CUDA work ran before.
    Yields :func:`determinism_settings` as they are inside the block.
    """
    cuda = device.type == "cuda"
    cudnn = torch.backends.cudnn
    saved_algorithms = (torch.are_deterministic_algorithms_enabled(),
                        torch.is_deterministic_algorithms_warn_only_enabled())
    saved_threads = torch.get_num_threads()
    switches = precision_switches(device)
    saved_switches = [getattr(obj, attr) for _, obj, attr, _ in switches]
    saved_cudnn = (cudnn.deterministic, cudnn.benchmark) if cuda else None
    workspace_was_unset = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    try:
        if cuda:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
            cudnn.deterministic, cudnn.benchmark = True, False
        for _, obj, attr, pinned in switches:
            setattr(obj, attr, pinned)
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.set_num_threads(threads)
        yield determinism_settings(device)
    finally:
        torch.use_deterministic_algorithms(saved_algorithms[0], warn_only=saved_algorithms[1])
        torch.set_num_threads(saved_threads)
        for (_, obj, attr, _), value in reversed(list(zip(switches, saved_switches))):
            setattr(obj, attr, value)
        if saved_cudnn is not None:
            cudnn.deterministic, cudnn.benchmark = saved_cudnn
        if cuda and workspace_was_unset:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def precision_switches(device: torch.device) -> list[tuple[str, Any, str, Any]]:
    """``(name, object, attribute, pinned value)`` of each switch that lets fp32 math run
    in lower precision (TF32 or bf16), with the value that keeps it full fp32.

    With torch's per-backend API (``fp32_precision``, in newer torch): oneDNN's matmul, conv
    and rnn always (a session's ``torch.set_float32_matmul_precision("medium")`` makes CPU
    matmuls bf16) and, on CUDA, cuBLAS matmul and cuDNN conv and rnn, pinned to ``"ieee"``;
    saving and restoring these gives back exactly what the caller had, which the legacy
    flags, once mixed with them, do not. On older torch: ``allow_tf32`` of cuBLAS and cuDNN
    (CUDA only), pinned to False.
    """
    b = torch.backends
    if _has_fp32_precision_api():
        backends = {"mkldnn.matmul": b.mkldnn.matmul, "mkldnn.conv": b.mkldnn.conv, "mkldnn.rnn": b.mkldnn.rnn}
        if device.type == "cuda":
            backends.update({"cuda.matmul": b.cuda.matmul, "cudnn.conv": b.cudnn.conv, "cudnn.rnn": b.cudnn.rnn})
        return [(name, obj, "fp32_precision", "ieee") for name, obj in backends.items()]
    if device.type == "cuda":
        return [("cuda.matmul.allow_tf32", b.cuda.matmul, "allow_tf32", False),
                ("cudnn.allow_tf32", b.cudnn, "allow_tf32", False)]
    return []


def _has_fp32_precision_api() -> bool:
    b = torch.backends
    return all(hasattr(getattr(getattr(b, mod, None), sub, None), "fp32_precision")
               for mod, sub in (("mkldnn", "matmul"), ("mkldnn", "conv"), ("mkldnn", "rnn"),
                                ("cudnn", "conv"), ("cudnn", "rnn"))) \
        and hasattr(b.cuda.matmul, "fp32_precision")


def determinism_settings(device: torch.device) -> dict[str, Any]:
    """The settings that decide the bits, as the training log records them: ``threads``,
    ``deterministic``, ``deterministic_warn_only``, ``fp32_math`` (``{switch name: value}``
    of :func:`precision_switches`); on CUDA also ``cudnn_deterministic``,
    ``cudnn_benchmark`` and ``cublas_workspace_config``."""
    out: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "fp32_math": {name: getattr(obj, attr) for name, obj, attr, _ in precision_switches(device)},
    }
    if device.type == "cuda":
        out.update(cudnn_deterministic=torch.backends.cudnn.deterministic,
                   cudnn_benchmark=torch.backends.cudnn.benchmark,
                   cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    return out


def global_seed(init_seed: int, data_seed: int) -> int:
    """The seed of torch's global RNG while training seed pair (``init_seed``, ``data_seed``):
    the first 8 bytes of ``sha256("seedstab-global-rng:{init_seed}:{data_seed}")`` read
    little-endian and shifted right by one (an int in [0, 2**63)). Dropout and stochastic
    optimizers draw from it; initialisation and data order have generators of their own."""
    digest = hashlib.sha256(f"seedstab-global-rng:{init_seed}:{data_seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _rng_state(device: torch.device) -> dict[str, torch.Tensor | None]:
    """The global RNG states training draws from: ``cpu`` and, on CUDA, the training
    device's (``cuda``, else None); ByteTensors on the CPU, so a checkpoint may hold them."""
    cuda = torch.cuda.get_rng_state(_cuda_index(device)) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], _cuda_index(device))


@dataclass(frozen=True)
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    log: dict[str, Any]


def data_source(cfg: FamilyConfig):
    """The training-data source of a family (synthetic language or a file)."""
    d = cfg.data
    if d.kind == "synthetic":
        return data_mod.SyntheticLanguage(vocab_size=cfg.vocab_size, seq_len=d.seq_len,
                                 language_seed=d.language_seed, **dict(d.synthetic))
    if d.kind == "text":
        return data_mod.TextFileSource(d.path, seq_len=d.seq_len)
    return data_mod.TokenFileSource(d.path, seq_len=d.seq_len, vocab_size=d.vocab_size)


def build_optimizer(cfg: FamilyConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The spec's optimizer for ``model``: a class gets ``model.parameters()``, a factory
    (``module:function``) gets the model itself; both get ``lr``, ``weight_decay`` (if set:
    all parameters, as in the paper) and ``optimizer_kwargs``."""
    opt = resolve_optimizer(cfg.train.optimizer, source=cfg.source)
    kwargs = dict(cfg.train.optimizer_kwargs)
    kwargs["lr"] = cfg.train.lr
    if cfg.train.weight_decay is not None:
        kwargs["weight_decay"] = cfg.train.weight_decay
    if not is_optimizer_factory(opt):
        return opt(model.parameters(), **kwargs)
    out = opt(model, **kwargs)
    if not all(callable(getattr(out, m, None)) for m in ("step", "zero_grad", "state_dict", "load_state_dict")):
        raise ConfigError(cfg.source, "train.optimizer", f"{cfg.train.optimizer} returned "
                          f"{type(out).__name__}, not an optimizer (step, zero_grad, state_dict)")
    return out


def _set_mode(optimizer: Any, mode: str) -> None:
    """``optimizer.train()`` / ``optimizer.eval()`` for optimizers that have them
    (schedule-free optimizers: the weights to evaluate and store are an average, not the
    training point). Training calls ``train()`` before the first step and ``eval()`` after
    the last, so the stored (and analysed) weights are the evaluation weights; checkpoints
    keep the training point and the optimizer state, which is what resuming needs."""
    fn = getattr(optimizer, mode, None)
    if callable(fn):
        fn()


def lm_losses(model: nn.Module, tokens: torch.Tensor, copy_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next-token cross-entropy (mean) and, given ``copy_mask``, the mean over copied target
    tokens (detached; NaN when no target is copied), else None."""
    logits = model(tokens)  # (B, T, V)
    per_tok = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                              tokens[:, 1:].reshape(-1), reduction="none")  # (B*(T-1),)
    copied = None
    if copy_mask is not None:
        # a masked mean, not per_tok[m]: no boolean gather, so no wait for the device;
        # NaN when nothing is copied
        m = copy_mask[:, 1:].reshape(-1).to(per_tok.dtype)  # (B*(T-1),)
        copied = (per_tok.detach() * m).sum() / m.sum()
    return per_tok.mean(), copied


def train_seed(cfg: FamilyConfig, seed: int, *, device: torch.device,
               resume: dict[str, Any] | None = None,
               on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
               on_step: Callable[[int, float, float], None] | None = None) -> TrainResult:
    """Train family seed ``seed`` from scratch or from a checkpoint payload ``resume``.

    ``on_checkpoint(step, payload)`` is called every ``train.checkpoint_every`` steps with
    everything needed to resume bitwise-identically (weights, optimizer state, the data
    generator's and the global RNG's states, the loss curve); ``on_step(step, loss,
    tokens_per_s)`` at every step whose loss is fetched from the device: the log steps
    (every ``train.log_every``, the first and the last) and the checkpoint steps. Losses
    stay on the device in between, so a GPU never waits for the host. Raises
    :class:`TrainingDiverged` naming the first step whose loss was not finite.

    Runs under :func:`deterministic` with ``train.threads`` threads, and with the global
    torch RNG (CPU, and the training device on CUDA) forked and seeded by
    :func:`global_seed`: the same seed trains the same bits whatever the caller drew
    before, and the caller's RNG state, flags and thread count are untouched afterwards.
    """
    init_seed, data_seed = cfg.seed_pair(seed)
    with seeded_scope(device, cfg.train.threads, global_seed(init_seed, data_seed)) as settings:
        where = {"step": 0 if resume is None else int(resume["step"])}
        try:
            return _train(cfg, seed, device=device, resume=resume, on_checkpoint=on_checkpoint,
                          on_step=on_step, settings=settings, where=where)
        except (ConfigError, TrainingDiverged, KeyboardInterrupt):
            raise
        except Exception as e:
            raise TrainingError(f"{cfg.name}: seed {seed} (init_seed {init_seed}, data_seed {data_seed}), "
                                f"step {where['step']}: {type(e).__name__}: {e}") from e


@contextlib.contextmanager
def seeded_scope(device: torch.device, threads: int, seed: int) -> Iterator[dict[str, Any]]:
    """:func:`deterministic` plus the global RNG (CPU, and ``device`` on CUDA) forked and
    seeded with ``seed``; yields the determinism settings."""
    rng_devices = [_cuda_index(device)] if device.type == "cuda" else []
    with deterministic(device, threads) as settings, torch.random.fork_rng(devices=rng_devices):
        # not torch.manual_seed: it would reseed every CUDA device, beyond what fork_rng restores
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(rng_devices[0]):
                torch.cuda.manual_seed(seed)
        yield settings


def diverged(cfg: FamilyConfig, seed: int, value: float, step: int) -> TrainingDiverged:
    init_seed, data_seed = cfg.seed_pair(seed)
    return TrainingDiverged(
        f"{cfg.name}: seed {seed} (init_seed {init_seed}, data_seed {data_seed}): the loss became "
        f"{value} at step {step}; lower train.lr or check the optimizer settings")


def logs_at(done: int, tc: Any) -> bool:
    """Whether the step that makes ``done`` steps writes a row of the loss curve."""
    return done % tc.log_every == 0 or done == tc.steps or done == 1


class LossWindow:
    """The losses of the steps since the last fetch, kept on the device: :meth:`fetch`
    copies them to the host in one transfer (the one wait for the device)."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []  # () or (k,) each
        self._copies: dict[int, torch.Tensor] = {}  # step -> copy loss, at the log steps

    def add(self, step: int, loss: torch.Tensor, copy_loss: torch.Tensor | None = None) -> None:
        self._steps.append(step)
        self._losses.append(loss.detach())
        if copy_loss is not None:
            self._copies[step] = copy_loss.detach()

    def fetch(self) -> list[tuple[int, list[float], list[float] | None]]:
        """``(step, losses, copy losses or None)`` per step, in order; the window empties.
        ``losses`` has one value (or one per packed seed)."""
        if not self._steps:
            return []
        copy_steps = list(self._copies)
        tensors = self._losses + [self._copies[s] for s in copy_steps]
        host = torch.stack([t.reshape(-1).float() for t in tensors]).cpu().tolist()  # (n, k)
        copies = dict(zip(copy_steps, host[len(self._steps):]))
        out = [(s, row, copies.get(s)) for s, row in zip(self._steps, host)]
        self._steps, self._losses, self._copies = [], [], {}
        return out


def _train(cfg: FamilyConfig, seed: int, *, device: torch.device, resume: dict[str, Any] | None,
           on_checkpoint: Callable[[int, dict[str, Any]], None] | None,
           on_step: Callable[[int, float, float], None] | None, settings: dict[str, Any],
           where: dict[str, int]) -> TrainResult:
    """The loop of :func:`train_seed`, inside its RNG and determinism scope; ``where["step"]``
    follows the step in progress (for error messages)."""
    init_seed, data_seed = cfg.seed_pair(seed)
    source = data_source(cfg)
    model = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                        init_seed=init_seed, source=cfg.source).to(device)
    optimizer = build_optimizer(cfg, model)
    generator = torch.Generator().manual_seed(data_seed)  # data order: CPU generator, always
    curve: list[list[float]] = []
    start, elapsed = 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        _set_rng_state(resume["rng"], device)
        curve = [list(r) for r in resume["curve"]]
        start, elapsed = int(resume["step"]), float(resume["elapsed"])
        log.info("seed %d: resuming at step %d of %d", seed, start, cfg.train.steps)

    tc = cfg.train
    tokens_per_step = tc.batch_size * (cfg.data.seq_len - 1)
    stream = data_mod.BatchStream(source, batch_size=tc.batch_size, generator=generator, start=start,
                                  device=device)
    window = LossWindow()
    model.train()
    _set_mode(optimizer, "train")
    t0 = time.perf_counter()
    for step in range(start, tc.steps):
        where["step"] = step
        done = step + 1
        logs = logs_at(done, tc)
        batch = stream.batch(step)
        # the copy mask (and loss) only where the curve records it
        loss, copy_loss = lm_losses(model, batch.tokens, batch.copy_mask if logs else None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.add(step, loss, copy_loss)
        checkpoint = on_checkpoint is not None and done % tc.checkpoint_every == 0 and done < tc.steps
        if not (logs or checkpoint):
            continue
        value = math.nan
        for s, (value,), copied in window.fetch():
            if not math.isfinite(value):
                raise diverged(cfg, seed, value, s)
            if copied is not None:
                curve.append([s + 1, value, copied[0]])
        now = time.perf_counter()
        if on_step is not None:
            on_step(done, value, tokens_per_step * (done - start) / max(now - t0, 1e-9))
        if checkpoint:
            # the training point, not eval()'s weights: a resume continues bit for bit, and
            # how often checkpoints are taken cannot change the result
            on_checkpoint(done, {
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                # copies: the live state keeps changing after the callback returns
                "optimizer": copy.deepcopy(optimizer.state_dict()), "generator": stream.resume_state(done),
                "rng": _rng_state(device),
                "curve": [list(r) for r in curve], "step": done, "elapsed": elapsed + now - t0})
    _set_mode(optimizer, "eval")  # the weights to store and analyse
    wall = elapsed + time.perf_counter() - t0
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(state_dict=state, log=seed_log(
        cfg, seed, curve=curve, wall=wall, start=start, tokens_per_s=tokens_per_step * (tc.steps - start)
        / max(time.perf_counter() - t0, 1e-9), device=device, settings=settings))


def seed_log(cfg: FamilyConfig, seed: int, *, curve: list[list[float]], wall: float, start: int,
             tokens_per_s: float, device: torch.device, settings: dict[str, Any]) -> dict[str, Any]:
    """The training log stored with a seed: its seeds, loss curve, timings and the settings
    that decide the bits."""
    init_seed, data_seed = cfg.seed_pair(seed)
    return {
        "seed": seed, "init_seed": init_seed, "data_seed": data_seed,
        "steps": cfg.train.steps, "curve": curve, "final_loss": curve[-1][1] if curve else None,
        "final_copy_loss": curve[-1][2] if curve else None,
        "wall_s": wall, "resumed_from": start, "tokens_per_s": tokens_per_s,
        "device": str(device), **settings, "torch": torch.__version__, "versions": runtime_versions(),
    }
