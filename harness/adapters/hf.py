"""Hugging Face causal LMs as seedstab models (``model.transformers`` in a family spec).

::

    model:
      transformers:
        model: GPT2LMHeadModel            # a transformers class name, or module:Class
        config: {n_layer: 2, n_head: 4, n_embd: 64}
        # config_class: GPT2Config        # default: the model class's own config class

The config's vocabulary size and context length come from the data spec (``vocab_size``,
``seq_len``; setting them in ``config`` to other values is an error), dropout is off unless
``config`` sets it (a dropout run is still reproducible: the global RNG is seeded per seed),
and the model is initialised by the library's own init under the seed's ``init_seed``.

How it is looked inside, without changing the library's code:

* **attention** runs through an attention function registered with transformers'
  ``AttentionInterface`` under the name ``seedstab`` (the model's ``attn_implementation``):
  eager attention (grouped-query heads repeated, the causal mask applied here) whose
  post-softmax pattern passes ``blocks.{l}.attn.hook_pattern`` and whose per-head output
  passes ``blocks.{l}.attn.hook_z`` before the library's output projection, so head
  ablation works. Its logits equal the library's eager forward (tested);
* **residual stream**: forward hooks on each decoder layer give ``hook_resid_pre`` (its
  input) and ``hook_resid_post`` (its output), and a pre-hook on the norm in front of the MLP
  (``ln_2`` in GPT-2, ``post_attention_layernorm`` in Llama-style models) gives
  ``hook_resid_mid``. ``hook_resid_mid`` is observed only: a hook that returns a tensor
  there would change the MLP's input but not the residual, so its return value is ignored.

Supported layouts: decoder layers in one ``nn.ModuleList`` whose attention modules carry
``layer_idx`` (GPT-2, Llama, Mistral, Qwen2, Gemma and most causal LMs of transformers ≥ 4.48),
with a sequential residual (attention, then MLP). Parallel-residual models (GPT-J, GPT-NeoX)
have no ``resid_mid`` and are refused with a message.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from harness.config import ConfigError

__all__ = ["build", "validate", "TransformersModel", "ATTN_IMPLEMENTATION"]

ATTN_IMPLEMENTATION = "seedstab"
_KEYS = {"model", "config", "config_class"}
_MID_NORMS = ("ln_2", "post_attention_layernorm")
_VOCAB_KEYS = ("vocab_size",)
_CTX_KEYS = ("max_position_embeddings", "n_positions")


def _transformers(source: str, key: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(source, key, "needs the transformers package: pip install 'seedstab[hf]'") from None
    return transformers


def _resolve(name: str, source: str, key: str) -> type:
    if ":" in name:
        from harness.config import import_path

        obj = import_path(name, source=source, key=key)
    else:
        obj = getattr(_transformers(source, key), name, None)
        if obj is None:
            raise ConfigError(source, key, f"transformers has no class {name!r}; give a class "
                              "name such as GPT2LMHeadModel or LlamaForCausalLM, or module:Class")
    if not isinstance(obj, type):
        raise ConfigError(source, key, f"{name!r} is not a class")
    return obj


def validate(spec: Mapping[str, Any], *, source: str, key: str) -> tuple[type, type]:
    """Check a ``model.transformers`` mapping at load time; returns (model class, config
    class). Unknown keys, a class that does not exist, a config key the config class does not
    know, and a vocabulary or context that disagrees with the data spec are errors naming the
    file and key."""
    if not isinstance(spec, Mapping):
        raise ConfigError(source, key, f"expected a mapping with keys {sorted(_KEYS)}, got {spec!r}")
    for k in spec:
        if k not in _KEYS:
            raise ConfigError(source, f"{key}.{k}", f"unknown key; expected one of: {', '.join(sorted(_KEYS))}")
    if not isinstance(spec.get("model"), str):
        raise ConfigError(source, f"{key}.model", "required: a transformers causal-LM class name "
                          "(GPT2LMHeadModel, LlamaForCausalLM, …) or module:Class")
    model_cls = _resolve(spec["model"], source, f"{key}.model")
    transformers = _transformers(source, key)
    if not issubclass(model_cls, transformers.PreTrainedModel):
        raise ConfigError(source, f"{key}.model", f"{spec['model']} is not a transformers PreTrainedModel")
    if "config_class" in spec:
        config_cls = _resolve(str(spec["config_class"]), source, f"{key}.config_class")
    else:
        config_cls = getattr(model_cls, "config_class", None)
        if not isinstance(config_cls, type):
            raise ConfigError(source, f"{key}.config_class", f"{spec['model']} names no config class; set one")
    config = spec.get("config", {})
    if not isinstance(config, Mapping):
        raise ConfigError(source, f"{key}.config", f"expected a mapping of {config_cls.__name__} keys, got {config!r}")
    default = config_cls()
    for k in config:
        if not hasattr(default, str(k)):
            raise ConfigError(source, f"{key}.config.{k}", f"{config_cls.__name__} has no key {k!r}")
    return model_cls, config_cls


def build(spec: Mapping[str, Any], *, vocab_size: int, n_ctx: int, init_seed: int,
          source: str = "<memory>", key: str = "model.transformers") -> "TransformersModel":
    """The model, initialised by the library under ``init_seed`` (global RNG forked)."""
    model_cls, config_cls = validate(spec, source=source, key=key)
    _register()
    user = dict(spec.get("config", {}))
    config = config_cls(**user)
    for k in _VOCAB_KEYS:
        if k in user and user[k] != vocab_size:
            raise ConfigError(source, f"{key}.config.{k}", f"{user[k]} disagrees with the data's "
                              f"vocabulary ({vocab_size}); leave it out, it is taken from data")
        setattr(config, k, vocab_size)
    for k in _CTX_KEYS:
        if hasattr(config, k):
            if k in user and int(user[k]) < n_ctx:
                raise ConfigError(source, f"{key}.config.{k}", f"{user[k]} is shorter than the "
                                  f"data's seq_len {n_ctx}")
            if k not in user:
                setattr(config, k, n_ctx)
    for k, v in config.to_dict().items():  # dropout off unless asked for
        if ("dropout" in k or "pdrop" in k) and isinstance(v, float) and k not in user:
            setattr(config, k, 0.0)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):  # ids past a small vocabulary
        v = getattr(config, k, None)
        if isinstance(v, int) and v >= vocab_size and k not in user:
            setattr(config, k, None)
    config._attn_implementation = ATTN_IMPLEMENTATION
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        hf = model_cls(config)
    return TransformersModel(hf, where=f"{source}: {key}")


class _Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from harness.model import HookPoint

        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from harness.model import HookPoint

        self.hook_resid_pre = HookPoint()
        self.attn = _Attn()
        self.hook_resid_mid = HookPoint()
        self.hook_resid_post = HookPoint()


class TransformersModel(nn.Module):
    """A transformers causal LM behind the model protocol: ``forward(tokens) -> logits``,
    ``n_layers``, ``n_heads``, and the hook points ``blocks.{l}.…`` (see module doc). The
    library model is ``self.hf``."""

    def __init__(self, hf: nn.Module, *, where: str = "model.transformers") -> None:
        super().__init__()
        self.hf = hf
        config = hf.config
        self.n_layers = int(config.num_hidden_layers)
        self.n_heads = int(config.num_attention_heads)
        self.blocks = nn.ModuleList(_Block() for _ in range(self.n_layers))
        layers = _decoder_layers(hf, self.n_layers, where)
        for l, layer in enumerate(layers):
            block = self.blocks[l]
            attn = [m for m in layer.modules() if getattr(m, "layer_idx", None) == l and m is not layer]
            if not attn:
                raise ConfigError(where, "model", f"layer {l} of {type(hf).__name__} has no attention "
                                  "module with layer_idx; this layout is not supported")
            for m in attn:
                m._seedstab_hooks = (block.attn.hook_pattern, block.attn.hook_z)  # a tuple: not submodules
            norm = next((getattr(layer, n) for n in _MID_NORMS if isinstance(getattr(layer, n, None), nn.Module)), None)
            if norm is None:
                raise ConfigError(where, "model", f"{type(layer).__name__} has no norm before its MLP "
                                  f"({' / '.join(_MID_NORMS)}): parallel-residual layouts have no "
                                  "resid_mid and are not supported")
            layer.register_forward_pre_hook(_pre(block.hook_resid_pre), with_kwargs=True)
            layer.register_forward_hook(_post(block.hook_resid_post))
            norm.register_forward_pre_hook(_mid(block.hook_resid_mid))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=tokens, use_cache=False).logits


def _decoder_layers(hf: nn.Module, n_layers: int, where: str) -> nn.ModuleList:
    for _, mod in hf.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and all(
                any(getattr(m, "layer_idx", None) == i for m in layer.modules()) for i, layer in enumerate(mod)):
            return mod
    raise ConfigError(where, "model", f"cannot find the {n_layers} decoder layers of "
                      f"{type(hf).__name__} (an nn.ModuleList whose attention modules carry layer_idx)")


def _pre(point: nn.Module):
    def hook(module: nn.Module, args: tuple, kwargs: dict):
        if args:
            return (point(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": point(kwargs["hidden_states"])}
    return hook


def _post(point: nn.Module):
    def hook(module: nn.Module, args: tuple, output: Any):
        if isinstance(output, tuple):
            return (point(output[0]), *output[1:])
        return point(output)
    return hook


def _mid(point: nn.Module):
    def hook(module: nn.Module, args: tuple) -> None:
        point(args[0])  # observed only (see module doc)
    return hook


def seedstab_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None,
                       dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager causal attention with the pattern and z hook points. query [B, H, T, D],
    key/value [B, H_kv, S, D]; returns (z [B, T, H, D], pattern [B, H, T, S])."""
    n_rep = query.shape[1] // key.shape[1]
    if n_rep > 1:  # grouped-query attention
        key, value = key.repeat_interleave(n_rep, dim=1), value.repeat_interleave(n_rep, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale  # (B, H, T, S)
    T, S = scores.shape[-2:]
    causal = torch.ones(T, S, dtype=torch.bool, device=scores.device).tril(S - T)
    scores = scores.masked_fill(~causal, float("-inf"))
    if attention_mask is not None:  # padding, when a caller passes one
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    hooks = getattr(module, "_seedstab_hooks", None)
    if hooks is not None:
        pattern = hooks[0](pattern)
    pattern_d = nn.functional.dropout(pattern, p=dropout, training=module.training)
    z = torch.matmul(pattern_d, value).transpose(1, 2)  # (B, T, H, D)
    if hooks is not None:
        z = hooks[1](z)
    return z.contiguous(), pattern


_REGISTERED = False


def _register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTN_IMPLEMENTATION, seedstab_attention)
        _REGISTERED = True
