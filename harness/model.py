"""A small GPT with TransformerLens hook names, and the hooks that look inside it.

Hook names (the vocabulary of specs and metrics)::

    blocks.{l}.hook_resid_pre    [batch, pos, d_model]
    blocks.{l}.attn.hook_pattern [batch, head, q, k]   post-softmax
    blocks.{l}.attn.hook_z       [batch, pos, head, d_head]
    blocks.{l}.hook_resid_mid    [batch, pos, d_model]
    blocks.{l}.hook_resid_post   [batch, pos, d_model]

A hook is ``fn(tensor, *, hook) -> Tensor | None``; returning a tensor replaces the
activation (that is how ablation works). Hooks are global state on the module, so they
are only ever attached inside :func:`hooks`, which removes them in ``finally``.

The model protocol (for a user's own ``nn.Module``): attributes ``n_layers`` and
``n_heads`` (or a ``cfg`` with them, as TransformerLens has); ``forward(tokens [B, T] int64)
-> logits [B, T, vocab]``; a submodule at each name above that passes its input through
(seedstab's :class:`HookPoint`, TransformerLens's ``HookPoint``, or any identity module
that takes forward hooks); optionally ``query_weight(layer) -> Tensor`` for the query-norm
metric. A model whose ``cfg.attn_only`` is true may omit ``hook_resid_mid``: with no MLP,
the residual stream after attention *is* ``hook_resid_post``, so that name stands in.
Build one from YAML with ``model.custom: "package.module:factory"``, where
``factory(cfg: ModelConfig, *, vocab_size: int, n_ctx: int) -> nn.Module``;
``model.transformers`` and ``model.transformer_lens`` build library models with no code
(:mod:`harness.adapters`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ConfigError, ModelConfig, import_path

HookFn = Callable[..., "torch.Tensor | None"]


class HookPoint(nn.Module):
    """Identity module that hands its input to attached hooks (TransformerLens style)."""

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self._hooks: list[HookFn] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._hooks:  # the fast path: unused hooks cost one attribute check
            return x
        for fn in self._hooks:
            out = fn(x, hook=self)
            if out is not None:
                x = out
        return x


def _no_hook(x: torch.Tensor) -> torch.Tensor:
    return x


@runtime_checkable
class HookedModel(Protocol):
    n_layers: int
    n_heads: int

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def named_modules(self, *args, **kwargs) -> Iterator[tuple[str, nn.Module]]: ...


def required_hook_names(n_layers: int) -> list[str]:
    names = []
    for l in range(n_layers):
        names += [f"blocks.{l}.hook_resid_pre", f"blocks.{l}.attn.hook_pattern", f"blocks.{l}.attn.hook_z",
                  f"blocks.{l}.hook_resid_mid", f"blocks.{l}.hook_resid_post"]
    return names


def hook_points(model: nn.Module) -> dict[str, nn.Module]:
    """Every hook point by name: seedstab :class:`HookPoint` modules anywhere, and any other
    module at a name of the hook vocabulary (a TransformerLens ``HookPoint``, an identity).
    Under an attn-only ``cfg`` a missing ``hook_resid_mid`` is ``hook_resid_post``."""
    adopt_dims(model)
    points: dict[str, nn.Module] = {}
    wanted = set(required_hook_names(_layers(model) or 0))
    for name, mod in model.named_modules():
        if isinstance(mod, HookPoint):
            mod.name = name
            points[name] = mod
        elif name in wanted:
            points[name] = mod
    if getattr(getattr(model, "cfg", None), "attn_only", False):
        for l in range(_layers(model) or 0):
            mid, post = f"blocks.{l}.hook_resid_mid", f"blocks.{l}.hook_resid_post"
            if mid not in points and post in points:
                points[mid] = points[post]
    return points


def _layers(model: nn.Module) -> int | None:
    v = getattr(model, "n_layers", None)
    return v if isinstance(v, int) else None


def adopt_dims(model: nn.Module) -> nn.Module:
    """Give a model whose layer and head counts live in ``model.cfg`` (TransformerLens)
    the ``n_layers`` / ``n_heads`` attributes of the protocol; others are left alone."""
    cfg = getattr(model, "cfg", None)
    for attr in ("n_layers", "n_heads"):
        if not isinstance(getattr(model, attr, None), int) and isinstance(getattr(cfg, attr, None), int):
            object.__setattr__(model, attr, getattr(cfg, attr))
    return model


def check_protocol(model: nn.Module, *, where: str = "model") -> None:
    """Raise ConfigError unless ``model`` follows the model protocol (see module doc)."""
    adopt_dims(model)
    for attr in ("n_layers", "n_heads"):
        if not isinstance(getattr(model, attr, None), int):
            raise ConfigError(where, attr, f"the model must expose an integer attribute {attr!r} "
                              "(or model.cfg.{attr})")
    points = hook_points(model)
    missing = [n for n in required_hook_names(model.n_layers) if n not in points]
    if missing:
        raise ConfigError(where, "hooks", f"the model ({type(model).__name__}) has no module at "
                          f"{missing[:3]}{' …' if len(missing) > 3 else ''}; each hook name must "
                          "be a module that passes its input through (see harness.model's protocol)")


@contextlib.contextmanager
def hooks(model: nn.Module, fns: Mapping[str, HookFn]) -> Iterator[None]:
    """Attach ``{hook name: fn}`` for the duration of the block; always detached after.
    On a seedstab HookPoint the fn joins its list; on any other module it becomes a forward
    hook whose return value (if not None) replaces the module's output."""
    points = hook_points(model)
    unknown = [n for n in fns if n not in points]
    if unknown:
        raise KeyError(f"no hook point named {unknown[0]!r}; known: {', '.join(list(points)[:6])} …")
    attached: list[tuple[HookPoint, HookFn]] = []
    handles = []
    try:
        for name, fn in fns.items():
            point = points[name]
            if isinstance(point, HookPoint):
                point._hooks.append(fn)
                attached.append((point, fn))
            else:
                handles.append(point.register_forward_hook(_forward_hook(fn)))
        yield
    finally:
        for point, fn in attached:
            point._hooks.remove(fn)
        for h in handles:
            h.remove()


