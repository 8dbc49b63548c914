"""Library models from YAML (``model.transformers``, ``model.transformer_lens``) and any
module with the hook names (duck-typed hook points): logits equal the library's own forward,
captured patterns equal its own attention outputs, hooks can ablate, errors name file and key."""

from __future__ import annotations

import sys

import pytest
import torch

from harness.config import ConfigError, family_from_dict
from harness.model import build_model, capture, check_protocol, hook_points, required_hook_names

transformers = pytest.importorskip("transformers")

V, T = 32, 32
BASE = {"seeds": [0, 1, 2], "data": {"vocab_size": V, "seq_len": T},
        "train": {"steps": 3, "batch_size": 2}, "probe": {"n_prompts": 4}}
GPT2 = {"transformers": {"model": "GPT2LMHeadModel", "config": {"n_layer": 2, "n_head": 4, "n_embd": 32}}}
LLAMA = {"transformers": {"model": "LlamaForCausalLM", "config": {
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32,
    "intermediate_size": 64}}}
TL_ATTN = {"transformer_lens": {"n_layers": 2, "d_model": 32, "n_heads": 4, "attn_only": True}}


def family(model: dict, **over):
    return family_from_dict({**BASE, "model": model, **over})


def built(model: dict, seed: int = 0):
    cfg = family(model)
    return build_model(cfg.model, vocab_size=V, n_ctx=T, init_seed=seed)


def tokens(n: int = 3) -> torch.Tensor:
    return torch.randint(0, V, (n, 16), generator=torch.Generator().manual_seed(0))


def eager_twin(m):
    """The same weights in the library's own eager implementation."""
    cfg = m.hf.config.__class__(**m.hf.config.to_dict())
    cfg._attn_implementation = "eager"
    twin = type(m.hf)(cfg).eval()
    twin.load_state_dict(m.hf.state_dict())
    return twin


@pytest.mark.parametrize("spec", [GPT2, LLAMA], ids=["gpt2", "llama-gqa"])
def test_transformers_logits_and_patterns_equal_the_library_eager_forward(spec):
    m = built(spec).eval()
    check_protocol(m)
    assert (m.n_layers, m.n_heads) == (2, 4)
    x = tokens()
    twin = eager_twin(m)
    ref = twin(x, output_attentions=True)
    with torch.no_grad(), capture(m, [f"blocks.{l}.attn.hook_pattern" for l in range(2)]) as acts:
        logits = m(x)
    torch.testing.assert_close(logits, ref.logits, rtol=0, atol=1e-5)
    for l in range(2):
        torch.testing.assert_close(acts[f"blocks.{l}.attn.hook_pattern"][0], ref.attentions[l], rtol=0, atol=1e-6)


@pytest.mark.parametrize("spec", [GPT2, LLAMA], ids=["gpt2", "llama-gqa"])
def test_transformers_residual_hooks_chain_and_ablation_reaches_the_output(spec):
    m = built(spec).eval()
    x = tokens()
    names = required_hook_names(2)
    with torch.no_grad(), capture(m, names) as acts:
        base = m(x)
    a = {k: v[0] for k, v in acts.items()}
    assert a["blocks.0.attn.hook_z"].shape == (3, 16, 4, 8)  # (B, T, H, d_head)
    torch.testing.assert_close(a["blocks.0.hook_resid_post"], a["blocks.1.hook_resid_pre"])
    assert not torch.equal(a["blocks.0.hook_resid_mid"], a["blocks.0.hook_resid_pre"])
    from harness.model import ablate_heads

    with torch.no_grad(), ablate_heads(m, {0: [0, 1, 2, 3]}):
        ablated = m(x)
    assert not torch.allclose(ablated, base)
    with torch.no_grad():
        torch.testing.assert_close(m(x), base)  # hooks detached afterwards


