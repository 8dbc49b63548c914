"""Where the units of a family's training run: in this process, or elsewhere.

An executor takes a picklable function and a list of picklable jobs and yields
``(index, result)`` pairs as jobs finish, in any order. The caller (the driver) keeps the
store: results come back to it and it writes them, so executors need no shared filesystem.
``LocalExecutor`` runs the jobs one after another in this process, in order;
``RayExecutor`` (:mod:`harness.ray_executor`, the optional ``[ray]`` extra) runs them as Ray
tasks. :func:`make_executor` builds either from the name the command line gives. Importing
this module does not import Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from harness.ray_executor import RayExecutor

EXECUTORS = ("local", "ray")
# What make_executor("ray", ...) passes on to RayExecutor besides the address.
RAY_RESOURCES = ("num_cpus", "num_gpus", "max_retries", "runtime_env")


class ExecutorError(RuntimeError):
    """A job failed where it ran (named by its index and label), or the executor cannot
    run at all (Ray missing, a cluster unreachable); one line, the cause chained."""


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

    def close(self) -> None:
        """Nothing to release; here so that callers can close any executor they made."""

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "LocalExecutor()"


def make_executor(name: str, *, address: str | None = None, **resources: Any) -> Executor:
    """The executor called ``name``: ``"local"`` (:class:`LocalExecutor`) or ``"ray"``
    (:class:`~harness.ray_executor.RayExecutor` with ``address`` and ``resources``:
    ``num_cpus``, ``num_gpus``, ``max_retries``, ``runtime_env``).

    A resource given as None counts as not given (Ray's default applies), so an unset
    command-line option can be passed on as it is. Errors name the command-line option at
    fault: ``--seedstab-executor`` for an unknown
    name, ``--seedstab-ray-address`` (or the resource) for Ray settings given to the local
    executor. A ``"ray"`` executor without Ray installed raises :class:`ExecutorError`
    with the install command.
    """
    if name not in EXECUTORS:
        raise ValueError(f"--seedstab-executor: unknown executor {name!r}; choose one of: "
                         f"{', '.join(EXECUTORS)}")
    resources = {k: v for k, v in resources.items() if v is not None}
    if name == "local":
        given = (["--seedstab-ray-address"] if address is not None else []) + sorted(resources)
        if given:
            raise ValueError(f"{', '.join(given)}: only for --seedstab-executor ray, "
                             f"not for the local executor")
        return LocalExecutor()
    unknown = sorted(set(resources) - set(RAY_RESOURCES))
    if unknown:
        raise ValueError(f"--seedstab-executor ray: unknown setting(s) {', '.join(unknown)}; "
                         f"expected: {', '.join(RAY_RESOURCES)}")
    from harness.ray_executor import RayExecutor

    return RayExecutor(address, **resources)


def __getattr__(name: str) -> Any:
    # `from harness.executors import RayExecutor` works without importing Ray up front.
    if name == "RayExecutor":
        from harness.ray_executor import RayExecutor

        return RayExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
