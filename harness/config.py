"""Family specs: YAML in, frozen dataclasses out, validated, fingerprinted.

A *family* is one training configuration trained under several seeds. YAML is the only
serialized form. Two file shapes load:

* a family file: top-level ``name``, ``seeds``, ``model``, ``data``, ``train``, ``probe``
  (and ``extends: other.yaml`` to inherit from another family file);
* a suite file: ``suite``, optional ``defaults`` (family keys shared by all families),
  ``families: {name: {...}}`` where a family may ``extends`` another family of the same
  file by name or a family file by path, and ``expectations`` / ``regression`` sections
  that the pytest suites read.

Every bad input raises one :class:`ConfigError` naming the file and the dotted key::

    suites/paper.yaml: families.adamw.train.lr: expected a positive float, got 'fast'
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

# Bump when harness/model.py changes what a given config *means* (it is in the fingerprint,
# so committed baselines go stale). Edits that only change the bits are caught without a
# bump: the store key carries harness.provenance.harness_digest(), so they retrain.
MODEL_VERSION = "gpt-1"


class ConfigError(ValueError):
    """A spec that cannot be used; the message names the file and the dotted key."""

    def __init__(self, source: str | Path, key: str, message: str) -> None:
        self.source = str(source)
        self.key = key
        self.detail = message
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        super().__init__(where + message)


# --------------------------------------------------------------------------- dataclasses


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
        raw = self.to_dict()
        raw.pop("source")
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(raw.get(key), dict):
                raw[key] = _merge(raw[key], dict(value))
            else:
                raw[key] = value
        return family_from_dict(raw, source=self.source, key="")


# ----------------------------------------------------------------------- fingerprinting


def fingerprint(cfg: FamilyConfig) -> str:
    """16 hex digits over everything that changes what training produces, and nothing else.

    In: model, data (a data file by content, not path), train without device, the model
    code version and the data-generator version; ``train.init_seed`` and ``train.data_seed``
    only when set (a pinned init seed gives every seed the same initial weights), so specs
    that leave them unset keep the fingerprint they had before the two were counted. Out:
    name, seeds (each seed is stored under its own key), probe set, device, checkpoint and
    log intervals, tracking and expectations. The code of the harness, of user import paths
    and the torch version are out too (see :func:`harness.provenance.store_fingerprint`).

    Values count as resolved, so two specs that train identically share a fingerprint: a
    setting written out at the value training would use anyway (a generator option or an
    optimizer argument at its default, ``d_head``/``d_mlp`` at the built-in model's derived
    size, ``vocab_size: 256`` for byte text, a torch.optim name in another case) hashes as
    if it were left unset. Defaults compare by value and type (``0`` is not ``0.0``), lists
    as tuples.
    """
    from harness.data import GENERATOR_VERSION
    from harness.provenance import file_digest

    payload = {
        "model": _resolved_model(cfg.model),
        "data": _resolved_data(cfg.data),
        "train": _resolved_train(cfg.train, cfg.source),
        "model_version": MODEL_VERSION,
        "generator_version": GENERATOR_VERSION if cfg.data.kind == "synthetic" else None,
    }
    if cfg.data.path is not None:
        payload["data"]["path"] = file_digest(Path(cfg.data.path))
    blob = json.dumps(_plain(payload), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _resolved_model(model: ModelConfig) -> dict[str, Any]:
    """The model section as the fingerprint counts it (see :func:`fingerprint`)."""
    out = dataclasses.asdict(model)
    for k in ("transformers", "transformer_lens"):  # absent library models leave old fingerprints alone
        if out[k] is None:
            out.pop(k)
    if model.custom is None:  # a user factory reads the raw fields, so only the built-in GPT resolves them
        if model.d_model % model.n_heads == 0 and model.d_head == model.d_model // model.n_heads:
            out["d_head"] = None
        if model.d_mlp == 4 * model.d_model:
            out["d_mlp"] = None
    return out


def _resolved_data(data: DataConfig) -> dict[str, Any]:
    """The data section as the fingerprint counts it (see :func:`fingerprint`)."""
    from harness.data import SyntheticLanguage

    out = dataclasses.asdict(data)
    if data.kind == "synthetic":
        out["synthetic"] = _without_defaults(data.synthetic, _keyword_defaults(SyntheticLanguage.__init__))
    if data.kind == "text" and data.vocab_size == 256:
        out["vocab_size"] = None
    return out


def _resolved_train(train: TrainConfig, source: str) -> dict[str, Any]:
    """The train section as the fingerprint counts it (see :func:`fingerprint`)."""
    out = dataclasses.asdict(train)
    for key in ("device", "checkpoint_every", "log_every"):
        out.pop(key)
    for key in ("init_seed", "data_seed"):
        if out[key] is None:
            out.pop(key)
    if ":" not in train.optimizer:
        out["optimizer"] = train.optimizer.lower()  # resolve_optimizer ignores case
    cls = resolve_optimizer(train.optimizer, source=source)
    defaults = _keyword_defaults(cls.__init__ if isinstance(cls, type) else cls)
    out["optimizer_kwargs"] = _without_defaults(train.optimizer_kwargs, defaults)
    if "weight_decay" in defaults and _same_value(train.weight_decay, defaults["weight_decay"]):
        out["weight_decay"] = None
    return out


def _keyword_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """``{parameter: default}`` of the named parameters of ``fn`` that have one; ``{}``
    when ``fn`` has no signature to read (a C extension)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {n: prm.default for n, prm in params.items()
            if prm.default is not inspect.Parameter.empty
            and prm.kind in (prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY)}


