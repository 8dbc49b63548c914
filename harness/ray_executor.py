"""Run the units of a family's training as Ray tasks, on this machine or on a cluster.

Ray is an optional extra: this module imports it only when a :class:`RayExecutor` is made,
and says how to install it when it is missing. Results travel back to the driver, which
writes the store, so workers need neither the store's folder nor a shared filesystem;
they need the same Python packages (``seedstab``, torch, the modules a spec names by
import path). On a local cluster the workers import what the driver's working directory
holds; on a remote one, ship code with ``runtime_env`` (``py_modules``, ``working_dir``,
``pip``).

Retries: a worker that dies (killed, out of memory, its node lost) is a system failure,
and Ray reruns its task up to ``max_retries`` times; an exception the job raises is not
retried (a seed that diverges diverges again). Each job's result reaches the driver once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from numbers import Real
from typing import Any

from harness.executors import ExecutorError

log = logging.getLogger(__name__)

MISSING_RAY = "--seedstab-executor ray needs the [ray] extra: pip install 'seedstab[ray]'"

# ray.wait returns at least this often, so Ctrl-C reaches the driver's Python code promptly.
_POLL_S = 0.5
_LABEL_CHARS = 160


def import_ray():
    """The ``ray`` module, or :class:`ExecutorError` with the install command."""
    try:
        import ray
    except ImportError as e:
        raise ExecutorError(MISSING_RAY) from e
    return ray


class RayExecutor:
    """Each job is one Ray task with ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractional
    values share a GPU among several seeds); ``(index, result)`` pairs come back as tasks
    finish, in any order.

    Where Ray runs: if this process is already connected (``ray.init`` ran), that
    connection is used and left open. Otherwise ``address`` (a cluster address such as
    ``ray://head:10001`` or ``head:6379``, or ``auto`` for a cluster started on this
    machine with ``ray start``), else the ``RAY_ADDRESS`` environment variable, else a new
    local cluster with all of this machine's CPUs (and GPUs). The executor shuts
    down only what it started (see :meth:`close`; it is also a context manager).

    An exception in a job raises :class:`ExecutorError` on the driver naming the job, with
    the worker's exception (and its remote traceback) chained; the other jobs are
    cancelled. So are they when the driver is interrupted (KeyboardInterrupt) or stops
    reading the results.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: float = 1, num_gpus: float = 0,
                 max_retries: int = 3, runtime_env: Mapping[str, Any] | None = None) -> None:
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"--seedstab-ray-address: expected a Ray cluster address such as "
                             f"ray://head:10001, head:6379 or auto, got {address!r}")
        self.address = address
        self.num_cpus = _non_negative("num_cpus", num_cpus)
        self.num_gpus = _non_negative("num_gpus", num_gpus)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
            raise ValueError(f"RayExecutor max_retries: expected an integer >= 0 (or -1: retry "
                             f"without end), got {max_retries!r}")
        self.max_retries = max_retries
        if runtime_env is not None and not isinstance(runtime_env, Mapping):
            raise ValueError(f"RayExecutor runtime_env: expected a mapping such as "
                             f"{{'pip': ['seedstab']}}, got {runtime_env!r}")
        self.runtime_env = dict(runtime_env) if runtime_env is not None else None
        self._ray = import_ray()  # after the checks, so they hold also where Ray is missing
        self.started = False  # True while this executor holds a connection it opened
        self.startup_s: float | None = None  # how long connecting (or starting Ray) took

    def start(self) -> None:
        """Connect to Ray, or start a local cluster; :meth:`map_unordered` calls it."""
        ray = self._ray
        if ray.is_initialized():
            return
        t0 = time.perf_counter()
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address is None:
            # "local": a new cluster even if `ray start` left one behind on this machine
            ray.init(address="local", include_dashboard=False)
        else:
            try:
                ray.init(address=address)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = "--seedstab-ray-address" if self.address else "RAY_ADDRESS"
                hint = ""
                if _auth_failed(e):  # `ray start` turns token authentication on; ray.init does not
                    hint = ("; the cluster wants its token: set RAY_AUTH_MODE=token here (the token "
                            "from ~/.ray/auth_token or RAY_AUTH_TOKEN)")
                raise ExecutorError(f"{where}: cannot connect to the Ray cluster at {address!r}: "
                                    f"{_first_line(e)}{hint}") from e
        self.started = True
        self.startup_s = time.perf_counter() - t0
        log.info("ray: %s in %.1f s (%s)", "connected" if address else "started a local cluster",
                 self.startup_s, ray.cluster_resources())

    def close(self) -> None:
        """Disconnect from Ray if :meth:`start` connected (a local cluster it started stops)."""
        if self.started:
            self.started = False
            self._ray.shutdown()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """``fn`` must be importable by the workers (a module-level function), and jobs
        and results picklable."""
        ray = self._ray
        self.start()
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                                   "max_retries": self.max_retries}
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        task = ray.remote(fn).options(**options)
        index: dict[Any, int] = {}
        pending: list[Any] = []
        try:
            for i, job in enumerate(jobs):  # inside the try: Ctrl-C while submitting cancels too
                ref = task.remote(job)
                index[ref] = i
                pending.append(ref)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=_POLL_S)
                for ref in done:
                    i = index[ref]
                    yield i, self._result(ref, i, jobs)
        finally:
            # Reached with tasks left only on an error, KeyboardInterrupt or a caller that
            # stopped reading; force: a running training loop does not look at signals.
            for ref in pending:
                ray.cancel(ref, force=True)
            if pending:
                log.info("ray: cancelled %d outstanding job(s)", len(pending))

    def _result(self, ref: Any, i: int, jobs: Sequence[Any]) -> Any:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(ref)
        except exceptions.RayTaskError as e:  # the job raised
            cause = e.cause if isinstance(e.cause, BaseException) else e
            raise ExecutorError(f"ray job {i} ({_label(jobs[i])}) raised "
                                f"{type(cause).__name__}: {_first_line(cause)}") from e
        except exceptions.UnserializableException as e:  # the job raised; unpicklable here
            raise ExecutorError(f"ray job {i} ({_label(jobs[i])}) raised "
                                f"{_exception_line(getattr(e, '_original_stack_trace', ''))}") from e
        except exceptions.RayError as e:  # its worker died more often than retried, or lost
            raise ExecutorError(f"ray job {i} ({_label(jobs[i])}) failed: {type(e).__name__}: "
                                f"{_first_line(e)} (max_retries={self.max_retries})") from e

    def __repr__(self) -> str:
        env = f", runtime_env={self.runtime_env!r}" if self.runtime_env is not None else ""
        return (f"RayExecutor(address={self.address!r}, num_cpus={self.num_cpus}, "
                f"num_gpus={self.num_gpus}, max_retries={self.max_retries}{env})")


def _auth_failed(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _non_negative(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or value < 0:
        raise ValueError(f"RayExecutor {key}: expected a number >= 0, got {value!r}")
    return value


def _label(job: Any) -> str:
    text = str(job)
    return text if len(text) <= _LABEL_CHARS else text[:_LABEL_CHARS - 1] + "…"


def _exception_line(traceback_text: str) -> str:
    """``Class: first line of the message`` from a formatted traceback: the first line
    after the last frame (a message may have more lines)."""
    lines = traceback_text.rstrip().splitlines()
    frames = [n for n, line in enumerate(lines) if line.startswith("  File ")]
    after = [line for line in lines[frames[-1] + 1 if frames else 0:] if line and not line.startswith(" ")]
    if not after:
        return "an exception that could not be read back"
    name, sep, message = after[0].partition(": ")
    return f"{name.rpartition('.')[2]}{sep}{message}"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else "(no message)"
