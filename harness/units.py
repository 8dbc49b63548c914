"""Units of a family's training: what an executor runs, picklable both ways.

A :class:`TrainUnit` is one seed trained alone, or a chunk of seeds trained packed as one
batched model (:mod:`harness.packed`). :func:`run_unit` trains it and returns
``[(seed, state_dict, log), ...]``; the driver (:func:`harness.family.obtain_family`)
writes each result to the store as it arrives, so a unit run elsewhere needs no shared
filesystem. A unit given ``store_root`` (local execution) checkpoints through that store
and resumes from its checkpoint; one without trains from scratch, without checkpoints.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import IO, Any

import torch

from harness.config import FamilyConfig
from harness.progress import Progress

SeedResult = tuple[int, dict[str, torch.Tensor], dict[str, Any]]


@dataclass(frozen=True)
class TrainUnit:
    """``seeds`` of ``cfg`` to train on ``device`` (a torch device string): one seed with
    ``pack == 1``, else packed together (``pack`` is the family's chunk size, >= 2).
    ``store_root``, ``fingerprint`` and ``store_key`` name where checkpoints go (local units
    only); ``progress`` is ``"bar"``, ``"lines"`` or ``"off"``. ``progress_stream`` stays
    in the process that made the unit: pickling drops it (a remote unit reports on its
    worker's stderr)."""

    cfg: FamilyConfig
    seeds: tuple[int, ...]
    device: str
    pack: int = 1
    store_root: str | None = None
    fingerprint: str = ""
    store_key: str = ""
    progress: str = "off"
    progress_stream: IO[str] | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["progress_stream"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)

    def __str__(self) -> str:
        what = f"seed {self.seeds[0]}" if len(self.seeds) == 1 else f"seeds {list(self.seeds)} packed"
        return f"{self.cfg.name} {what} on {self.device}"


def run_unit(unit: TrainUnit) -> list[SeedResult]:
    """Train ``unit``; ``[(seed, state_dict on the CPU, training log), ...]`` in seed order.
    Each log also says which process trained it (``trained_by``: pid, host) and how
    (``pack``: 1, or the packed chunk size)."""
    device = torch.device(unit.device)
    if unit.pack >= 2:
        from harness.packed import train_packed

        results = train_packed(unit.cfg, unit.seeds, device=device, progress=_progress(unit, 0))
    else:
        results = [_run_one(unit, seed, device) for seed in unit.seeds]
    by = {"pid": os.getpid(), "host": socket.gethostname()}
    out = []
    for seed, r in zip(unit.seeds, results):
        out.append((seed, r.state_dict, {**r.log, "trained_by": by, "pack": unit.pack}))
    return out


def _progress(unit: TrainUnit, initial: int, seeds: tuple[int, ...] | None = None) -> Progress:
    return Progress(unit.progress, family=unit.cfg.name, seeds=seeds or unit.seeds,
                    total=unit.cfg.train.steps, initial=initial, stream=unit.progress_stream)


def _run_one(unit: TrainUnit, seed: int, device: torch.device):
    from harness.train import train_seed

    cfg = unit.cfg
    store = None
    if unit.store_root is not None:
        from harness.store import Store

        store = Store(unit.store_root)
    seed_key = cfg.seed_key(seed)
    checkpoint = store.load_checkpoint(unit.fingerprint, unit.store_key, seed_key) if store else None
    progress = _progress(unit, checkpoint.step if checkpoint else 0, (seed,))

    def on_checkpoint(step: int, payload: dict) -> None:
        store.save_checkpoint(unit.fingerprint, unit.store_key, seed_key, step=step, payload=payload)

    try:
        return train_seed(cfg, seed, device=device, resume=checkpoint.payload if checkpoint else None,
                          on_checkpoint=on_checkpoint if store else None, on_step=progress.update)
    finally:
        progress.close()
