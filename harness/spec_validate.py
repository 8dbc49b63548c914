"""Validation: a merged family mapping in, a :class:`~harness.spec.FamilyConfig` out, with
every default filled in and every bad value rejected by one
:class:`~harness.spec.ConfigError` naming the file and the dotted key::

    suites/paper.yaml: families.adamw.train.lr: expected a positive float, got 'fast'

Settings that only their consumer can judge are checked by it at load time: generator
options by :mod:`harness.data`, optimizer arguments by :mod:`harness.spec_optimizer`,
library models by :mod:`harness.adapters`.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.import_paths import _import_path
from harness.spec import (FAMILY_KEYS, ConfigError, DataConfig, FamilyConfig, ModelConfig, ProbeConfig,
                          TrainConfig, _check_keys)
from harness.spec_optimizer import _check_optimizer_arguments, resolve_optimizer


class _V:
    """Field validators: each returns the cleaned value or raises ConfigError."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source, self.prefix = source, prefix

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(self.source, f"{self.prefix}.{key}" if self.prefix else key, msg)

    def int(self, raw: Mapping, key: str, default: Any, *, min: int | None = None, optional: bool = False) -> Any:
        v = raw.get(key, default)
        if v is None and optional:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            what = "a positive integer" if min == 1 else ("an integer" if min is None else f"an integer >= {min}")
            raise self.err(key, f"expected {what}, got {v!r}")
        if min is not None and v < min:
            what = "a positive integer" if min == 1 else f"an integer >= {min}"
            raise self.err(key, f"expected {what}, got {v!r}")
        return v

    def float(self, raw: Mapping, key: str, default: Any, *, positive: bool = False,
              nonneg: bool = False, optional: bool = False) -> Any:
        v = raw.get(key, default)
        if v is None and optional:
            return None
        if isinstance(v, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            kind = "a positive float" if positive else ("a non-negative float" if nonneg else "a float")
            raise self.err(key, f"expected {kind}, got {v!r}")
        if positive and v <= 0:
            raise self.err(key, f"expected a positive float, got {v!r}")
        if nonneg and v < 0:
            raise self.err(key, f"expected a non-negative float, got {v!r}")
        return float(v)

    def bool(self, raw: Mapping, key: str, default: bool) -> bool:
        v = raw.get(key, default)
        if not isinstance(v, bool):
            raise self.err(key, f"expected true or false, got {v!r}")
        return v

    def choice(self, raw: Mapping, key: str, default: str, choices: tuple[str, ...]) -> str:
        v = raw.get(key, default)
        if v not in choices:
            raise self.err(key, f"expected one of {', '.join(choices)}, got {v!r}")
        return v

    def str(self, raw: Mapping, key: str, default: Any, *, optional: bool = False) -> Any:
        v = raw.get(key, default)
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v:
            raise self.err(key, f"expected a non-empty string, got {v!r}")
        return v

    def mapping(self, raw: Mapping, key: str) -> dict:
        v = raw.get(key) or {}
        if not isinstance(v, dict):
            raise self.err(key, f"expected a mapping, got {v!r}")
        return dict(v)


def _section(raw: Mapping, key: str, cls: type, source: str, prefix: str) -> dict:
    v = raw.get(key) or {}
    where = f"{prefix}.{key}" if prefix else key
    if not isinstance(v, dict):
        raise ConfigError(source, where, f"expected a mapping, got {v!r}")
    _check_keys(v, {f.name for f in dataclasses.fields(cls)}, source, where)
    return v


def family_from_dict(raw: Mapping[str, Any], *, source: str = "<memory>", key: str = "",
                     base_dir: Path | None = None) -> FamilyConfig:
    """Validate a merged family mapping into a :class:`FamilyConfig`."""
    _check_keys(raw, FAMILY_KEYS | {"source"}, source, key)
    p = (lambda k: f"{key}.{k}" if key else k)
    top = _V(source, key)
    name = top.str(raw, "name", "family")
    seeds = raw.get("seeds", [0, 1, 2, 3])
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(source, p("seeds"), f"expected a non-empty list of integers, got {seeds!r}")
    for s in seeds:
        # torch's CPU generator keeps only the low 32 bits, and probe sets live at 2**31 and up.
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**31:
            raise ConfigError(source, p("seeds"), f"expected integers in [0, 2**31), got {s!r}")
    if len(set(seeds)) != len(seeds):
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        raise ConfigError(source, p("seeds"), f"duplicate seeds {dup}; each seed must appear once")

    m_raw = _section(raw, "model", ModelConfig, source, key)
    mv = _V(source, p("model"))
    model = ModelConfig(
        n_layers=mv.int(m_raw, "n_layers", 2, min=1),
        n_heads=mv.int(m_raw, "n_heads", 4, min=1),
        d_model=mv.int(m_raw, "d_model", 64, min=1),
        d_head=mv.int(m_raw, "d_head", None, min=1, optional=True),
        d_mlp=mv.int(m_raw, "d_mlp", None, min=1, optional=True),
        attn_only=mv.bool(m_raw, "attn_only", False),
        norm=mv.choice(m_raw, "norm", "pre", ("pre", "post", "none")),
        positions=mv.choice(m_raw, "positions", "learned", ("learned", "rotary")),
        qk_norm=mv.bool(m_raw, "qk_norm", False),
        tied_embeddings=mv.bool(m_raw, "tied_embeddings", False),
        activation=mv.choice(m_raw, "activation", "gelu", ("gelu", "relu", "silu")),
        init_std=mv.float(m_raw, "init_std", 0.02, positive=True),
        custom=mv.str(m_raw, "custom", None, optional=True),
        transformers=mv.mapping(m_raw, "transformers") if m_raw.get("transformers") is not None else None,
        transformer_lens=(mv.mapping(m_raw, "transformer_lens")
                          if m_raw.get("transformer_lens") is not None else None),
    )
    _check_model_source(model, m_raw, source, p)
    if model.d_head is None and model.d_model % model.n_heads:
        raise mv.err("n_heads", f"n_heads ({model.n_heads}) must divide d_model ({model.d_model}), "
                                "or set d_head explicitly")
    if model.positions == "rotary" and model.head_dim % 2:
        raise mv.err("d_head", f"rotary positions need an even head dimension, got {model.head_dim}")
    if model.custom is not None:
        _import_path(model.custom, source, p("model.custom"))
    if model.transformers is not None:
        from harness.adapters import hf

        hf.validate(model.transformers, source=source, key=p("model.transformers"))
    if model.transformer_lens is not None:
        from harness.adapters import tl

        tl.validate(model.transformer_lens, source=source, key=p("model.transformer_lens"))

    d_raw = _section(raw, "data", DataConfig, source, key)
    dv = _V(source, p("data"))
    kind = dv.choice(d_raw, "kind", "synthetic", ("synthetic", "text", "tokens"))
    path = dv.str(d_raw, "path", None, optional=True)
    if kind == "synthetic" and path is not None:
        raise dv.err("path", "a synthetic language reads no file; remove path or set kind: text|tokens")
    if kind != "synthetic":
        if path is None:
            raise dv.err("path", f"data.kind {kind} needs a file path")
        path = _existing_file(path, base_dir, source, p("data.path"))
    vocab = dv.int(d_raw, "vocab_size", None, min=2, optional=True)
    if kind == "synthetic" and vocab is None:
        vocab = 128
    if kind == "text" and vocab not in (None, 256):
        raise dv.err("vocab_size", f"byte-level text has 256 symbols; got {vocab}")
    synthetic = dv.mapping(d_raw, "synthetic")
    if synthetic and kind != "synthetic":
        raise dv.err("synthetic", "generator options apply only to data.kind synthetic")
    data = DataConfig(kind=kind, path=path, vocab_size=vocab,
                      seq_len=dv.int(d_raw, "seq_len", 64, min=2),
                      language_seed=dv.int(d_raw, "language_seed", 0, min=0),
                      synthetic=synthetic)
    if kind == "synthetic":
        _check_generator_options(synthetic, source, p("data.synthetic"))
        _check_generator_settings(data, set(d_raw), source, p)

    t_raw = _section(raw, "train", TrainConfig, source, key)
    tv = _V(source, p("train"))
    optimizer = tv.str(t_raw, "optimizer", "adam")
    opt_cls = resolve_optimizer(optimizer, source=source, key=p("train.optimizer"))
    okw = tv.mapping(t_raw, "optimizer_kwargs")
    for k in ("lr", "weight_decay"):
        if k in okw:
            raise tv.err(f"optimizer_kwargs.{k}", f"set train.{k} instead")
    device = tv.str(t_raw, "device", "auto")
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise tv.err("device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")
    train = TrainConfig(
        optimizer=optimizer, optimizer_kwargs=okw,
        lr=tv.float(t_raw, "lr", 1e-4, positive=True),
        weight_decay=tv.float(t_raw, "weight_decay", None, nonneg=True, optional=True),
        steps=tv.int(t_raw, "steps", 1000, min=1),
        batch_size=tv.int(t_raw, "batch_size", 32, min=1),
        init_seed=tv.int(t_raw, "init_seed", None, min=0, optional=True),
        data_seed=tv.int(t_raw, "data_seed", None, min=0, optional=True),
        device=device,
        threads=tv.int(t_raw, "threads", 1, min=1),
        checkpoint_every=tv.int(t_raw, "checkpoint_every", 200, min=1),
        log_every=tv.int(t_raw, "log_every", 10, min=1),
    )
    _check_optimizer_arguments(opt_cls, train, source, p)
    pr_raw = _section(raw, "probe", ProbeConfig, source, key)
    pv = _V(source, p("probe"))
    ppath = pv.str(pr_raw, "path", None, optional=True)
    if ppath is not None:
        ppath = _existing_file(ppath, base_dir, source, p("probe.path"))
    probe = ProbeConfig(n_prompts=pv.int(pr_raw, "n_prompts", 64, min=2),
                        seed=pv.int(pr_raw, "seed", 1234, min=0), path=ppath,
                        seq_len=pv.int(pr_raw, "seq_len", None, min=2, optional=True))
    if probe.seq_len is not None and probe.seq_len > data.seq_len:
        raise pv.err("seq_len", f"probe prompts ({probe.seq_len}) cannot be longer than the "
                                f"training context data.seq_len ({data.seq_len})")
    return FamilyConfig(name=name, seeds=tuple(seeds), model=model, data=data, train=train,
                        probe=probe, source=source)


def _existing_file(path: str, base_dir: Path | None, source: str, key: str) -> str:
    p = Path(path)
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.is_file():
        raise ConfigError(source, key, f"file {str(p)!r} does not exist")
    return str(p.resolve())


def _check_generator_options(options: Mapping[str, Any], source: str, key: str) -> None:
    from harness.data import SyntheticLanguage

    params = inspect.signature(SyntheticLanguage.__init__).parameters
    allowed = {n for n, prm in params.items()
               if prm.kind == prm.KEYWORD_ONLY and n not in ("vocab_size", "seq_len", "language_seed")}
    for k, v in options.items():
        if k not in allowed:
            raise ConfigError(source, f"{key}.{k}", f"unknown generator option; expected one of: "
                                                   f"{', '.join(sorted(allowed))}")
        default = params[k].default
        if default is not inspect.Parameter.empty and default is not None and not isinstance(v, type(default)) \
                and not (isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool)):
            raise ConfigError(source, f"{key}.{k}",
                              f"expected {type(default).__name__} (like the default {default!r}), got {v!r}")