def _forward_hook(fn: HookFn) -> Callable[..., "torch.Tensor | None"]:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> "torch.Tensor | None":
        return fn(output, hook=module)
    return hook


@contextlib.contextmanager
def capture(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the named activations of every forward pass inside the block.

    Yields ``{name: [tensor per forward call]}`` (detached, on the model's device).
    """
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}

    def make(name: str) -> HookFn:
        def record(x: torch.Tensor, *, hook: HookPoint) -> None:
            store[name].append(x.detach())
        return record

    with hooks(model, {n: make(n) for n in names}):
        yield store


@contextlib.contextmanager
def ablate_heads(model: nn.Module, heads: Mapping[int, Sequence[int]]) -> Iterator[None]:
    """Zero-ablate heads: ``{layer: [head, ...]}`` have their ``hook_z`` set to 0."""

    def make(idx: list[int]) -> HookFn:
        def zero(z: torch.Tensor, *, hook: HookPoint) -> torch.Tensor:
            z = z.clone()  # (B, T, nh, hs)
            z[:, :, idx] = 0.0
            return z
        return zero

    with hooks(model, {f"blocks.{l}.attn.hook_z": make(list(h)) for l, h in heads.items()}):
        yield


# ------------------------------------------------------------------------------- model


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., ::2], x[..., 1::2]  # (B, nh, T, hs/2)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, n_ctx: int, hooked: bool) -> None:
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.head_dim
        inner = self.n_heads * self.d_head
        self.W_Q = nn.Linear(cfg.d_model, inner)
        self.W_K = nn.Linear(cfg.d_model, inner)
        self.W_V = nn.Linear(cfg.d_model, inner)
        self.W_O = nn.Linear(inner, cfg.d_model)
        self.q_norm = nn.LayerNorm(self.d_head) if cfg.qk_norm else None
        self.k_norm = nn.LayerNorm(self.d_head) if cfg.qk_norm else None
        self.rotary = cfg.positions == "rotary"
        if self.rotary:
            inv = 1.0 / (10000 ** (torch.arange(0, self.d_head, 2).float() / self.d_head))
            ang = torch.arange(n_ctx).float()[:, None] * inv[None, :]  # (T, hs/2)
            self.register_buffer("cos", ang.cos(), persistent=False)
            self.register_buffer("sin", ang.sin(), persistent=False)
        mask = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)
        self.hook_pattern = HookPoint() if hooked else _no_hook
        self.hook_z = HookPoint() if hooked else _no_hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.W_Q(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        k = self.W_K(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        v = self.W_V(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary:
            q, k = _rotary(q, self.cos[:T], self.sin[:T]), _rotary(k, self.cos[:T], self.sin[:T])
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)  # (B, nh, T, T)
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        pattern = self.hook_pattern(scores.softmax(dim=-1))  # (B, nh, T, T)
        z = self.hook_z((pattern @ v).transpose(1, 2))  # (B, T, nh, hs)
        return self.W_O(z.reshape(B, T, self.n_heads * self.d_head))  # (B, T, d_model)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, n_ctx: int, hooked: bool) -> None:
        super().__init__()
        self.norm = cfg.norm
        ln = (lambda: nn.LayerNorm(cfg.d_model)) if cfg.norm != "none" else (lambda: nn.Identity())
        self.ln1 = ln()
        self.attn = Attention(cfg, n_ctx, hooked)
        self.attn_only = cfg.attn_only
        if not cfg.attn_only:
            self.ln2 = ln()
            act = {"gelu": nn.GELU(), "relu": nn.ReLU(), "silu": nn.SiLU()}[cfg.activation]
            self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_dim), act, nn.Linear(cfg.mlp_dim, cfg.d_model))
        self.hook_resid_pre = HookPoint() if hooked else _no_hook
        self.hook_resid_mid = HookPoint() if hooked else _no_hook
        self.hook_resid_post = HookPoint() if hooked else _no_hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hook_resid_pre(x)  # (B, T, d_model)
        if self.norm == "post":  # the original transformer: normalise after each residual add
            x = self.hook_resid_mid(self.ln1(x + self.attn(x)))
            if not self.attn_only:
                x = self.ln2(x + self.mlp(x))
        else:
            x = self.hook_resid_mid(x + self.attn(self.ln1(x)))
            if not self.attn_only:
                x = x + self.mlp(self.ln2(x))
        return self.hook_resid_post(x)


class GPT(nn.Module):
    """Decoder-only transformer; pre-LN, learned positions, GELU MLP, untied unembedding
    by default (TransformerLens's defaults, the paper's models)."""

    def __init__(self, cfg: ModelConfig, *, vocab_size: int, n_ctx: int, hooked: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_layers, self.n_heads = cfg.n_layers, cfg.n_heads
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(n_ctx, cfg.d_model) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList([Block(cfg, n_ctx, hooked) for _ in range(cfg.n_layers)])
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.unembed = None if cfg.tied_embeddings else nn.Linear(cfg.d_model, vocab_size, bias=False)
        if hooked:
            hook_points(self)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        B, T = tokens.shape
        x = self.embed(tokens)  # (B, T, d_model)
        if self.pos_embed is not None:
            x = x + self.pos_embed(torch.arange(T, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)
        if self.unembed is None:
            return x @ self.embed.weight.T  # (B, T, vocab)
        return self.unembed(x)  # (B, T, vocab)

    def query_weight(self, layer: int) -> torch.Tensor:
        return self.blocks[layer].attn.W_Q.weight  # (nh*hs, d_model)


def init_weights(model: nn.Module, *, std: float, generator: torch.Generator) -> None:
    """Deterministic init from ``generator``: N(0, std) weights, zero biases, unit norms."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:  # LayerNorm gains
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=generator)


def build_model(cfg: ModelConfig, *, vocab_size: int, n_ctx: int, init_seed: int,
                hooked: bool = True, source: str = "<memory>") -> nn.Module:
    """A freshly initialised model for ``cfg`` (on the CPU), seeded by ``init_seed`` alone."""
    generator = torch.Generator().manual_seed(init_seed)
    if cfg.custom is None and cfg.transformers is None and cfg.transformer_lens is None:
        # nn.Linear draws a default init from the global RNG before ours replaces it: fork it.
        with torch.random.fork_rng(devices=[]):
            model = GPT(cfg, vocab_size=vocab_size, n_ctx=n_ctx, hooked=hooked)
        init_weights(model, std=cfg.init_std, generator=generator)
        return model
    if cfg.transformers is not None or cfg.transformer_lens is not None:
        from harness import adapters

        return adapters.build(cfg, vocab_size=vocab_size, n_ctx=n_ctx, init_seed=init_seed, source=source)
    factory = import_path(cfg.custom, source=source, key="model.custom")
    # A user's module initialises itself; fork_rng keeps that from touching global state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = factory(cfg, vocab_size=vocab_size, n_ctx=n_ctx)
    if not isinstance(model, nn.Module):
        raise ConfigError(source, "model.custom", f"{cfg.custom} returned {type(model).__name__}, not an nn.Module")
    check_protocol(model, where=source)
    return model