def test_transformers_init_follows_the_seed_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = built(GPT2, 0), built(GPT2, 0), built(GPT2, 1)
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (next(iter(m.hf.parameters())) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    cfg = a.hf.config
    assert cfg.vocab_size == V and cfg.n_positions == T  # from the data spec
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0  # dropout off by default
    assert cfg._attn_implementation == "seedstab"


def test_transformers_dropout_when_asked_for():
    spec = {"transformers": {**GPT2["transformers"], "config": {**GPT2["transformers"]["config"], "resid_pdrop": 0.1}}}
    assert built(spec).hf.config.resid_pdrop == 0.1


def test_transformers_family_trains_resumes_and_analyses(tmp_path):
    from harness.analysis import AnalysisOptions, analyze_family
    from harness.family import obtain_family
    from harness.train import train_seed

    cfg = family(GPT2, train={"steps": 6, "batch_size": 2, "checkpoint_every": 3})
    cpu = torch.device("cpu")
    full = train_seed(cfg, 0, device=cpu)
    saved = {}
    train_seed(cfg, 0, device=cpu, on_checkpoint=lambda s, p: saved.setdefault(s, p))
    resumed = train_seed(cfg, 0, device=cpu, resume=saved[3])
    assert all(torch.equal(full.state_dict[k], resumed.state_dict[k]) for k in full.state_dict)
    fam = obtain_family(cfg, store=tmp_path)
    a = analyze_family(fam, options=AnalysisOptions(step0=False, importance=False, cross_layer=False,
                                                    kernels=("debiased",), prompt_lengths=(1.0,)))
    assert a["head_stability.all_anchors"].value.shape == (2,)
    assert a["content_specific.all_anchors"].value.shape == (2,)


def test_store_key_carries_the_library_version(monkeypatch):
    from harness import adapters
    from harness.provenance import store_fingerprint

    cfg = family(GPT2)
    key = store_fingerprint(cfg)
    assert "-code" in key
    monkeypatch.setattr(adapters, "library_versions", lambda m: {"transformers": "0.0.1"})
    assert store_fingerprint(cfg) != key


@pytest.mark.parametrize("model, key, words", [
    ({"transformers": {"model": "NoSuchLM"}}, "model.transformers.model", "transformers has no class 'NoSuchLM'"),
    ({"transformers": {"model": "GPT2LMHeadModel", "config": {"n_lay": 2}}}, "model.transformers.config.n_lay",
     "GPT2Config has no key 'n_lay'"),
    ({"transformers": {"model": "GPT2LMHeadModel", "cfg": {}}}, "model.transformers.cfg", "unknown key"),
    ({"transformers": {"config": {}}}, "model.transformers.model", "required"),
    ({"transformers": {"model": "GPT2Config"}}, "model.transformers.model", "not a transformers PreTrainedModel"),
    ({**GPT2, "n_layers": 4}, "model.n_layers", "builds the model from its own config; set n_layers there"),
    ({**GPT2, "custom": "os:getcwd"}, "model.transformers", "model.custom is set too"),
    ({"transformer_lens": {"n_layers": 2, "d_model": 32, "n_heads": 4, "seed": 1}}, "model.transformer_lens.seed",
     "seeded from the family seed"),
    ({"transformer_lens": {"n_layers": 2, "d_model": 32, "n_heads": 4, "d_vocab": 9}}, "model.transformer_lens.d_vocab",
     "set by the data spec"),
    ({"transformer_lens": {"n_layers": 2, "d_model": 32, "n_hedas": 4}}, "model.transformer_lens.n_hedas",
     "not a HookedTransformerConfig key"),
])
def test_library_model_errors_name_the_key(model, key, words):
    if "transformer_lens" in model:
        pytest.importorskip("transformer_lens")
    with pytest.raises(ConfigError) as e:
        family(model)
    assert e.value.key == key and words in str(e.value), str(e.value)


def test_transformers_vocab_in_config_must_match_the_data():
    spec = {"transformers": {**GPT2["transformers"], "config": {**GPT2["transformers"]["config"], "vocab_size": 99}}}
    cfg = family(spec)
    with pytest.raises(ConfigError, match=r"config.vocab_size: 99 disagrees with the data's vocabulary \(32\)"):
        build_model(cfg.model, vocab_size=V, n_ctx=T, init_seed=0)


# --------------------------------------------------------------------- TransformerLens



@pytest.fixture
def tl():
    return pytest.importorskip("transformer_lens")


@pytest.mark.parametrize("attn_only", [True, False])
def test_transformer_lens_from_yaml_matches_run_with_cache(tl, attn_only):
    spec = {"transformer_lens": {**TL_ATTN["transformer_lens"], "attn_only": attn_only}}
    m = built(spec).eval()
    assert type(m).__name__ == "HookedTransformer" and (m.n_layers, m.n_heads) == (2, 4)
    x = tokens()
    with torch.no_grad():
        logits, cache = m.run_with_cache(x)
        with capture(m, required_hook_names(2)) as acts:
            mine = m(x)
    torch.testing.assert_close(mine, logits, rtol=0, atol=0)
    for l in range(2):
        for name in ("attn.hook_pattern", "attn.hook_z", "hook_resid_pre", "hook_resid_post"):
            torch.testing.assert_close(acts[f"blocks.{l}.{name}"][0], cache[f"blocks.{l}.{name}"], rtol=0, atol=0)
        mid = acts[f"blocks.{l}.hook_resid_mid"][0]
        expect = cache[f"blocks.{l}.hook_resid_post"] if attn_only else cache[f"blocks.{l}.hook_resid_mid"]
        torch.testing.assert_close(mid, expect, rtol=0, atol=0)  # attn-only: resid_post stands in


def test_a_users_hooked_transformer_through_model_custom(tl, tmp_path, monkeypatch):
    (tmp_path / "tl_user_model.py").write_text(
        "import transformer_lens as tl\n"
        "def build(cfg, *, vocab_size, n_ctx):\n"
        "    c = tl.HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=vocab_size,\n"
        "                                   n_ctx=n_ctx, attn_only=True, act_fn=None, device='cpu')\n"
        "    return tl.HookedTransformer(c)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        m = built({"custom": "tl_user_model:build"})
        assert (m.n_layers, m.n_heads) == (2, 4)
        assert set(required_hook_names(2)) <= set(hook_points(m))
    finally:
        sys.modules.pop("tl_user_model", None)


def test_transformer_lens_family_trains_and_is_quiet(tl, tmp_path, capsys):
    from harness.family import obtain_family

    fam = obtain_family(family(TL_ATTN), store=tmp_path)
    assert len(fam.models) == 3
    assert "Moving model to device" not in capsys.readouterr().out


def test_a_module_missing_hooks_is_named():
    class Bare(torch.nn.Module):
        n_layers, n_heads = 1, 1

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

    with pytest.raises(ConfigError, match=r"Bare\) has no module at \['blocks.0.hook_resid_pre'"):
        check_protocol(Bare(), where="spec.yaml")


def test_a_library_model_replaces_the_inherited_gpt_keys_and_merges_with_its_own(tmp_path):
    from harness.config import load_suite

    (tmp_path / "s.yaml").write_text(
        "suite: s\n"
        "defaults: {seeds: [0, 1, 2], model: {n_layers: 2, n_heads: 4, d_model: 64, attn_only: true},\n"
        "           data: {vocab_size: 32, seq_len: 32}}\n"
        "families:\n"
        "  adam: {}\n"
        "  gpt2: {extends: adam, model: {transformers: {model: GPT2LMHeadModel, config: {n_layer: 2, n_head: 4, n_embd: 32}}}}\n"
        "  gpt2_deep: {extends: gpt2, model: {transformers: {config: {n_layer: 4}}}}\n")
    fams = load_suite(tmp_path / "s.yaml").families
    assert fams["gpt2"].model.transformers["config"] == {"n_layer": 2, "n_head": 4, "n_embd": 32}
    assert fams["gpt2_deep"].model.transformers == {
        "model": "GPT2LMHeadModel", "config": {"n_layer": 4, "n_head": 4, "n_embd": 32}}
    assert fams["adam"].model.transformers is None and fams["adam"].model.attn_only


@pytest.mark.parametrize("spec", [GPT2, TL_ATTN], ids=["transformers", "transformer_lens"])
def test_a_library_family_round_trips_through_to_dict(spec):
    if "transformer_lens" in spec:
        pytest.importorskip("transformer_lens")
    cfg = family(spec)
    raw = cfg.to_dict()
    raw.pop("source")
    assert set(raw["model"]) == set(spec)
    assert family_from_dict(raw).model == cfg.model
    assert cfg.replace(train={"steps": 4}).model == cfg.model
