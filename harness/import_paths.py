"""User code named in a spec by import path (``module:attribute``): imported, with user
modules beside the spec file or in the working directory found too, or one
:class:`~harness.spec.ConfigError` naming the file and the key."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from harness.spec import ConfigError


def import_path(spec: str, *, source: str = "<memory>", key: str = "") -> Any:
    """Import ``module:attribute``; ConfigError naming source and key when it does not."""
    return _import_path(spec, source, key)



def _import_path(spec: str, source: str, key: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(source, key, f"expected an import path module:attribute, got {spec!r}")
    try:
        module = _import_module(module_name, source)
    except Exception as e:  # ImportError, or the module failing at import
        raise ConfigError(source, key, f"cannot import {module_name!r}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(source, key, f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _import_module(name: str, source: str) -> Any:
    """Import ``name``; user modules next to the spec file or in the working directory are
    found too (``optimizer: my_optim:Lion`` beside ``suite.yaml``)."""
    import sys

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name.split(".")[0]:
            raise
    extra = [str(Path(source).resolve().parent), str(Path.cwd())] if source != "<memory>" else [str(Path.cwd())]
    for d in extra:
        if d not in sys.path:
            sys.path.append(d)
    return importlib.import_module(name)
