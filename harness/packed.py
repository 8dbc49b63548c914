"""Packed families: k seeds trained as ONE batched model on one device.

The seeds' parameters are stacked along a leading seed dimension
(``torch.func.stack_module_state``) and the built-in GPT runs over all of them at once
(``torch.func.vmap`` of ``functional_call``): one kernel launch does k seeds' work, which is
what a GPU needs from models this small. Each seed keeps what makes it that seed: its
model is built with its own ``init_seed`` exactly as a one-at-a-time run builds it, and its
batches come from its own data generator (seeded with its ``data_seed``). The loss summed
over seeds has, for each seed's parameters, that seed's own gradient; an element-wise
optimizer (Adam, AdamW, SGD) on the stacked tensors then does for each seed exactly what it
does for one. Anything else (a user's model or a library model, another optimizer) would
either not vmap or could mix the seeds: :func:`pack_support` says why, and the family
trains one seed at a time.

Packed runs reproduce bit for bit run to run, but not the bits of one-at-a-time runs
(batched kernels sum in another order), so the store keeps them under their own device key
(``-pk<k>``, :func:`harness.family.store_key`). A packed chunk keeps no checkpoints: after a
crash it trains again from step 0.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

import harness.data as data_mod
from harness.config import ConfigError, FamilyConfig, resolve_optimizer
from harness.model import build_model
from harness.progress import Progress, seeds_label
from harness.train import (LossWindow, TrainingDiverged, TrainingError, TrainResult, data_source,
                           diverged, global_seed, logs_at, seed_log, seeded_scope)

log = logging.getLogger(__name__)

# Element-wise optimizers: each element's update reads only that element's gradient and
# state (and per-tensor step counts, equal across seeds), so stacking seeds changes nothing.
ELEMENTWISE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def pack_support(cfg: FamilyConfig) -> str | None:
    """None when ``cfg``'s seeds can train packed, else why not (one line)."""
    m = cfg.model
    if m.custom is not None or m.transformers is not None or m.transformer_lens is not None:
        return "model.custom / a library model: only the built-in GPT is packed"
    try:
        opt = resolve_optimizer(cfg.train.optimizer, source=cfg.source)
    except ConfigError as e:
        return f"train.optimizer: {e}"
    if opt not in ELEMENTWISE_OPTIMIZERS:
        return (f"train.optimizer {cfg.train.optimizer!r} is not one of adam, adamw, sgd (the "
                f"element-wise optimizers; another one could mix the seeds' updates)")
    return None


def train_packed(cfg: FamilyConfig, seeds: tuple[int, ...], *, device: torch.device,
                 progress: Progress | None = None) -> list[TrainResult]:
    """Train ``seeds`` of ``cfg`` together; one :class:`~harness.train.TrainResult` per seed,
    in order, each as :func:`harness.train.train_seed` would return it (plus ``pack`` and
    ``pack_tokens_per_s`` in the log). Raises :class:`~harness.train.TrainingDiverged`
    naming the first seed and step whose loss was not finite."""
    why_not = pack_support(cfg)
    if why_not is not None:
        raise ValueError(f"{cfg.name}: cannot pack seeds {list(seeds)}: {why_not}")
    first = cfg.seed_pair(seeds[0])
    where = {"step": 0}
    with seeded_scope(device, cfg.train.threads, global_seed(*first)) as settings:
        try:
            return _train(cfg, tuple(seeds), device=device, progress=progress, settings=settings,
                          where=where)
        except (ConfigError, TrainingDiverged, KeyboardInterrupt):
            raise
        except Exception as e:
            raise TrainingError(f"{cfg.name}: {seeds_label(seeds)} (packed), step {where['step']}: "
                                f"{type(e).__name__}: {e}") from e


