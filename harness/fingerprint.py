"""A family's identity: :func:`fingerprint`, 16 hex digits over the resolved settings that
change what training produces. It is the cache key (with the code digests of
:mod:`harness.provenance`), an MLflow tag and a baseline header.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.spec import DataConfig, FamilyConfig, ModelConfig, TrainConfig, _plain
from harness.spec_optimizer import resolve_optimizer

# Bump when harness/model.py changes what a given config *means* (it is in the fingerprint,
# so committed baselines go stale). Edits that only change the bits are caught without a
# bump: the store key carries harness.provenance.harness_digest(), so they retrain.
MODEL_VERSION = "gpt-1"


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
