"""The optimizer a spec names: a torch.optim name or an import path to a class or a factory,
and a load-time check that training's arguments suit it (so a bad ``optimizer_kwargs``
fails naming its dotted key, not as a TypeError when training starts).

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from harness.import_paths import _import_path
from harness.spec import ConfigError, TrainConfig


def resolve_optimizer(name: str, *, source: str = "<memory>", key: str = "train.optimizer") -> Any:
    """The optimizer for a torch.optim name (any case) or a ``module:attribute`` path: a class
    (built as ``cls(model.parameters(), lr=..., **optimizer_kwargs)``) or a factory function
    (called as ``fn(model, lr=..., **optimizer_kwargs)``, returning an optimizer: parameter
    groups, Muon-style splits)."""
    import torch

    if ":" in name:
        obj = _import_path(name, source, key)
        if not callable(obj):
            raise ConfigError(source, key, f"{name!r} is neither an optimizer class nor a factory function")
        return obj
    table = {n.lower(): getattr(torch.optim, n) for n in dir(torch.optim)
             if isinstance(getattr(torch.optim, n), type)
             and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
             and getattr(torch.optim, n) is not torch.optim.Optimizer}
    if name.lower() not in table:
        raise ConfigError(source, key, f"unknown optimizer {name!r}; use a torch.optim name "
                          f"({', '.join(sorted(table))}) or an import path module:Class or module:factory")
    return table[name.lower()]


def is_optimizer_factory(obj: Any) -> bool:
    """A factory ``fn(model, **kwargs) -> Optimizer`` rather than an optimizer class."""
    return callable(obj) and not isinstance(obj, type)



def _check_optimizer_arguments(cls: type, train: TrainConfig, source: str, p: Callable[[str], str]) -> None:
    """Build ``cls`` on a dummy parameter with exactly the arguments training passes
    (harness.train.build_optimizer), so a bad ``optimizer_kwargs`` fails at load time with
    the dotted key at fault instead of as a TypeError when training starts."""
    import torch

    kwargs = {**train.optimizer_kwargs, "lr": train.lr}
    if train.weight_decay is not None:
        kwargs["weight_decay"] = train.weight_decay
    where = {k: f"train.optimizer_kwargs.{k}" for k in train.optimizer_kwargs}
    where.update(lr="train.lr", weight_decay="train.weight_decay")
    name = getattr(cls, "__name__", repr(cls))
    factory = is_optimizer_factory(cls)
    try:
        params = inspect.signature(cls if factory else cls.__init__).parameters
    except (TypeError, ValueError):  # no signature to read (a C extension): construction decides
        params = None
    if factory and params is not None:
        first = next(iter(params), None)  # the model
        params = {n: prm for n, prm in params.items() if n != first}
    if params is not None and not any(prm.kind == prm.VAR_KEYWORD for prm in params.values()):
        accepted = [n for n, prm in params.items() if n not in ("self", "params")
                    and prm.kind in (prm.POSITIONAL_OR_KEYWORD, prm.KEYWORD_ONLY)]
        for k in kwargs:
            if k in accepted:
                continue
            if k == "lr":
                raise ConfigError(source, p("train.optimizer"), f"{name} takes no lr argument, but training "
                                  "passes train.lr to every optimizer; use an optimizer that takes lr")
            if k == "weight_decay":
                raise ConfigError(source, p("train.weight_decay"), f"{name} takes no weight_decay argument; "
                                  "remove train.weight_decay")
            raise ConfigError(source, p(where[k]), f"{name} takes no argument {k!r}; it takes: "
                              f"{', '.join(accepted) or 'nothing'}")

    if factory:  # it needs the real model; what it builds is checked when training starts
        return

    def fails(kw: dict[str, Any]) -> Exception | None:
        # A 1-element parameter suits every optimizer; a (2, 2) one is tried too for those
        # that accept matrices only (a shape check, not a bad argument).
        for shape in ((1,), (2, 2)):
            try:
                cls([torch.nn.Parameter(torch.zeros(shape))], **kw)
                return None
            except Exception as e:  # the optimizer's own validation, whatever it raises
                error = e
        return error

    error = fails(kwargs)
    if error is None:
        return
    # Blame the one argument whose removal makes construction succeed; several: the mapping.
    culprits = [k for k in kwargs if fails({j: v for j, v in kwargs.items() if j != k}) is None]
    key = where[culprits[0]] if len(culprits) == 1 else "train.optimizer_kwargs"
    shown = f"{culprits[0]}={kwargs[culprits[0]]!r}" if len(culprits) == 1 else \
        ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    raise ConfigError(source, p(key), f"{name} rejects {shown}: {type(error).__name__}: {error}")
