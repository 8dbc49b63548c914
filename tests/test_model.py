"""The hooked GPT: hook names and shapes, hooks leave nothing behind, ablation, options."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from harness.config import ConfigError, ModelConfig
from harness.model import (GPT, Attention, HookPoint, ablate_heads, build_model, capture, check_protocol, hook_points,
                           hooks, required_hook_names)

V, T = 50, 16


def tiny(**kw) -> nn.Module:
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=32, **kw)
    return build_model(cfg, vocab_size=V, n_ctx=T, init_seed=0)


def tokens(B: int = 3) -> torch.Tensor:
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(1))


def test_hook_names_and_shapes():
    model = tiny()
    names = required_hook_names(2)
    assert set(names) <= set(hook_points(model))
    with capture(model, names) as acts:
        logits = model(tokens())
    assert logits.shape == (3, T, V)
    assert acts["blocks.1.attn.hook_pattern"][0].shape == (3, 4, T, T)
    assert acts["blocks.1.attn.hook_z"][0].shape == (3, T, 4, 8)
    for s in ("pre", "mid", "post"):
        assert acts[f"blocks.0.hook_resid_{s}"][0].shape == (3, T, 32)
    pat = acts["blocks.0.attn.hook_pattern"][0]
    assert torch.allclose(pat.sum(-1), torch.ones(3, 4, T), atol=1e-5)
    assert torch.all(pat.triu(1) == 0), "attention must be causal"
    # resid_post of layer 0 is resid_pre of layer 1
    assert torch.equal(acts["blocks.0.hook_resid_post"][0], acts["blocks.1.hook_resid_pre"][0])


def test_hooks_are_removed_even_on_error():
    model = tiny()
    with pytest.raises(RuntimeError):
        with capture(model, ["blocks.0.attn.hook_z"]):
            raise RuntimeError("boom")
    assert all(not p._hooks for p in hook_points(model).values())
    with ablate_heads(model, {0: [1]}):
        pass
    assert all(not p._hooks for p in hook_points(model).values())


def test_unknown_hook_name_is_a_clear_error():
    with pytest.raises(KeyError, match="no hook point named 'blocks.9.attn.hook_z'"):
        with hooks(tiny(), {"blocks.9.attn.hook_z": lambda x, hook: None}):
            pass


def test_ablation_zeroes_only_the_named_heads_and_changes_output():
    model = tiny()
    x = tokens()
    base = model(x)
    with capture(model, ["blocks.0.attn.hook_z"]) as acts, ablate_heads(model, {0: [2]}):
        ablated = model(x)
    # capture was attached first, so it sees z before the ablation replaced it
    assert acts["blocks.0.attn.hook_z"][0][:, :, 2].abs().sum() > 0
    assert not torch.allclose(base, ablated)
    with ablate_heads(model, {0: [2]}), capture(model, ["blocks.0.attn.hook_z"]) as acts2:
        model(x)
    z = acts2["blocks.0.attn.hook_z"][0]
    assert torch.all(z[:, :, 2] == 0) and z[:, :, [0, 1, 3]].abs().sum() > 0
    assert torch.equal(model(x), base), "ablation must not outlive its block"


def test_unhooked_model_computes_the_same():
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=32)
    hooked = build_model(cfg, vocab_size=V, n_ctx=T, init_seed=3)
    bare = build_model(cfg, vocab_size=V, n_ctx=T, init_seed=3, hooked=False)
    assert not hook_points(bare)
    assert torch.equal(hooked(tokens()), bare(tokens()))


@pytest.mark.parametrize("kw", [dict(attn_only=True), dict(norm="post"), dict(norm="none"),
                                dict(positions="rotary"), dict(qk_norm=True), dict(tied_embeddings=True),
                                dict(activation="relu"), dict(d_head=16), dict(d_mlp=48)])
def test_architecture_options_run_and_keep_hooks(kw):
    model = tiny(**kw)
    check_protocol(model)
    with capture(model, ["blocks.1.attn.hook_pattern"]) as acts:
        out = model(tokens(2))
    assert out.shape == (2, T, V) and torch.isfinite(out).all()
    assert acts["blocks.1.attn.hook_pattern"][0].shape == (2, 4, T, T)


def test_init_is_a_function_of_init_seed_only():
    a, b, c = tiny(), tiny(), build_model(ModelConfig(n_layers=2, n_heads=4, d_model=32), vocab_size=V,
                                          n_ctx=T, init_seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    # No global RNG is touched.
    state = torch.random.get_rng_state()
    tiny()
    assert torch.equal(state, torch.random.get_rng_state())


# --- the model protocol: a user's own module -------------------------------------------


class UserBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, n_ctx: int) -> None:
        super().__init__()
        self.attn = Attention(cfg, n_ctx, hooked=True)
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x):
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.attn(x))
        return self.hook_resid_post(x)


class UserModel(nn.Module):
    """A user's own attention-only model, exposing the protocol's hook names."""

    def __init__(self, cfg: ModelConfig, *, vocab_size: int, n_ctx: int) -> None:
        super().__init__()
        self.n_layers, self.n_heads = cfg.n_layers, cfg.n_heads
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList([UserBlock(cfg, n_ctx) for _ in range(cfg.n_layers)])
        self.out = nn.Linear(cfg.d_model, vocab_size)

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.out(x)


class Wrapped(nn.Module):
    """Hooks one level down ("inner.blocks..."): not the protocol."""

    def __init__(self, cfg: ModelConfig, *, vocab_size: int, n_ctx: int) -> None:
        super().__init__()
        self.n_layers, self.n_heads = cfg.n_layers, cfg.n_heads
        self.inner = GPT(cfg, vocab_size=vocab_size, n_ctx=n_ctx)


def test_custom_model_through_import_path(monkeypatch):
    mod = types.ModuleType("user_models_for_test")
    mod.build, mod.wrapped = UserModel, Wrapped
    mod.not_a_module = lambda cfg, vocab_size, n_ctx: "nope"
    mod.no_layers = lambda cfg, vocab_size, n_ctx: nn.Linear(2, 2)
    monkeypatch.setitem(sys.modules, "user_models_for_test", mod)
    cfg = ModelConfig(n_layers=2, d_model=32, custom="user_models_for_test:build")
    model = build_model(cfg, vocab_size=V, n_ctx=T, init_seed=0)
    again = build_model(cfg, vocab_size=V, n_ctx=T, init_seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with capture(model, ["blocks.1.attn.hook_pattern"]) as acts:
        model(tokens(2))
    assert acts["blocks.1.attn.hook_pattern"][0].shape == (2, 4, T, T)
    with pytest.raises(ConfigError, match="has no module at"):
        build_model(ModelConfig(custom="user_models_for_test:wrapped"), vocab_size=V, n_ctx=T, init_seed=0)
    with pytest.raises(ConfigError, match="integer attribute 'n_layers'"):
        build_model(ModelConfig(custom="user_models_for_test:no_layers"), vocab_size=V, n_ctx=T, init_seed=0)
    with pytest.raises(ConfigError, match="model.custom: .*not an nn.Module"):
        build_model(ModelConfig(custom="user_models_for_test:not_a_module"), vocab_size=V, n_ctx=T, init_seed=0)


def test_hookpoint_replacement_and_none():
    hp = HookPoint()
    x = torch.ones(2)
    hp._hooks.append(lambda t, hook: None)
    hp._hooks.append(lambda t, hook: t * 3)
    assert torch.equal(hp(x), torch.full((2,), 3.0))
