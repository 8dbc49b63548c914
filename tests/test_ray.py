"""The Ray executor against a real local Ray cluster (one for the whole module): every
result arrives once, errors name the job, a killed worker is retried, Ctrl-C cancels."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'seedstab[ray]')")

from harness.executors import ExecutorError, make_executor  # noqa: E402
from harness.ray_executor import RayExecutor  # noqa: E402

# The workers cannot import this file by name (pytest puts tests/ on the driver's sys.path
# only), so its job functions travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    """A local cluster started by a RayExecutor, which shuts it down again."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialized in this process; these tests start their own")
    ex = RayExecutor()
    ex.start()
    assert ex.started and ray.is_initialized()
    yield ex
    ex.close()
    assert not ray.is_initialized()


def square(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def raise_on(job: dict) -> int:
    if job["x"] == job["bad"]:
        raise ValueError(f"bad value {job['x']}\nsecond line")
    return job["x"]


def die_on_first_attempt(job: dict) -> int:
    """Kills its own worker the first time it runs for a job in ``job['die']``."""
    attempts = Path(job["dir"]) / f"attempts-{job['x']}"
    with attempts.open("a") as f:
        f.write("x")
    if job["x"] in job["die"] and attempts.read_text() == "x":
        os._exit(1)
    return job["x"] * 10


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_every_result_arrives_once_from_several_workers(cluster):
    jobs = list(range(8))
    got = list(cluster.map_unordered(square, jobs))
    assert sorted(i for i, _ in got) == jobs
    assert {i: r[0] for i, r in got} == {x: x * x for x in jobs}
    assert all(pid != os.getpid() for _, (_, pid) in got)  # not in the driver


def test_an_executor_leaves_a_connection_it_did_not_open(cluster):
    ex = make_executor("ray", num_cpus=0.5)
    assert list(ex.map_unordered(square, [2]))[0][1][0] == 4
    assert not ex.started
    ex.close()
    assert ray.is_initialized()


def test_an_error_names_the_job_and_chains_the_workers_exception(cluster):
    jobs = [{"x": x, "bad": 2} for x in range(4)]
    with pytest.raises(ExecutorError) as info:
        list(cluster.map_unordered(raise_on, jobs))
    assert str(info.value) == "ray job 2 ({'x': 2, 'bad': 2}) raised ValueError: bad value 2"
    cause = info.value.__cause__
    assert isinstance(cause, ray.exceptions.RayTaskError) and isinstance(cause, ValueError)
    assert "raise_on" in str(cause)  # the remote traceback travels with it


def test_long_job_labels_are_cut(cluster):
    job = {"x": 1, "bad": 1, "pad": "p" * 500}
    with pytest.raises(ExecutorError, match=r"^ray job 0 \(\{'x': 1, 'bad': 1, 'pad': 'p+…\) raised ValueError"):
        list(cluster.map_unordered(raise_on, [job]))


def test_a_killed_worker_is_retried_and_each_result_arrives_once(cluster, tmp_path):
    jobs = [{"x": x, "die": [1, 2], "dir": str(tmp_path)} for x in range(4)]
    got = list(RayExecutor(max_retries=2).map_unordered(die_on_first_attempt, jobs))
    assert sorted(got) == [(x, x * 10) for x in range(4)]
    attempts = {x: (tmp_path / f"attempts-{x}").read_text() for x in range(4)}
    assert attempts == {0: "x", 1: "xx", 2: "xx", 3: "x"}


def test_without_retries_a_killed_worker_fails_its_job_by_name(cluster, tmp_path):
    job = {"x": 5, "die": [5], "dir": str(tmp_path)}
    with pytest.raises(ExecutorError, match=r"^ray job 0 \(\{'x': 5, .*\) failed: WorkerCrashedError: "
                                            r".*\(max_retries=0\)$"):
        list(RayExecutor(max_retries=0).map_unordered(die_on_first_attempt, [job]))
    assert (tmp_path / "attempts-5").read_text() == "x"


def wait_for_free_cpus(total: float, timeout: float = 20) -> float:
    deadline = time.monotonic() + timeout
    while (free := ray.available_resources().get("CPU", 0)) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    return free


def test_ctrl_c_cancels_the_outstanding_jobs(cluster):
    total = ray.cluster_resources()["CPU"]
    it = cluster.map_unordered(sleep_for, [0.0, 300.0])
    assert next(it) == (0, 0.0)
    # a real SIGINT while the driver waits inside map_unordered for the 300 s job
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert time.monotonic() - t0 < 10
    assert wait_for_free_cpus(total) == total  # the sleeping task is gone, its CPU free again


def test_a_caller_that_stops_reading_cancels_the_rest(cluster):
    total = ray.cluster_resources()["CPU"]
    it = cluster.map_unordered(sleep_for, [0.0, 300.0])
    assert next(it) == (0, 0.0)
    it.close()
    assert wait_for_free_cpus(total) == total
