"""Spec files: YAML read, ``defaults`` and ``extends`` merged, each family handed to
:func:`~harness.spec_validate.family_from_dict`.

Two file shapes load:

* a family file: top-level ``name``, ``seeds``, ``model``, ``data``, ``train``, ``probe``
  (and ``extends: other.yaml`` to inherit from another family file);
* a suite file: ``suite``, optional ``defaults`` (family keys shared by all families),
  ``families: {name: {...}}`` where a family may ``extends`` another family of the same
  file by name or a family file by path, and ``expectations`` / ``regression`` sections
  that the pytest suites read.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from harness.spec import FAMILY_KEYS, SUITE_KEYS, ConfigError, FamilyConfig, Suite, _check_keys
from harness.spec_validate import family_from_dict


def load_suite(path: str | Path) -> Suite:
    """Load a suite file (``families:``) or a single family file as a one-family suite."""
    path = Path(path)
    raw = _read_yaml(path)
    if "families" not in raw:
        fam = _load_family_file(path, raw, stack=())
        return Suite(name=fam.name, source=str(path), families={fam.name: fam},
                     expectations={}, regression={})
    _check_keys(raw, SUITE_KEYS, path, "")
    suite_name = raw.get("suite", path.stem)
    if not isinstance(suite_name, str) or not suite_name:
        raise ConfigError(path, "suite", f"expected a non-empty string, got {suite_name!r}")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(path, "defaults", f"expected a mapping, got {type(defaults).__name__}")
    _check_keys(defaults, FAMILY_KEYS - {"name", "extends"}, path, "defaults")
    fams_raw = raw["families"]
    if not isinstance(fams_raw, dict) or not fams_raw:
        raise ConfigError(path, "families", "expected a non-empty mapping of family name to spec")

    resolved: dict[str, dict] = {}

    def resolve(name: str, stack: tuple[str, ...]) -> dict:
        key = f"families.{name}"
        if name in stack:
            raise ConfigError(path, key + ".extends", "circular extends: " + " -> ".join(stack + (name,)))
        if name in resolved:
            return resolved[name]
        spec = fams_raw[name]
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise ConfigError(path, key, f"expected a mapping, got {type(spec).__name__}")
        _check_keys(spec, FAMILY_KEYS, path, key)
        spec = dict(spec)
        parent = spec.pop("extends", None)
        if parent is None:
            base = copy.deepcopy(defaults)
        elif not isinstance(parent, str):
            raise ConfigError(path, key + ".extends", f"expected a family name or a file path, got {parent!r}")
        elif parent in fams_raw:
            base = copy.deepcopy(resolve(parent, stack + (name,)))
            base.pop("name", None)
        else:
            parent_path = (path.parent / parent)
            if not parent_path.is_file():
                raise ConfigError(path, key + ".extends",
                                  f"{parent!r} is neither a family of this file nor an existing file")
            base = _merge(copy.deepcopy(defaults), _resolved_family_raw(parent_path, stack=(str(path),)))
            base.pop("name", None)
        merged = _merge(base, spec)
        merged.setdefault("name", name)
        resolved[name] = merged
        return merged

    families = {}
    for name in fams_raw:
        if not isinstance(name, str):
            raise ConfigError(path, "families", f"family names must be strings, got {name!r}")
        families[name] = family_from_dict(resolve(name, ()), source=str(path), key=f"families.{name}",
                                          base_dir=path.parent)
    return Suite(name=suite_name, source=str(path), families=families,
                 expectations=_mapping_or_empty(raw, "expectations", path),
                 regression=_mapping_or_empty(raw, "regression", path),
                 checks=_mapping_or_empty(raw, "checks", path))


def load_family(path: str | Path, name: str | None = None) -> FamilyConfig:
    """Load one family: from a family file, or family ``name`` of a suite file.

    ``path`` may also be written ``suite.yaml::name``.
    """
    text = str(path)
    if name is None and "::" in text:
        text, name = text.split("::", 1)
    suite = load_suite(text)
    if name is None:
        if len(suite.families) != 1:
            raise ConfigError(text, "families", "this file holds several families "
                              f"({', '.join(suite.families)}); name one as FILE::NAME")
        return next(iter(suite.families.values()))
    if name not in suite.families:
        raise ConfigError(text, f"families.{name}", f"no such family; this file has: {', '.join(suite.families)}")
    return suite.families[name]


def _load_family_file(path: Path, raw: dict, stack: tuple[str, ...]) -> FamilyConfig:
    merged = _resolved_family_raw(path, stack=stack, raw=raw)
    merged.setdefault("name", path.stem)
    return family_from_dict(merged, source=str(path), key="", base_dir=path.parent)


def _resolved_family_raw(path: Path, *, stack: tuple[str, ...], raw: dict | None = None) -> dict:
    if str(path) in stack:
        raise ConfigError(path, "extends", "circular extends: " + " -> ".join(stack + (str(path),)))
    raw = _read_yaml(path) if raw is None else raw
    if "families" in raw:
        raise ConfigError(path, "", "a suite file cannot be extended as a family; extend one of its families' files")
    _check_keys(raw, FAMILY_KEYS, path, "")
    raw = dict(raw)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(path, "extends", f"expected a file path, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.is_file():
        raise ConfigError(path, "extends", f"file {str(parent_path)!r} does not exist")
    base = _resolved_family_raw(parent_path, stack=stack + (str(path),))
    base.pop("name", None)
    # Relative data paths stay relative to the file that named them.
    for section in ("data", "probe"):
        p = base.get(section, {}).get("path") if isinstance(base.get(section), dict) else None
        if isinstance(p, str) and not Path(p).is_absolute():
            base[section]["path"] = str((parent_path.parent / p).resolve())
    return _merge(base, raw)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(path, "", "file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(path, "", f"not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raise ConfigError(path, "", "the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(path, "", f"expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _mapping_or_empty(raw: dict, key: str, path: Path) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


_LIBRARY_MODELS = ("transformers", "transformer_lens")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k == "model" and isinstance(v, dict) and isinstance(out.get(k), dict) and any(
                lib in v and lib not in out[k] for lib in _LIBRARY_MODELS):
            # a library model builds from its own config: the inherited GPT keys do not apply
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("optimizer_kwargs",):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
