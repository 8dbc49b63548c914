"""Family specs: loading, inheritance, strict validation, fingerprints."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import ConfigError, fingerprint, load_family, load_suite


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


def test_family_file_loads_with_defaults(tmp_path):
    cfg = load_family(write(tmp_path / "f.yaml", BASE))
    assert cfg.name == "base" and cfg.seeds == (0, 1)
    assert cfg.model.head_dim == 8 and cfg.model.mlp_dim == 128
    assert cfg.train.lr == 1e-3 and cfg.train.weight_decay is None
    assert cfg.seed_pair(1) == (1, 1)


def test_yaml_1_1_float_strings_are_accepted(tmp_path):
    # PyYAML reads "1e-3" (no dot) as a string; users write it anyway.
    cfg = load_family(write(tmp_path / "f.yaml", BASE.replace("1.0e-3", "1e-3")))
    assert cfg.train.lr == 1e-3


def test_extends_a_file_changes_one_key(tmp_path):
    write(tmp_path / "adam.yaml", BASE)
    cfg = load_family(write(tmp_path / "adamw.yaml", """
        extends: adam.yaml
        name: adamw
        train: {optimizer: adamw, weight_decay: 0.1}
    """))
    base = load_family(tmp_path / "adam.yaml")
    assert cfg.train.optimizer == "adamw" and cfg.train.weight_decay == 0.1
    assert cfg.train.lr == base.train.lr and cfg.model == base.model


def test_suite_families_extend_each_other_and_defaults(tmp_path):
    suite = load_suite(write(tmp_path / "s.yaml", """
        suite: demo
        defaults:
          seeds: [0, 1, 2]
          data: {vocab_size: 64}
        families:
          adam:
            train: {optimizer: adam, lr: 0.001}
          adamw:
            extends: adam
            train: {optimizer: adamw, weight_decay: 0.1}
        regression: {alpha: 0.05}
    """))
    assert suite.name == "demo" and list(suite.families) == ["adam", "adamw"]
    a, w = suite.families["adam"], suite.families["adamw"]
    assert w.name == "adamw" and w.train.lr == 0.001 and w.seeds == (0, 1, 2)
    assert a.train.weight_decay is None and w.train.weight_decay == 0.1
    assert suite.regression == {"alpha": 0.05}
    assert load_family(f"{tmp_path / 's.yaml'}::adamw") == w


def test_separate_init_and_data_seeds(tmp_path):
    cfg = load_family(write(tmp_path / "f.yaml", BASE + "    \n"), None).replace(train={"data_seed": 7})
    assert cfg.seed_pair(3) == (3, 7) and cfg.seed_key(3) == "init3-data7"


BAD = [
    ("model: {n_layers: 2, n_heads: 4, d_model: 32, bogus: 1}", "model.bogus", "unknown key"),
    ("train: {lr: fast}", "train.lr", "expected a positive float, got 'fast'"),
    ("train: {lr: -0.1}", "train.lr", "positive float"),
    ("train: {steps: 0}", "train.steps", "positive integer"),
    ("train: {steps: 2.5}", "train.steps", "positive integer"),
    ("model: {n_heads: 3, d_model: 32}", "model.n_heads", "must divide d_model"),
    ("seeds: []", "seeds", "non-empty list"),
    ("seeds: [0, 1, 1]", "seeds", "duplicate seeds [1]"),
    ("train: {optimizer: adamx}", "train.optimizer", "unknown optimizer 'adamx'"),
    ("train: {optimizer: 'no_such_module_xyz:Opt'}", "train.optimizer", "cannot import 'no_such_module_xyz'"),
    ("train: {optimizer: 'torch.optim:NoSuchOpt'}", "train.optimizer", "has no attribute 'NoSuchOpt'"),
    ("data: {kind: text, path: missing.txt}", "data.path", "does not exist"),
    ("data: {kind: tokens}", "data.path", "needs a file path"),
    ("model: {norm: layer}", "model.norm", "expected one of pre, post, none"),
    ("model: {attn_only: yes please}", "model.attn_only", "expected true or false"),
    ("train: {device: tpu}", "train.device", "expected auto, cpu, cuda"),
    ("train: {optimizer_kwargs: {lr: 0.1}}", "train.optimizer_kwargs.lr", "set train.lr instead"),
    ("model: {custom: 'no_such_pkg_q:build'}", "model.custom", "cannot import"),
    ("data: {synthetic: {no_such_knob: 1}}", "data.synthetic.no_such_knob", "unknown generator option"),
    ("probe: {n_prompts: 1}", "probe.n_prompts", "integer >= 2"),
    ("probe: {seq_len: 500}", "probe.seq_len", "cannot be longer"),
    ("probe: {path: nowhere.txt}", "probe.path", "does not exist"),
    ("extends: nowhere.yaml", "extends", "does not exist"),
    ("train: {optimizer_kwargs: {bogus: 1}}", "train.optimizer_kwargs.bogus", "Adam takes no argument 'bogus'"),
    ("train: {optimizer_kwargs: {betas: oops}}", "train.optimizer_kwargs.betas", "Adam rejects betas='oops'"),
    ("train: {optimizer: sgd, optimizer_kwargs: {momentum: -1}}", "train.optimizer_kwargs.momentum",
     "Invalid momentum value"),
    ("train: {optimizer_kwargs: {betas: [2, 3], eps: -1}}", "train.optimizer_kwargs", "Adam rejects"),
    ("train: {optimizer: lbfgs, weight_decay: 0.1}", "train.weight_decay", "LBFGS takes no weight_decay"),
    ("data: {synthetic: {span_min: 20}}", "data.synthetic.span_min", "need 2 <= span_min <= span_max, got 20, 16"),
    ("data: {seq_len: 16}", "data.seq_len", "cannot hold two copies of a span of span_max=16"),
    ("data: {seq_len: 30, synthetic: {span_max: 16}}", "data.synthetic.span_max", "cannot hold two copies"),
    ("data: {synthetic: {repeats_min: 1}}", "data.synthetic.repeats_min", "need 2 <= repeats_min"),
    ("data: {synthetic: {p_repeat: 1.5}}", "data.synthetic.p_repeat", "p_repeat must be in [0, 1]"),
]


@pytest.mark.parametrize("override,key,message", BAD, ids=[b[1] + ":" + b[2][:20] for b in BAD])
def test_bad_input_names_file_and_key(tmp_path, override, key, message):
    path = write(tmp_path / "bad.yaml", "name: bad\n" + override + "\n")
    with pytest.raises(ConfigError) as info:
        load_family(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {key}: "), text
    assert message in text, text


def test_suite_key_path_is_dotted(tmp_path):
    path = write(tmp_path / "paper.yaml", """
        families:
          adam: {train: {lr: 0.001}}
          adamw: {extends: adam, train: {lr: fast}}
    """)
    with pytest.raises(ConfigError, match=r"paper.yaml: families.adamw.train.lr: expected a positive float, got 'fast'"):
        load_suite(path)


def test_circular_extends(tmp_path):
    path = write(tmp_path / "s.yaml", """
        families:
          a: {extends: b}
          b: {extends: a}
    """)
    with pytest.raises(ConfigError, match="circular extends"):
        load_suite(path)


def test_not_yaml_and_empty_files(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_family(write(tmp_path / "x.yaml", "model: {n_layers: [\n"))
    with pytest.raises(ConfigError, match="empty"):
        load_family(write(tmp_path / "e.yaml", ""))
    with pytest.raises(ConfigError, match="file not found"):
        load_family(tmp_path / "none.yaml")


def test_suite_families_name_the_optimizer_and_generator_key(tmp_path):
    path = write(tmp_path / "paper.yaml", """
        families:
          adam: {train: {optimizer_kwargs: {bogus: 1}}}
    """)
    with pytest.raises(ConfigError, match=r"paper.yaml: families.adam.train.optimizer_kwargs.bogus: "):
        load_suite(path)
    path = write(tmp_path / "paper.yaml", """
        defaults: {data: {seq_len: 16}}
        families:
          adam: {}
    """)
    with pytest.raises(ConfigError, match=r"paper.yaml: families.adam.data.seq_len: seq_len 16 cannot hold"):
        load_suite(path)


def test_valid_optimizer_kwargs_and_user_optimizers_load(tmp_path):
    (tmp_path / "cfg_test_kw_opt.py").write_text(
        "import torch\n"
        "class Loose(torch.optim.SGD):\n"  # **kwargs: any key is accepted, construction decides
        "    def __init__(self, params, lr=0.1, **kw):\n"
        "        super().__init__(params, lr=lr, momentum=kw.get('momentum', 0.0))\n"
        "class MatrixOnly(torch.optim.SGD):\n"  # rejects the 1-element dummy: not a bad argument
        "    def __init__(self, params, lr=0.1):\n"
        "        params = list(params)\n"
        "        assert all(p.ndim == 2 for p in params), 'matrices only'\n"
        "        super().__init__(params, lr=lr)\n")
    base = "name: ok\ntrain: {%s}\n"
    for train in ("optimizer: adam, optimizer_kwargs: {betas: [0.9, 0.99], eps: 1.0e-6}",
                  "optimizer: adamw, weight_decay: 0.1, optimizer_kwargs: {amsgrad: true}",
                  "optimizer: 'cfg_test_kw_opt:Loose', optimizer_kwargs: {momentum: 0.9, anything: 1}",
                  "optimizer: 'cfg_test_kw_opt:MatrixOnly'"):
        cfg = load_family(write(tmp_path / "ok.yaml", base % train))
        assert cfg.train.optimizer in train
    with pytest.raises(ConfigError, match=r"train.optimizer_kwargs.momentum: Loose rejects momentum=-1"):
        load_family(write(tmp_path / "ok.yaml", base % "optimizer: 'cfg_test_kw_opt:Loose', "
                                                     "optimizer_kwargs: {momentum: -1}"))


def test_cli_prints_optimizer_kwargs_errors_without_traceback(tmp_path, capsys):
    for kwargs, key in (("{bogus: 1}", "train.optimizer_kwargs.bogus"),
                        ("{betas: oops}", "train.optimizer_kwargs.betas")):
        path = write(tmp_path / "bad.yaml", "train: {optimizer_kwargs: %s}\n" % kwargs)
        assert main(["train", str(path), "--store", str(tmp_path / "store")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"seedstab: error: {path}: {key}: "), err
        assert "Traceback" not in err and err.count("\n") == 1, err


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


def test_cli_prints_config_errors_without_traceback(tmp_path, capsys):
    path = write(tmp_path / "bad.yaml", "train: {lr: fast}\n")
    assert main(["train", str(path), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seedstab: error: ") and "train.lr" in err and "Traceback" not in err
