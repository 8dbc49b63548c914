"""Seed families: train the seeds a spec asks for, or load them from the store.

``obtain_family`` is the one entry point. It splits the seeds into units of work (one seed,
or a chunk of seeds packed into one batched model: :mod:`harness.packed`), hands the units
to an executor (:mod:`harness.executors`; :func:`harness.units.run_unit` runs one, and is
importable here as ``harness.family.run_unit``) and writes each result to the store as it
arrives. Each process takes the next FREE seed with a try-lock, trains it, and only at the
end waits for the seeds other processes hold and loads them: two processes asking for
one family train different seeds at the same time, and every seed once.
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from harness.config import FamilyConfig, fingerprint
from harness.executors import Executor, LocalExecutor
from harness.model import build_model
from harness.progress import resolve_progress
from harness.provenance import store_fingerprint
from harness.store import Store
from harness.train import deterministic
from harness.units import TrainUnit, run_unit

__all__ = ["DEFAULT_STORE", "Family", "TrainUnit", "TrainedSeed", "device_class", "obtain_family",
           "resolve_device", "resolve_pack", "run_unit", "store_key"]

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
                           f"(torch {torch.__version__}); use --seedstab-device cpu (pytest) or --device cpu (seedstab CLI), or auto")
    return torch.device(spec)


def device_class(device: torch.device) -> str:
    """The baseline class of a device: ``cpu``, or ``cuda-<gpu name>``."""
    if device.type != "cuda":
        return device.type
    name = torch.cuda.get_device_name(device)
    return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def store_key(device: torch.device, threads: int, pack: int = 1) -> str:
    """The store's device key: the device class, ``-t<threads>`` on the CPU (1 vs 2 threads
    differ ~2e-4), ``-pk<pack>`` for seeds trained packed (their bits differ from a
    one-at-a-time run's, so the two never share entries)."""
    key = f"{device_class(device)}-t{threads}" if device.type == "cpu" else device_class(device)
    return key + (f"-pk{pack}" if pack >= 2 else "")


def obtain_family(cfg: FamilyConfig, *, store: Store | str | Path = DEFAULT_STORE,
                  device: str | None = None, force: bool = False, progress: str | bool = "off",
                  seeds: tuple[int, ...] | None = None, pack: int | None = None,
                  executor: Executor | None = None, progress_stream: IO[str] | None = None) -> Family:
    """Every seed of ``cfg`` trained (now or earlier) and loaded, in seed order.

    ``device`` overrides ``train.device``; ``force`` retrains even what the store holds;
    ``progress`` is ``"auto"``, ``"bar"``, ``"lines"`` or ``"off"`` (True: auto, False:
    off) on ``progress_stream`` (default stderr). ``pack``: None (auto: packed on CUDA when
    the family allows it, one seed at a time on the CPU), 1 (one at a time) or k >= 2 (chunks
    of k seeds, each trained as one batched model); a family that cannot be packed trains
    one seed at a time and the log says why. ``executor`` (default
    :class:`~harness.executors.LocalExecutor`) runs the units; units run by another
    executor train without checkpoints. Runs under :func:`harness.train.deterministic`:
    torch's determinism flags, thread count and (CUDA) cuDNN/TF32 switches are the
    family's during the call and the caller's again after it, also when training raises.
    """
    store = store if isinstance(store, Store) else Store(store)
    dev = resolve_device(device or cfg.train.device)
    mode = resolve_progress(progress, progress_stream)
    wanted = tuple(seeds if seeds is not None else cfg.seeds)
    k = resolve_pack(pack, cfg, dev, n_seeds=len(wanted))
    executor = executor if executor is not None else LocalExecutor()
    threads = cfg.train.threads
    fp = fingerprint(cfg)
    key = store_key(dev, threads, k)
    store_fp = store_fingerprint(cfg)  # fp plus code and runtime digests: what trained it retrains
    store.save_family_meta(store_fp, config=cfg.to_dict())
    local = getattr(executor, "name", None) == "local"

    def unit(chunk: tuple[int, ...]) -> TrainUnit:
        return TrainUnit(cfg=cfg, seeds=chunk, device=str(dev), pack=k,
                         store_root=str(store.root) if local else None, fingerprint=store_fp,
                         store_key=key, progress=mode, progress_stream=progress_stream)

    claims = _Claims(cfg, store, store_fp, key, force=force)
    chunks = [wanted[i:i + k] for i in range(0, len(wanted), k)]
    # Training and moving the loaded weights run under the family's settings; the caller's
    # flags and thread count come back afterwards, also when a seed diverges.
    with deterministic(dev, threads), contextlib.ExitStack() as held:
        held.callback(claims.release_all)
        for blocking in (False, True):  # first the free seeds, then wait for the others'
            todo = chunks
            while todo:
                # in this process: claim one chunk, train it, then the next (so that other
                # processes can take the rest); elsewhere: claim all, run them together
                step, todo = (todo[:1], todo[1:]) if local else (todo, [])
                units = [unit(c) for c in (claims.claim(chunk, blocking=blocking) for chunk in step) if c]
                if units:
                    for i, results in executor.map_unordered(run_unit, units):
                        for seed, state_dict, log_ in results:
                            claims.save(seed, state_dict, log_)
            chunks = [c for c in (tuple(s for s in chunk if s in claims.deferred) for chunk in chunks) if c]
            claims.deferred.clear()
        out = [claims.trained_seed(seed, dev) for seed in wanted]
    return Family(config=cfg, fingerprint=fp, device=str(dev), device_class=device_class(dev),
                  seeds=tuple(out))


def resolve_pack(pack: int | None, cfg: FamilyConfig, device: torch.device, *, n_seeds: int) -> int:
    """How many seeds train together: 1, or a chunk size >= 2. ``None`` is auto: all of them
    on CUDA (when :func:`harness.packed.pack_support` allows), 1 on the CPU (the CPU
    baselines are one-at-a-time runs). A family that cannot be packed gives 1 and logs why."""
    if pack is not None and (isinstance(pack, bool) or not isinstance(pack, int) or pack < 1):
        raise ValueError(f"pack: expected None (auto) or an integer >= 1, got {pack!r}")
    if pack == 1 or n_seeds < 2 or (pack is None and device.type != "cuda"):
        return 1
    from harness.packed import pack_support

    why_not = pack_support(cfg)
    if why_not is not None:
        log.info("%s: trained one seed at a time, not packed: %s", cfg.name, why_not)
        return 1
    return min(pack or n_seeds, n_seeds)


class _Claims:
    """The seeds this call has loaded, claimed (locked, to train) or left to others."""

    def __init__(self, cfg: FamilyConfig, store: Store, fp: str, key: str, *, force: bool) -> None:
        self.cfg, self.store, self.fp, self.key, self.force = cfg, store, fp, key, force
        self.records: dict[int, tuple[Any, bool]] = {}  # seed -> (SeedRecord, trained now)
        self.locks: dict[int, contextlib.ExitStack] = {}  # claimed seeds, locked until saved
        self.deferred: set[int] = set()  # held by another process at the try-lock

    def claim(self, chunk: tuple[int, ...], *, blocking: bool) -> tuple[int, ...]:
        """The seeds of ``chunk`` this process now holds and must train; stored seeds are
        loaded, seeds locked elsewhere are deferred (or, ``blocking``, waited for)."""
        mine = []
        for seed in chunk:
            if seed in self.records or seed in self.locks:
                continue
            seed_key = self.cfg.seed_key(seed)
            stack = contextlib.ExitStack()
            cm = (self.store.lock(self.fp, self.key, seed_key) if blocking
                  else self.store.try_lock(self.fp, self.key, seed_key))
            if stack.enter_context(cm) is None:
                stack.close()
                self.deferred.add(seed)
                continue
            record = None if self.force else self.store.load_seed(self.fp, self.key, seed_key)
            if record is not None:
                stack.close()
                log.info("%s seed %d: loaded from the store (%s)", self.cfg.name, seed, record.path)
                self.records[seed] = (record, False)
                continue
            self.locks[seed] = stack
            mine.append(seed)
        return tuple(mine)

    def save(self, seed: int, state_dict: dict, log_: dict) -> None:
        """Write a trained seed to the store, then release its lock."""
        record = self.store.save_seed(self.fp, self.key, self.cfg.seed_key(seed), state_dict=state_dict,
                                      config=self.cfg.to_dict(), log=log_)
        self.records[seed] = (record, True)
        self.locks.pop(seed).close()

    def release_all(self) -> None:
        for stack in self.locks.values():
            stack.close()
        self.locks.clear()

    def trained_seed(self, seed: int, device: torch.device) -> TrainedSeed:
        record, trained_now = self.records[seed]
        model = build_model(self.cfg.model, vocab_size=self.cfg.vocab_size, n_ctx=self.cfg.data.seq_len,
                            init_seed=self.cfg.seed_pair(seed)[0], source=self.cfg.source)
        model.load_state_dict(record.state_dict)
        model.to(device).eval()
        return TrainedSeed(seed=seed, seed_key=self.cfg.seed_key(seed), model=model, log=record.log,
                           trained_now=trained_now)
