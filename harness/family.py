"""Seed families: train the seeds a spec asks for, or load them from the store.

``obtain_family`` is the one entry point: for each seed it takes the store's lock, loads a
verified entry if there is one, else resumes from a checkpoint or trains from scratch,
and saves the result. Two processes asking for the same family train each seed once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.config import FamilyConfig, fingerprint
from harness.model import build_model
from harness.provenance import store_fingerprint
from harness.store import Store
from harness.train import deterministic, train_seed

log = logging.getLogger(__name__)

DEFAULT_STORE = Path(".seedstab") / "store"


@dataclass(frozen=True)
class TrainedSeed:
    seed: int
    seed_key: str
    model: nn.Module  # eval mode, on the family's device
    log: dict[str, Any]
    trained_now: bool


@dataclass(frozen=True)
class Family:
    config: FamilyConfig
    fingerprint: str
    device: str  # torch device string, e.g. "cpu", "cuda:0"
    device_class: str  # e.g. "cpu", "cuda-nvidia-h100-80gb-hbm3": baselines are kept per class
    seeds: tuple[TrainedSeed, ...]

    @property
    def models(self) -> list[nn.Module]:
        return [s.model for s in self.seeds]

    @property
    def trained_now(self) -> int:
        return sum(s.trained_now for s in self.seeds)


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error that says so."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} was asked for, but torch sees no CUDA device "
                           f"(torch {torch.__version__}); use --device cpu or auto")
    return torch.device(spec)


def device_class(device: torch.device) -> str:
    """The baseline class of a device: ``cpu``, or ``cuda-<gpu name>``."""
    if device.type != "cuda":
        return device.type
    name = torch.cuda.get_device_name(device)
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _store_key(device: torch.device, threads: int) -> str:
    # On the CPU the thread count changes the bits (measured: 1 vs 2 threads differ ~2e-4).
    return f"{device_class(device)}-t{threads}" if device.type == "cpu" else device_class(device)


def obtain_family(cfg: FamilyConfig, *, store: Store | str | Path = DEFAULT_STORE,
                  device: str | None = None, force: bool = False, progress: bool = False,
                  seeds: tuple[int, ...] | None = None) -> Family:
    """Every seed of ``cfg`` trained (now or earlier) and loaded, in seed order.

    ``device`` overrides ``train.device``; ``force`` retrains even what the store holds;
    ``progress`` shows a tqdm bar per seed on stderr. Runs under
    :func:`harness.train.deterministic`: torch's determinism flags, thread count and (CUDA)
    cuDNN/TF32 switches are the family's during the call and the caller's again after it,
    also when training raises.
    """
    store = store if isinstance(store, Store) else Store(store)
    dev = resolve_device(device or cfg.train.device)
    threads = cfg.train.threads
    fp = fingerprint(cfg)
    key = _store_key(dev, threads)
    store_fp = store_fingerprint(cfg)  # fp plus code and runtime digests: what trained it retrains
    store.save_family_meta(store_fp, config=cfg.to_dict())
    out = []
    # Training and moving the loaded weights run under the family's settings; the caller's
    # flags and thread count come back afterwards, also when a seed diverges.
    with deterministic(dev, threads):
        for seed in (seeds if seeds is not None else cfg.seeds):
            out.append(_obtain_seed(cfg, seed, store=store, fp=store_fp, key=key, device=dev,
                                    force=force, progress=progress))
    return Family(config=cfg, fingerprint=fp, device=str(dev), device_class=device_class(dev),
                  seeds=tuple(out))


def _obtain_seed(cfg: FamilyConfig, seed: int, *, store: Store, fp: str, key: str,
                 device: torch.device, force: bool, progress: bool) -> TrainedSeed:
    """One seed loaded from the store (under its lock), or trained and saved first."""
    seed_key = cfg.seed_key(seed)
    with store.lock(fp, key, seed_key):
        record = None if force else store.load_seed(fp, key, seed_key)
        trained_now = record is None
        if record is None:
            record = _train_and_save(cfg, seed, store=store, fp=fp, key=key, seed_key=seed_key,
                                     device=device, progress=progress)
        else:
            log.info("%s seed %d: loaded from the store (%s)", cfg.name, seed, record.path)
    model = build_model(cfg.model, vocab_size=cfg.vocab_size, n_ctx=cfg.data.seq_len,
                        init_seed=cfg.seed_pair(seed)[0], source=cfg.source)
    model.load_state_dict(record.state_dict)
    model.to(device).eval()
    return TrainedSeed(seed=seed, seed_key=seed_key, model=model, log=record.log, trained_now=trained_now)


def _train_and_save(cfg: FamilyConfig, seed: int, *, store: Store, fp: str, key: str, seed_key: str,
                    device: torch.device, progress: bool):
    checkpoint = store.load_checkpoint(fp, key, seed_key)
    resume = checkpoint.payload if checkpoint is not None else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.train.steps, initial=checkpoint.step if checkpoint else 0,
                   desc=f"{cfg.name} seed {seed}", unit="step", leave=True, dynamic_ncols=True)

    def on_step(step: int, loss: float, tps: float) -> None:
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")

    def on_checkpoint(step: int, payload: dict) -> None:
        store.save_checkpoint(fp, key, seed_key, step=step, payload=payload)

    try:
        result = train_seed(cfg, seed, device=device, resume=resume, on_checkpoint=on_checkpoint,
                            on_step=on_step)
    finally:
        if bar is not None:
            bar.close()
    return store.save_seed(fp, key, seed_key, state_dict=result.state_dict,
                           config=cfg.to_dict(), log=result.log)