def _per_seed_losses(base: torch.nn.Module):
    """``fn(params, buffers, tokens (B, T), mask (B, T) float) -> (loss, copy loss)`` for one
    seed, written for vmap: no data-dependent control flow, no host sync."""

    def losses(params: dict, buffers: dict, tokens: torch.Tensor, mask: torch.Tensor):
        logits = functional_call(base, (params, buffers), (tokens,))  # (B, T, V)
        per_tok = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                  tokens[:, 1:].reshape(-1), reduction="none")  # (B*(T-1),)
        m = mask[:, 1:].reshape(-1)  # (B*(T-1),)
        return per_tok.mean(), (per_tok.detach() * m).sum() / m.sum()

    return losses


def _train(cfg: FamilyConfig, seeds: tuple[int, ...], *, device: torch.device,
           progress: Progress | None, settings: dict[str, Any], where: dict[str, int]) -> list[TrainResult]:
    tc, k = cfg.train, len(seeds)
    models = [build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                          init_seed=cfg.seed_pair(s)[0], hooked=False, source=cfg.source).to(device)
              for s in seeds]
    names = list(models[0].state_dict())
    params, buffers = stack_module_state(models)  # {name: (k, ...)}, params are fresh leaves
    base = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len, init_seed=0,
                       hooked=False, source=cfg.source).to("meta")
    del models
    opt_cls = resolve_optimizer(tc.optimizer, source=cfg.source)
    kwargs = dict(tc.optimizer_kwargs, lr=tc.lr)
    if tc.weight_decay is not None:
        kwargs["weight_decay"] = tc.weight_decay
    optimizer = opt_cls(list(params.values()), **kwargs)
    losses = vmap(_per_seed_losses(base))  # (k,) losses, (k,) copy losses

    source = data_source(cfg)
    streams = [data_mod.BatchStream(source, batch_size=tc.batch_size, device=device,
                                    generator=torch.Generator().manual_seed(cfg.seed_pair(s)[1]))
               for s in seeds]
    tokens_per_step = tc.batch_size * (cfg.data.seq_len - 1)
    curves: list[list[list[float]]] = [[] for _ in seeds]
    window = LossWindow()
    no_mask = None
    t0 = time.perf_counter()
    for step in range(tc.steps):
        where["step"] = step
        done = step + 1
        logs = logs_at(done, tc)
        batches = [s.batch(step) for s in streams]
        tokens = torch.stack([b.tokens for b in batches])  # (k, B, T)
        if logs:
            mask = torch.stack([b.copy_mask for b in batches]).to(torch.float32)  # (k, B, T)
        else:  # the copy loss is computed only where the curve records it
            if no_mask is None:
                no_mask = torch.zeros(tokens.shape, dtype=torch.float32, device=device)
            mask = no_mask
        loss, copied = losses(params, buffers, tokens, mask)  # (k,), (k,)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # each seed's parameters get that seed's own gradient
        optimizer.step()
        window.add(step, loss, copied if logs else None)
        if not logs:
            continue
        values: list[float] = []
        for s, values, copies in window.fetch():
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                raise diverged(cfg, seeds[bad[0]], values[bad[0]], s)
            if copies is not None:
                for i in range(k):
                    curves[i].append([s + 1, values[i], copies[i]])
        if progress is not None:
            now = time.perf_counter()
            progress.update(done, sum(values) / k, k * tokens_per_step * done / max(now - t0, 1e-9))
    wall = time.perf_counter() - t0
    if progress is not None:
        progress.close()
    stacked = {**buffers, **params}
    out = []
    for i, seed in enumerate(seeds):
        state = {n: stacked[n][i].detach().cpu().clone() for n in names}
        entry = seed_log(cfg, seed, curve=curves[i], wall=wall, start=0, device=device, settings=settings,
                         tokens_per_s=tokens_per_step * tc.steps / max(wall, 1e-9))
        entry["pack_tokens_per_s"] = k * entry["tokens_per_s"]
        out.append(TrainResult(state_dict=state, log=entry))
    return out
