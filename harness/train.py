"""Train one seed of a family: the paper's loop (constant lr, no warmup, no clipping, fp32).

Pure with respect to the disk: checkpoints go out through a callback and come back in as
an argument, so the store (harness.store) stays the only module that writes files.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import FamilyConfig, resolve_optimizer
import harness.data as data_mod
from harness.model import build_model

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; names the seed and the step."""


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


def build_optimizer(cfg: FamilyConfig, params) -> torch.optim.Optimizer:
    """The spec's optimizer; weight decay (if set) applies to all parameters, as in the paper."""
    cls = resolve_optimizer(cfg.train.optimizer, source=cfg.source)
    kwargs = dict(cfg.train.optimizer_kwargs)
    kwargs["lr"] = cfg.train.lr
    if cfg.train.weight_decay is not None:
        kwargs["weight_decay"] = cfg.train.weight_decay
    return cls(params, **kwargs)


def lm_losses(model: nn.Module, tokens: torch.Tensor, copy_mask: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next-token cross-entropy (mean) and the mean over copied target tokens (or None)."""
    logits = model(tokens)  # (B, T, V)
    per_tok = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                              tokens[:, 1:].reshape(-1), reduction="none")  # (B*(T-1),)
    copied = None
    if copy_mask is not None:
        m = copy_mask[:, 1:].reshape(-1)
        if m.any():
            copied = per_tok[m].mean()
    return per_tok.mean(), copied


def train_seed(cfg: FamilyConfig, seed: int, *, device: torch.device,
               resume: dict[str, Any] | None = None,
               on_checkpoint: Callable[[int, dict[str, Any]], None] | None = None,
               on_step: Callable[[int, float, float], None] | None = None) -> TrainResult:
    """Train family seed ``seed`` from scratch or from a checkpoint payload ``resume``.

    ``on_checkpoint(step, payload)`` is called every ``train.checkpoint_every`` steps with
    everything needed to resume bitwise-identically; ``on_step(step, loss, tokens_per_s)``
    after each step. Raises :class:`TrainingDiverged` on a non-finite loss.
    """
    init_seed, data_seed = cfg.seed_pair(seed)
    source = data_source(cfg)
    model = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                        init_seed=init_seed, source=cfg.source).to(device)
    optimizer = build_optimizer(cfg, model.parameters())
    generator = torch.Generator().manual_seed(data_seed)  # data order: CPU generator, always
    curve: list[list[float]] = []
    start, elapsed = 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        generator.set_state(resume["generator"])
        curve = [list(r) for r in resume["curve"]]
        start, elapsed = int(resume["step"]), float(resume["elapsed"])
        log.info("seed %d: resuming at step %d of %d", seed, start, cfg.train.steps)

    tc = cfg.train
    tokens_per_step = tc.batch_size * (cfg.data.seq_len - 1)
    model.train()
    t0 = time.perf_counter()
    for step in range(start, tc.steps):
        batch = source.sample(tc.batch_size, generator=generator)
        tokens = batch.tokens.to(device)  # (B, T)
        loss, copy_loss = lm_losses(model, tokens, batch.copy_mask.to(device))
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingDiverged(
                f"{cfg.name}: seed {seed} (init_seed {init_seed}, data_seed {data_seed}): the loss became "
                f"{value} at step {step}; lower train.lr or check the optimizer settings")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done = step + 1
        if done % tc.log_every == 0 or done == tc.steps or done == 1:
            curve.append([done, value, copy_loss.item() if copy_loss is not None else float("nan")])
        now = time.perf_counter()
        if on_step is not None:
            on_step(done, value, tokens_per_step * (done - start) / max(now - t0, 1e-9))
        if on_checkpoint is not None and done % tc.checkpoint_every == 0 and done < tc.steps:
            on_checkpoint(done, {
                "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                # copies: the live state keeps changing after the callback returns
                "optimizer": copy.deepcopy(optimizer.state_dict()), "generator": generator.get_state(),
                "curve": [list(r) for r in curve], "step": done, "elapsed": elapsed + now - t0})
    wall = elapsed + time.perf_counter() - t0
    trained_steps = tc.steps - start
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TrainResult(state_dict=state, log={
        "seed": seed, "init_seed": init_seed, "data_seed": data_seed,
        "steps": tc.steps, "curve": curve, "final_loss": curve[-1][1] if curve else None,
        "final_copy_loss": curve[-1][2] if curve else None,
        "wall_s": wall, "resumed_from": start,
        "tokens_per_s": tokens_per_step * trained_steps / max(time.perf_counter() - t0, 1e-9),
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
    })
