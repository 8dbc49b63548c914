"""Fingerprints: everything that changes what trains counts, nothing else does, and
settings that resolve to the same training share one."""

from __future__ import annotations

import textwrap
from pathlib import Path

from harness.config import fingerprint, load_family, load_suite


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


BASE = """
    name: base
    seeds: [0, 1]
    model: {n_layers: 2, n_heads: 4, d_model: 32}
    data: {vocab_size: 64, seq_len: 64}
    train: {optimizer: adam, lr: 1.0e-3, steps: 10, batch_size: 4}
"""


def test_fingerprint_covers_training_and_nothing_else(tmp_path):
    cfg = load_family(write(tmp_path / "f.yaml", BASE))
    fp = fingerprint(cfg)
    # Keys that do not change what training produces keep the fingerprint.
    for same in (cfg.replace(name="other"), cfg.replace(seeds=[5, 6, 7]),
                 cfg.replace(probe={"n_prompts": 9, "seed": 3}), cfg.replace(train={"device": "cpu"}),
                 cfg.replace(train={"checkpoint_every": 3, "log_every": 2})):
        assert fingerprint(same) == fp
    # Any training-relevant key changes it.
    for changed in (cfg.replace(train={"lr": 2e-3}), cfg.replace(train={"optimizer": "adamw"}),
                    cfg.replace(train={"weight_decay": 0.1}), cfg.replace(train={"steps": 11}),
                    cfg.replace(train={"threads": 2}), cfg.replace(model={"n_layers": 3}),
                    cfg.replace(model={"qk_norm": True}), cfg.replace(data={"language_seed": 1}),
                    cfg.replace(data={"synthetic": {"span_min": 6}}),
                    # a pinned init seed gives every seed the same initial weights
                    cfg.replace(train={"init_seed": 0}), cfg.replace(train={"data_seed": 0})):
        assert fingerprint(changed) != fp
    pinned = cfg.replace(train={"init_seed": 0})
    assert fingerprint(pinned) != fingerprint(pinned.replace(train={"init_seed": 1}))
    assert fingerprint(pinned) != fingerprint(cfg.replace(train={"data_seed": 0}))


def test_specs_that_resolve_identically_share_a_fingerprint(tmp_path):
    """A setting written out at the value training uses anyway is no change: same
    fingerprint, so the same store key and the same baselines."""
    cfg = load_family(write(tmp_path / "f.yaml", BASE))  # d_model 32, 4 heads, adam
    fp = fingerprint(cfg)
    for same in (cfg.replace(model={"d_head": 8}), cfg.replace(model={"d_mlp": 128}),
                 cfg.replace(train={"optimizer": "Adam"}),
                 cfg.replace(train={"optimizer_kwargs": {"betas": [0.9, 0.999], "amsgrad": False}}),
                 cfg.replace(data={"synthetic": {"span_min": 8, "span_tokens": "uniform"}})):
        assert fingerprint(same) == fp, same
    adamw = cfg.replace(train={"optimizer": "adamw"})
    assert fingerprint(adamw.replace(train={"weight_decay": 0.01})) == fingerprint(adamw)
    # values that differ, or differ in type, or that a user's model reads raw, still count
    for changed in (cfg.replace(model={"d_head": 16}), cfg.replace(model={"d_mlp": 64}),
                    cfg.replace(train={"optimizer_kwargs": {"betas": [0.8, 0.999]}}),
                    cfg.replace(train={"optimizer_kwargs": {"amsgrad": True}}),
                    cfg.replace(data={"synthetic": {"zipf_exponent": 1}}),  # an int where the default is 1.0
                    adamw.replace(train={"weight_decay": 0.1})):
        assert fingerprint(changed) not in (fp, fingerprint(adamw)), changed
    custom = cfg.replace(model={"custom": "harness.model:GPT"})
    assert fingerprint(custom.replace(model={"d_head": 8})) != fingerprint(custom)
    text = tmp_path / "t.txt"
    text.write_text("hello world " * 50)
    base = load_family(write(tmp_path / "t.yaml", f"name: t\ndata: {{kind: text, path: {text}, seq_len: 16}}\n"))
    assert fingerprint(base.replace(data={"vocab_size": 256})) == fingerprint(base)


def test_fingerprints_of_committed_baselines_are_unchanged():
    """init_seed and data_seed count only when set, so no spec that leaves them unset (all
    committed ones) has a new fingerprint: the baselines under baselines/ stay current."""
    import json

    root = Path(__file__).resolve().parent.parent
    suite = load_suite(root / "suites" / "smoke" / "smoke.yaml")
    headers = [json.loads(f.read_text())["header"] for f in sorted((root / "baselines" / "cpu" / "smoke").glob("*.json"))]
    recorded = {name: fp for h in headers for name, fp in h["fingerprints"].items()}
    assert recorded, "no smoke baselines found"
    assert {name: fingerprint(suite.families[name]) for name in recorded} == recorded


def test_source_digest_ignores_comments_formatting_and_docstrings(tmp_path):
    from harness.provenance import _source_digest, harness_digest

    path = tmp_path / "m.py"
    path.write_text("def f(x):\n    return x + 1\n")
    d = _source_digest(path)
    path.write_text("# why f exists\ndef f( x ):\n\n    return (x + 1)  # one more\n")
    assert _source_digest(path) == d
    path.write_text("def f(x):\n    return x + 2\n")
    assert _source_digest(path) != d
    path.write_text('"""A module."""\ndef f(x):\n    """Docstrings change no bit."""\n    return x + 1\n')
    assert _source_digest(path) == d
    assert len(harness_digest()) == 8 and harness_digest() == harness_digest()


def test_fingerprint_of_a_data_file_follows_content_not_path(tmp_path):
    (tmp_path / "a.txt").write_text("hello world " * 50)
    (tmp_path / "b.txt").write_text("hello world " * 50)
    spec = "name: t\ndata: {kind: text, path: %s, seq_len: 16}\n"
    fa = fingerprint(load_family(write(tmp_path / "a.yaml", spec % "a.txt")))
    fb = fingerprint(load_family(write(tmp_path / "b.yaml", spec % "b.txt")))
    assert fa == fb
    (tmp_path / "b.txt").write_text("other text " * 50)
    assert fingerprint(load_family(tmp_path / "b.yaml")) != fa
