"""The Ray executor against a real local Ray cluster (one for the whole module): every
result arrives once, errors name the job, a killed worker is retried, Ctrl-C cancels."""

from __future__ import annotations

import os
import textwrap
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

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


# --------------------------------------------------------------------------- end to end
# First: the tests further down kill workers, and new ones import torch again.

TINY = """
    name: tiny
    seeds: [0, 1]
    model: {n_layers: 1, n_heads: 2, d_model: 16, d_mlp: 32}
    data: {vocab_size: 32, seq_len: 32}
    train: {lr: 1.0e-3, steps: 20, batch_size: 4, checkpoint_every: 10, threads: %d, device: cpu}
    probe: {n_prompts: 4}
"""


def tiny_family(tmp_path: Path, threads: int):
    from harness.config import load_family

    path = tmp_path / f"tiny-t{threads}.yaml"
    path.write_text(textwrap.dedent(TINY % threads))
    return load_family(path)


# 2 threads: one short seed (two threads per seed on a busy 2-core machine crawl)
@pytest.mark.parametrize("threads, seeds, steps", [(1, [0, 1], 20), (2, [1], 8)])
def test_a_family_trained_on_ray_workers_matches_local_training_bitwise(cluster, tmp_path, monkeypatch,
                                                                        threads, seeds, steps):
    from harness.family import obtain_family
    from harness.store import Store

    cfg = tiny_family(tmp_path, threads).replace(seeds=seeds, train={"steps": steps})
    local = obtain_family(cfg, store=tmp_path / "local")
    saves = []
    real_save = Store.save_seed

    def counting_save(self, *args, **kwargs):
        saves.append(args[2] if len(args) > 2 else kwargs["seed_key"])
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Store, "save_seed", counting_save)
    # workers of 1 CPU: Ray's OMP_NUM_THREADS=1 must not decide the thread count, the unit does
    remote = obtain_family(cfg, store=tmp_path / "ray", executor=RayExecutor(num_cpus=1))
    assert remote.trained_now == len(seeds) and [s.seed for s in remote.seeds] == seeds
    for a, b in zip(local.seeds, remote.seeds):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), f"seed {a.seed}"
        assert b.log["threads"] == threads
        assert b.log["trained_by"]["pid"] != os.getpid()  # trained on a worker, not here
    assert local.seeds[0].log["trained_by"]["pid"] == os.getpid()
    # the driver wrote each seed once, and the workers wrote nothing (no checkpoints either)
    assert sorted(saves) == sorted(cfg.seed_key(s) for s in seeds)
    entries = Store(tmp_path / "ray").entries()
    assert sorted(e.seed_key for e in entries) == sorted(saves)
    assert not list((tmp_path / "ray").rglob("*checkpoint*"))
    # a second run finds both seeds in the store and sends nothing to Ray
    again = obtain_family(cfg, store=tmp_path / "ray", executor=RayExecutor())
    assert again.trained_now == 0 and len(saves) == len(seeds)


def test_code_the_workers_cannot_import_fails_by_seed_until_runtime_env_ships_it(cluster, tmp_path, monkeypatch):
    """An optimizer module the driver imports from a folder of its own: the workers do not
    see that folder (only the driver's working directory), so the seed fails by name;
    shipped with ``runtime_env``, the same family trains."""
    from harness.family import obtain_family

    code = tmp_path / "code"
    code.mkdir()
    (code / "my_sgd.py").write_text("from torch.optim import SGD\n")
    monkeypatch.syspath_prepend(str(code))
    cfg = tiny_family(tmp_path, 1).replace(seeds=[3], train={"optimizer": "my_sgd:SGD"})
    with pytest.raises(ExecutorError) as info:
        obtain_family(cfg, store=tmp_path / "s", executor=RayExecutor())
    assert str(info.value).startswith("ray job 0 (tiny seed 3 on cpu) raised ")
    assert "my_sgd" in str(info.value)
    shipped = RayExecutor(runtime_env={"env_vars": {"PYTHONPATH": str(code)}})
    fam = obtain_family(cfg, store=tmp_path / "s", executor=shipped)
    assert fam.trained_now == 1 and fam.seeds[0].log["trained_by"]["pid"] != os.getpid()


# --------------------------------------------------------------------------- the executor

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
    # Python's own Ctrl-C behaviour, whatever an earlier test or library left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_cancels(cluster)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_cancels(cluster):
    total = ray.cluster_resources()["CPU"]
    it = cluster.map_unordered(sleep_for, [0.0, 60.0])
    assert next(it) == (0, 0.0)
    # a real SIGINT while the driver waits inside map_unordered for the 60 s job
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

