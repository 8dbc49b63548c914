"""Family specs: loading, inheritance, strict validation, and the harness.config facade."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import ConfigError, load_family, load_suite


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


def test_cli_prints_config_errors_without_traceback(tmp_path, capsys):
    path = write(tmp_path / "bad.yaml", "train: {lr: fast}\n")
    assert main(["train", str(path), "--store", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seedstab: error: ") and "train.lr" in err and "Traceback" not in err


ROOT = Path(__file__).resolve().parent.parent


def _harness_imports(path: Path) -> set[str]:
    """Every ``harness...`` module (or module attribute) that ``path`` imports, at the top
    or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "harness":
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "harness"}
    return found


def test_the_facade_keeps_every_name_the_project_imports_from_it():
    import harness.config

    wanted = {}
    for folder in ("harness", "tests", "suites", "examples", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "harness.config":
                    wanted.update({a.name: path.relative_to(ROOT) for a in node.names})
    assert {"ConfigError", "FamilyConfig", "fingerprint", "load_suite", "resolve_optimizer"} <= set(wanted)
    missing = {name: str(path) for name, path in wanted.items() if not hasattr(harness.config, name)}
    assert not missing, f"harness.config no longer exports {missing}"
    assert set(harness.config.__all__) <= set(vars(harness.config))


def test_the_code_behind_the_facade_counts_as_training_code():
    """Every harness module that loading a spec runs (defaults, extends, validation,
    optimizer and import-path resolution) is in HARNESS_TRAINING_FILES, so editing it
    retrains; the fingerprint module, which only computes the key, is not."""
    from harness.provenance import HARNESS_TRAINING_FILES

    root = ROOT / "harness"
    counted = {p for pattern in HARNESS_TRAINING_FILES for p in root.glob(pattern)}

    def file_of(module: str) -> Path | None:
        rel = Path(*module.split(".")[1:])
        return next((c for c in (root / f"{rel}.py", root / rel / "__init__.py")
                     if rel.parts and c.is_file()), None)

    reached, todo = set(), [root / "config.py"]
    while todo:
        path = todo.pop()
        if path not in reached:
            reached.add(path)
            todo += [f for m in _harness_imports(path) if m not in ("harness.fingerprint", "harness.provenance")
                     and (f := file_of(m)) is not None]
    assert {root / n for n in ("spec.py", "spec_load.py", "spec_validate.py", "import_paths.py")} <= reached
    uncounted = sorted(str(p.relative_to(root)) for p in reached - counted)
    assert not uncounted, f"spec code missing from HARNESS_TRAINING_FILES: {uncounted}"
    assert root / "fingerprint.py" not in counted


def test_importing_the_facade_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, harness.config; print(sorted(m for m in ('torch', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['yaml']", out.stdout + out.stderr


def test_config_error_pickles_with_its_parts() -> None:
    import pickle

    e = ConfigError("suite.yaml", "train.lr", "must be > 0")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is ConfigError and str(back) == str(e)
    assert (back.source, back.key, back.detail) == ("suite.yaml", "train.lr", "must be > 0")
