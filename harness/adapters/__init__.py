"""Library models as seedstab models, from YAML and with no user code.

``model.transformers: {model: GPT2LMHeadModel, config: {n_layer: 2, ...}}`` builds a
Hugging Face causal LM from its config (:mod:`harness.adapters.hf`);
``model.transformer_lens: {n_layers: 2, d_model: 64, ...}`` builds a TransformerLens
``HookedTransformer`` (:mod:`harness.adapters.tl`). Both are initialised under the seed's
``init_seed``, sized by the data spec (vocabulary, context), and expose the hook vocabulary of
:mod:`harness.model`. The libraries are optional: ``pip install 'seedstab[hf]'`` / ``[tl]``.
"""

from __future__ import annotations

from torch import nn

from harness.config import ConfigError, ModelConfig

__all__ = ["build", "library_versions"]


def build(cfg: ModelConfig, *, vocab_size: int, n_ctx: int, init_seed: int,
          source: str = "<memory>") -> nn.Module:
    """The library model ``cfg`` names, freshly initialised under ``init_seed``."""
    if cfg.transformers is not None:
        from harness.adapters import hf

        return hf.build(cfg.transformers, vocab_size=vocab_size, n_ctx=n_ctx, init_seed=init_seed,
                        source=source)
    if cfg.transformer_lens is not None:
        from harness.adapters import tl

        return tl.build(cfg.transformer_lens, vocab_size=vocab_size, n_ctx=n_ctx,
                        init_seed=init_seed, source=source)
    raise ConfigError(source, "model", "names no library model (transformers / transformer_lens)")


def library_versions(cfg: ModelConfig) -> dict[str, str | None]:
    """The versions of the libraries a library model is built and run by (for the store key:
    a new transformers release may change initialisation or the forward pass)."""
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    out: dict[str, str | None] = {}
    if cfg.transformers is not None:
        out["transformers"] = version("transformers")
    if cfg.transformer_lens is not None:
        out["transformer_lens"] = version("transformer-lens")
    return out