def _without_defaults(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` less the entries equal to their default (passing one changes nothing)."""
    return {k: v for k, v in values.items() if not (k in defaults and _same_value(v, defaults[k]))}


def _same_value(a: Any, b: Any) -> bool:
    """Equal by value and JSON type, lists and tuples alike: ``(0.9, 0.99) == [0.9, 0.99]``,
    but ``0 != 0.0`` and ``1 != True`` (code may branch on the type)."""
    try:
        return json.dumps(_plain(a), sort_keys=True) == json.dumps(_plain(b), sort_keys=True)
    except (TypeError, ValueError):  # a default JSON cannot write (an object): never equal to YAML
        return False


# ----------------------------------------------------------------------------- loading


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


def load_suite(path: str | Path) -> Suite:
    """Load a suite file (``families:``) or a single family file as a one-family suite."""
    path = Path(path)
    raw = _read_yaml(path)
    if "families" not in raw:
        fam = _load_family_file(path, raw, stack=())
        return Suite(name=fam.name, source=str(path), families={fam.name: fam},
                     expectations={}, regression={})
    _check_keys(raw, SUITE_KEYS, path, "")
    suite_name = raw.get("suite", path.stem)
    if not isinstance(suite_name, str) or not suite_name:
        raise ConfigError(path, "suite", f"expected a non-empty string, got {suite_name!r}")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(path, "defaults", f"expected a mapping, got {type(defaults).__name__}")
    _check_keys(defaults, FAMILY_KEYS - {"name", "extends"}, path, "defaults")
    fams_raw = raw["families"]
    if not isinstance(fams_raw, dict) or not fams_raw:
        raise ConfigError(path, "families", "expected a non-empty mapping of family name to spec")

    resolved: dict[str, dict] = {}

    def resolve(name: str, stack: tuple[str, ...]) -> dict:
        key = f"families.{name}"
        if name in stack:
            raise ConfigError(path, key + ".extends", "circular extends: " + " -> ".join(stack + (name,)))
        if name in resolved:
            return resolved[name]
        spec = fams_raw[name]
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise ConfigError(path, key, f"expected a mapping, got {type(spec).__name__}")
        _check_keys(spec, FAMILY_KEYS, path, key)
        spec = dict(spec)
        parent = spec.pop("extends", None)
        if parent is None:
            base = copy.deepcopy(defaults)
        elif not isinstance(parent, str):
            raise ConfigError(path, key + ".extends", f"expected a family name or a file path, got {parent!r}")
        elif parent in fams_raw:
            base = copy.deepcopy(resolve(parent, stack + (name,)))
            base.pop("name", None)
        else:
            parent_path = (path.parent / parent)
            if not parent_path.is_file():
                raise ConfigError(path, key + ".extends",
                                  f"{parent!r} is neither a family of this file nor an existing file")
            base = _merge(copy.deepcopy(defaults), _resolved_family_raw(parent_path, stack=(str(path),)))
            base.pop("name", None)
        merged = _merge(base, spec)
        merged.setdefault("name", name)
        resolved[name] = merged
        return merged

    families = {}
    for name in fams_raw:
        if not isinstance(name, str):
            raise ConfigError(path, "families", f"family names must be strings, got {name!r}")
        families[name] = family_from_dict(resolve(name, ()), source=str(path), key=f"families.{name}",
                                          base_dir=path.parent)
    return Suite(name=suite_name, source=str(path), families=families,
                 expectations=_mapping_or_empty(raw, "expectations", path),
                 regression=_mapping_or_empty(raw, "regression", path),
                 checks=_mapping_or_empty(raw, "checks", path))


def load_family(path: str | Path, name: str | None = None) -> FamilyConfig:
    """Load one family: from a family file, or family ``name`` of a suite file.

    ``path`` may also be written ``suite.yaml::name``.
    """
    text = str(path)
    if name is None and "::" in text:
        text, name = text.split("::", 1)
    suite = load_suite(text)
    if name is None:
        if len(suite.families) != 1:
            raise ConfigError(text, "families", "this file holds several families "
                              f"({', '.join(suite.families)}); name one as FILE::NAME")
        return next(iter(suite.families.values()))
    if name not in suite.families:
        raise ConfigError(text, f"families.{name}", f"no such family; this file has: {', '.join(suite.families)}")
    return suite.families[name]


def _load_family_file(path: Path, raw: dict, stack: tuple[str, ...]) -> FamilyConfig:
    merged = _resolved_family_raw(path, stack=stack, raw=raw)
    merged.setdefault("name", path.stem)
    return family_from_dict(merged, source=str(path), key="", base_dir=path.parent)


def _resolved_family_raw(path: Path, *, stack: tuple[str, ...], raw: dict | None = None) -> dict:
    if str(path) in stack:
        raise ConfigError(path, "extends", "circular extends: " + " -> ".join(stack + (str(path),)))
    raw = _read_yaml(path) if raw is None else raw
    if "families" in raw:
        raise ConfigError(path, "", "a suite file cannot be extended as a family; extend one of its families' files")
    _check_keys(raw, FAMILY_KEYS, path, "")
    raw = dict(raw)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(path, "extends", f"expected a file path, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise ConfigError(path, "extends", f"file {str(parent_path)!r} does not exist")
    base = _resolved_family_raw(parent_path, stack=stack + (str(path),))
    base.pop("name", None)
    # Relative data paths stay relative to the file that named them.
    for section in ("data", "probe"):
        p = base.get(section, {}).get("path") if isinstance(base.get(section), dict) else None
        if isinstance(p, str) and not Path(p).is_absolute():
            base[section]["path"] = str((parent_path.parent / p).resolve())
    return _merge(base, raw)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(path, "", "file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(path, "", f"not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raise ConfigError(path, "", "the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(path, "", f"expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _mapping_or_empty(raw: dict, key: str, path: Path) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


_LIBRARY_MODELS = ("transformers", "transformer_lens")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k == "model" and isinstance(v, dict) and isinstance(out.get(k), dict) and any(
                lib in v and lib not in out[k] for lib in _LIBRARY_MODELS):
            # a library model builds from its own config: the inherited GPT keys do not apply
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("optimizer_kwargs",):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_keys(raw: Mapping, allowed: set[str], path: str | Path, prefix: str) -> None:
    for k in raw:
        if k not in allowed:
            key = f"{prefix}.{k}" if prefix else str(k)
            raise ConfigError(path, key, f"unknown key; expected one of: {', '.join(sorted(allowed))}")


# -------------------------------------------------------------------------- validation


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


def _check_optimizer_arguments(cls: type, train: TrainConfig, source: str, p: Callable[[str], str]) -> None:
    """Build ``cls`` on a dummy parameter with exactly the arguments training passes
    (harness.train.build_optimizer), so a bad ``optimizer_kwargs`` fails at load time with
    the dotted key at fault instead of as a TypeError when training starts."""
    import torch

    kwargs = {**train.optimizer_kwargs, "lr": train.lr}
    if train.weight_decay is not None:
        kwargs["weight_decay"] = train.weight_decay
    where = {k: f"train.optimizer_kwargs.{k}" for k in train.optimizer_kwargs}
    where.update(lr="train.lr", weight_decay="train.weight_decay")
    name = getattr(cls, "__name__", repr(cls))
    factory = is_optimizer_factory(cls)
    try:
        params = inspect.signature(cls if factory else cls.__init__).parameters
    except (TypeError, ValueError):  # no signature to read (a C extension): construction decides
        params = None
    if factory and params is not None:
        first = next(iter(params), None)  # the model
        params = {n: prm for n, prm in params.items() if n != first}
    if params is not None and not any(prm.kind == prm.VAR_KEYWORD for prm in params.values()):
        accepted = [n for n, prm in params.items() if n not in ("self", "params")
                    and prm.kind in (prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY)]
        for k in kwargs:
            if k in accepted:
                continue
            if k == "lr":
                raise ConfigError(source, p("train.optimizer"), f"{name} takes no lr argument, but training "
                                  "passes train.lr to every optimizer; use an optimizer that takes lr")
            if k == "weight_decay":
                raise ConfigError(source, p("train.weight_decay"), f"{name} takes no weight_decay argument; "
                                  "remove train.weight_decay")
            raise ConfigError(source, p(where[k]), f"{name} takes no argument {k!r}; it takes: "
                              f"{', '.join(accepted) or 'nothing'}")

    if factory:  # it needs the real model; what it builds is checked when training starts
        return

    def fails(kw: dict[str, Any]) -> Exception | None:
        # A 1-element parameter suits every optimizer; a (2, 2) one is tried too for those
        # that accept matrices only (a shape check, not a bad argument).
        for shape in ((1,), (2, 2)):
            try:
                cls([torch.nn.Parameter(torch.zeros(shape))], **kw)
                return None
            except Exception as e:  # the optimizer's own validation, whatever it raises
                error = e
        return error

    error = fails(kwargs)
    if error is None:
        return
    # Blame the one argument whose removal makes construction succeed; several: the mapping.
    culprits = [k for k in kwargs if fails({j: v for j, v in kwargs.items() if j != k}) is None]
    key = where[culprits[0]] if len(culprits) == 1 else "train.optimizer_kwargs"
    shown = f"{culprits[0]}={kwargs[culprits[0]]!r}" if len(culprits) == 1 else \
        ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    raise ConfigError(source, p(key), f"{name} rejects {shown}: {type(error).__name__}: {error}")


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


def resolve_optimizer(name: str, *, source: str = "<memory>", key: str = "train.optimizer") -> Any:
    """The optimizer for a torch.optim name (any case) or a ``module:attribute`` path: a class
    (built as ``cls(model.parameters(), lr=..., **optimizer_kwargs)``) or a factory function
    (called as ``fn(model, lr=..., **optimizer_kwargs)``, returning an optimizer: parameter
    groups, Muon-style splits)."""
    import torch

    if ":" in name:
        obj = _import_path(name, source, key)
        if not callable(obj):
            raise ConfigError(source, key, f"{name!r} is neither an optimizer class nor a factory function")
        return obj
    table = {n.lower(): getattr(torch.optim, n) for n in dir(torch.optim)
             if isinstance(getattr(torch.optim, n), type)
             and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
             and getattr(torch.optim, n) is not torch.optim.Optimizer}
    if name.lower() not in table:
        raise ConfigError(source, key, f"unknown optimizer {name!r}; use a torch.optim name "
                          f"({', '.join(sorted(table))}) or an import path module:Class or module:factory")
    return table[name.lower()]


def is_optimizer_factory(obj: Any) -> bool:
    """A factory ``fn(model, **kwargs) -> Optimizer`` rather than an optimizer class."""
    return callable(obj) and not isinstance(obj, type)


def _import_path(spec: str, source: str, key: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(source, key, f"expected an import path module:attribute, got {spec!r}")
    try:
        module = _import_module(module_name, source)
    except Exception as e:  # ImportError, or the module failing at import
        raise ConfigError(source, key, f"cannot import {module_name!r}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(source, key, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _import_module(name: str, source: str) -> Any:
    """Import ``name``; user modules next to the spec file or in the working directory are
    found too (``optimizer: my_optim:Lion`` beside ``suite.yaml``)."""
    import sys

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name.split(".")[0]:
            raise
    extra = [str(Path(source).resolve().parent), str(Path.cwd())] if source != "<memory>" else [str(Path.cwd())]
    for d in extra:
        if d not in sys.path:
            sys.path.append(d)
    return importlib.import_module(name)


def import_path(spec: str, *, source: str = "<memory>", key: str = "") -> Any:
    """Import ``module:attribute``; ConfigError naming source and key when it does not."""
    return _import_path(spec, source, key)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
