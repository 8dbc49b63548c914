"""TransformerLens models as seedstab models (``model.transformer_lens`` in a family spec).

::

    model:
      transformer_lens: {n_layers: 2, d_model: 64, n_heads: 4, d_head: 16, attn_only: true}

The mapping holds ``HookedTransformerConfig`` keys; ``d_vocab`` and ``n_ctx`` come from the
data spec, ``seed`` is refused (TransformerLens would reseed Python's, numpy's and torch's
global generators; seedstab seeds initialisation from the family seed instead), and the model
is initialised by TransformerLens's own init under the seed's ``init_seed``.

TransformerLens already uses seedstab's hook vocabulary (``blocks.{l}.hook_resid_pre``,
``attn.hook_pattern``, ``attn.hook_z``, ``hook_resid_mid``, ``hook_resid_post``), so the
``HookedTransformer`` itself is the model: its ``HookPoint`` modules take seedstab's hooks
as forward hooks, and ``n_layers`` / ``n_heads`` are read from ``model.cfg``. An attn-only
model has no ``hook_resid_mid`` (no MLP sits between attention and the block's output), so
``hook_resid_post`` stands in for it. A ``HookedTransformer`` built in code can be returned
by a ``model.custom`` factory just as well. Tested with TransformerLens 3 against its own
``run_with_cache``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from harness.config import ConfigError

__all__ = ["build", "validate"]

_FROM_DATA = ("d_vocab", "n_ctx")


def _tl(source: str, key: str) -> Any:
    try:
        import transformer_lens
    except ImportError:
        raise ConfigError(source, key, "needs the transformer_lens package: pip install 'seedstab[tl]'") from None
    return transformer_lens


def validate(spec: Mapping[str, Any], *, source: str, key: str) -> None:
    """Check a ``model.transformer_lens`` mapping at load time (file and key named)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(source, key, f"expected a mapping of HookedTransformerConfig keys, got {spec!r}")
    tl = _tl(source, key)
    import dataclasses

    fields = {f.name for f in dataclasses.fields(tl.HookedTransformerConfig)}
    for k in spec:
        if k in _FROM_DATA:
            raise ConfigError(source, f"{key}.{k}", "set by the data spec (vocab_size, seq_len); leave it out")
        if k == "seed":
            raise ConfigError(source, f"{key}.seed", "initialisation is seeded from the family seed "
                              "(train.init_seed); TransformerLens's seed would reseed global generators")
        if k not in fields:
            raise ConfigError(source, f"{key}.{k}", "not a HookedTransformerConfig key")
    for k in ("n_layers", "d_model"):
        if k not in spec:
            raise ConfigError(source, f"{key}.{k}", "required by HookedTransformerConfig")


def build(spec: Mapping[str, Any], *, vocab_size: int, n_ctx: int, init_seed: int,
          source: str = "<memory>", key: str = "model.transformer_lens") -> nn.Module:
    validate(spec, source=source, key=key)
    tl = _tl(source, key)
    kwargs = dict(spec)
    if "n_heads" not in kwargs and "d_head" not in kwargs:
        raise ConfigError(source, f"{key}.n_heads", "give n_heads (and d_head, or d_model divisible by it)")
    if "n_heads" in kwargs and "d_head" not in kwargs:
        if int(kwargs["d_model"]) % int(kwargs["n_heads"]):
            raise ConfigError(source, f"{key}.d_head", "d_model is not divisible by n_heads; set d_head")
        kwargs["d_head"] = int(kwargs["d_model"]) // int(kwargs["n_heads"])
    if kwargs.get("attn_only") and "act_fn" not in kwargs:
        kwargs["act_fn"] = None
    if not kwargs.get("attn_only") and "act_fn" not in kwargs:
        kwargs["act_fn"] = "gelu"
    cfg = tl.HookedTransformerConfig(**kwargs, d_vocab=vocab_size, n_ctx=n_ctx, device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # HookedTransformer in TL 3.x
            model = tl.HookedTransformer(cfg)
    quiet(model)
    from harness.model import check_protocol

    check_protocol(model, where=f"{source}: {key}")
    return model


def quiet(model: nn.Module) -> nn.Module:
    """HookedTransformer.to prints "Moving model to device" on every call; training and
    analysis move models often, so this instance's ``to`` passes ``print_details=False``."""
    import functools

    to = type(model).to
    if "print_details" in __import__("inspect").signature(to).parameters:
        object.__setattr__(model, "to", functools.partial(to, model, print_details=False))
    return model
