"""Where the units of a family's training run: in this process, or elsewhere.

An executor takes a picklable function and a list of picklable jobs and yields
``(index, result)`` pairs as jobs finish, in any order. The caller (the driver) keeps the
store: results come back to it and it writes them, so executors need no shared filesystem.
``LocalExecutor`` runs the jobs one after another in this process, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn(job)`` for every job; yields ``(index into jobs, result)`` as each finishes."""

    name: str

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ...


class LocalExecutor:
    """In this process, one job after another, in order; exceptions propagate unchanged."""

    name = "local"

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        for i, job in enumerate(jobs):
            yield i, fn(job)

    def __repr__(self) -> str:
        return "LocalExecutor()"
