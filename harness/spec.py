"""The shape of a family spec: the frozen dataclasses a spec loads into, the keys a spec
file may hold, and :class:`ConfigError`, the one error every bad spec raises.

Loading is :mod:`harness.spec_load`, validation :mod:`harness.spec_validate`, the identity
of a family :mod:`harness.fingerprint`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A spec that cannot be used; the message names the file and the dotted key."""

    def __init__(self, source: str | Path, key: str, message: str) -> None:
        self.source = str(source)
        self.key = key
        self.detail = message
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        super().__init__(where + message)

    def __reduce__(self):
        # pickles (to and from worker processes) with the three parts, not the joined message
        return (type(self), (self.source, self.key, self.detail))


@dataclass(frozen=True)
class ModelConfig:
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int | None = None  # None: d_model // n_heads
    d_mlp: int | None = None  # None: 4 * d_model
    attn_only: bool = False
    norm: str = "pre"  # pre | post | none
    positions: str = "learned"  # learned | rotary
    qk_norm: bool = False
    tied_embeddings: bool = False
    activation: str = "gelu"  # gelu | relu | silu
    init_std: float = 0.02
    custom: str | None = None  # "module:factory" building a user nn.Module (see harness.model)
    transformers: Mapping[str, Any] | None = None  # a Hugging Face causal LM (harness.adapters.hf)
    transformer_lens: Mapping[str, Any] | None = None  # a HookedTransformer (harness.adapters.tl)

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def mlp_dim(self) -> int:
        return self.d_mlp if self.d_mlp is not None else 4 * self.d_model


@dataclass(frozen=True)
class DataConfig:
    kind: str = "synthetic"  # synthetic | text | tokens
    path: str | None = None  # text / tokens: the file (resolved against the spec's folder)
    vocab_size: int | None = None  # synthetic: required; tokens: default max+1; text: 256
    seq_len: int = 64
    language_seed: int = 0  # the synthetic language's structure; not the family seed
    synthetic: Mapping[str, Any] = field(default_factory=dict)  # generator knobs


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"  # a torch.optim name (case-insensitive) or "module:Class"
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    lr: float = 1e-4
    weight_decay: float | None = None  # None: not passed (the optimizer's own default)
    steps: int = 1000
    batch_size: int = 32
    init_seed: int | None = None  # None: the family seed
    data_seed: int | None = None  # None: the family seed
    device: str = "auto"  # auto | cpu | cuda | cuda:N  (not part of the fingerprint)
    threads: int = 1  # CPU threads; fixed because 1 vs 2 threads give different bits
    checkpoint_every: int = 200
    log_every: int = 10


@dataclass(frozen=True)
class ProbeConfig:
    n_prompts: int = 64
    seed: int = 1234
    path: str | None = None  # a prompts file, one per line (byte-level)
    seq_len: int | None = None  # None: data.seq_len


@dataclass(frozen=True)
class FamilyConfig:
    name: str
    seeds: tuple[int, ...]
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    source: str = "<memory>"  # the file it came from, for messages

    @property
    def vocab_size(self) -> int:
        if self.data.vocab_size is not None:
            return self.data.vocab_size
        if self.data.kind == "text":
            return 256
        raise ConfigError(self.source, "data.vocab_size", "unknown vocabulary size")

    @property
    def probe_len(self) -> int:
        return self.probe.seq_len or self.data.seq_len

    def seed_pair(self, seed: int) -> tuple[int, int]:
        """(init_seed, data_seed) of family seed ``seed``."""
        init = self.train.init_seed if self.train.init_seed is not None else seed
        data = self.train.data_seed if self.train.data_seed is not None else seed
        return init, data

    def seed_key(self, seed: int) -> str:
        init, data = self.seed_pair(seed)
        return f"init{init}-data{data}"

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain mapping that :func:`family_from_dict` reads back to an equal
        config (a library model's section holds only its library key)."""
        d = dataclasses.asdict(self)
        d["seeds"] = list(self.seeds)
        for lib in ("transformers", "transformer_lens"):
            if d["model"].get(lib) is not None:
                d["model"] = {lib: d["model"][lib]}
        for lib in ("transformers", "transformer_lens"):
            if lib in d["model"] and d["model"][lib] is None:
                del d["model"][lib]
        return _plain(d)

    def replace(self, **sections: Any) -> "FamilyConfig":
        """A copy with whole sections or section keys replaced, e.g.
        ``cfg.replace(train={"optimizer": "adamw"})``; validated like a loaded spec."""
        from harness.spec_load import _merge  # both import this module
        from harness.spec_validate import family_from_dict

        raw = self.to_dict()
        raw.pop("source")
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(raw.get(key), dict):
                raw[key] = _merge(raw[key], dict(value))
            else:
                raw[key] = value
        return family_from_dict(raw, source=self.source, key="")


@dataclass(frozen=True)
class Suite:
    """A loaded suite file: its families (validated) and its raw expectation sections."""

    name: str
    source: str
    families: Mapping[str, FamilyConfig]
    expectations: Mapping[str, Any]
    regression: Mapping[str, Any]
    checks: Mapping[str, Any] = field(default_factory=dict)  # raw; validated by harness.checks


SUITE_KEYS = {"suite", "defaults", "families", "expectations", "regression", "checks", "description"}
FAMILY_KEYS = {"name", "seeds", "model", "data", "train", "probe", "extends", "description"}


def _check_keys(raw: Mapping, allowed: set[str], path: str | Path, prefix: str) -> None:
    """ConfigError naming ``prefix.key`` for the first key of ``raw`` not in ``allowed``."""
    for k in raw:
        if k not in allowed:
            key = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(path, key, f"unknown key; expected one of: {', '.join(sorted(allowed))}")


def _plain(obj: Any) -> Any:
    """``obj`` with mappings as str-keyed dicts and tuples as lists, as YAML and JSON write it."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