def _check_generator_settings(data: DataConfig, set_in_data: set[str], source: str,
                              p: Callable[[str], str]) -> None:
    """Settings valid one by one that no synthetic language can honour together (span_min
    above span_max, a context too short for two copies of a span): ConfigError naming the
    key the spec set, e.g. ``data.synthetic.span_min``."""
    from harness.data import GeneratorOptionError, SyntheticLanguage, check_generator_options

    params = inspect.signature(SyntheticLanguage.__init__).parameters
    wanted = inspect.signature(check_generator_options).parameters
    options = {n: params[n].default for n in wanted if params[n].default is not inspect.Parameter.empty}
    options.update({k: v for k, v in data.synthetic.items() if k in wanted})
    try:
        check_generator_options(**{**options, "vocab_size": data.vocab_size, "seq_len": data.seq_len})
    except GeneratorOptionError as e:
        keys = [f"data.{k}" if k in ("vocab_size", "seq_len") else f"data.synthetic.{k}" for k in e.keys]
        set_keys = [k for k, name in zip(keys, e.keys) if name in data.synthetic or name in set_in_data]
        raise ConfigError(source, p((set_keys or keys or ["data.synthetic"])[0]), e.detail) from None


_LIBRARY_MODEL_KEYS = ("custom", "transformers", "transformer_lens")


def _check_model_source(model: ModelConfig, raw: Mapping[str, Any], source: str,
                        p: Callable[[str], str]) -> None:
    """One of custom / transformers / transformer_lens at most; a library model takes its
    shape from its own config, so the built-in GPT's keys beside it are an error."""
    given = [k for k in _LIBRARY_MODEL_KEYS if raw.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(source, p(f"model.{given[1]}"), f"model.{given[0]} is set too; give one of "
                          f"{', '.join(_LIBRARY_MODEL_KEYS)}")
    if given and given[0] != "custom":
        extra = sorted(k for k in raw if k not in _LIBRARY_MODEL_KEYS)
        if extra:
            raise ConfigError(source, p(f"model.{extra[0]}"), f"model.{given[0]} builds the model from "
                              f"its own config; set {extra[0]} there (or remove it)")
