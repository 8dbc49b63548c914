"""Executors without Ray: the in-process one, make_executor's choices and errors, and the
Ray executor's checks and install hint (which hold whether or not Ray is installed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.executors import EXECUTORS, Executor, ExecutorError, LocalExecutor, make_executor
from harness.ray_executor import MISSING_RAY


def square(x: int) -> int:
    return x * x


def fail_on_two(x: int) -> int:
    if x == 2:
        raise KeyError(f"job {x}")
    return x


@pytest.fixture
def no_ray(monkeypatch):
    """Ray as if not installed: ``import ray`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "ray", None)


def test_local_runs_every_job_once_in_order():
    ex = make_executor("local")
    assert isinstance(ex, LocalExecutor) and isinstance(ex, Executor)
    assert list(ex.map_unordered(square, [3, 1, 4, 1, 5])) == [(0, 9), (1, 1), (2, 16), (3, 1), (4, 25)]
    assert list(ex.map_unordered(square, [])) == []


def test_local_is_lazy_and_lets_exceptions_through_unchanged():
    seen = []

    def record(x):
        seen.append(x)
        return fail_on_two(x)

    it = LocalExecutor().map_unordered(record, [0, 1, 2, 3])
    assert seen == []  # nothing runs before the first result is asked for
    assert next(it) == (0, 0) and seen == [0]
    assert next(it) == (1, 1)
    with pytest.raises(KeyError, match="job 2"):
        next(it)
    assert seen == [0, 1, 2]  # job 3 never ran


def test_unknown_executor_names_the_option_and_the_choices():
    with pytest.raises(ValueError, match=r"--seedstab-executor: unknown executor 'dask'; "
                                         r"choose one of: local, ray"):
        make_executor("dask")
    assert EXECUTORS == ("local", "ray")


def test_ray_settings_for_the_local_executor_are_an_error():
    with pytest.raises(ValueError, match="--seedstab-ray-address: only for --seedstab-executor ray"):
        make_executor("local", address="auto")
    with pytest.raises(ValueError, match="num_gpus: only for --seedstab-executor ray"):
        make_executor("local", num_gpus=0.5)
    # unset options pass through as None and count as not given
    assert isinstance(make_executor("local", address=None, num_gpus=None), LocalExecutor)


def test_unknown_ray_setting_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) gpus; expected: num_cpus, num_gpus, "
                                         r"max_retries, runtime_env"):
        make_executor("ray", gpus=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_gpus": -0.5}, "num_gpus: expected a number >= 0, got -0.5"),
    ({"num_cpus": "two"}, "num_cpus: expected a number >= 0, got 'two'"),
    ({"max_retries": 1.5}, "max_retries: expected an integer >= 0"),
    ({"max_retries": -2}, "max_retries: expected an integer >= 0"),
    ({"runtime_env": ["pip"]}, "runtime_env: expected a mapping"),
    ({"address": ""}, "--seedstab-ray-address: expected a Ray cluster address"),
])
def test_bad_ray_settings_name_the_setting(kwargs, message, no_ray):
    # checked before Ray is imported: the same error with or without the extra
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_executor("ray", **kwargs)


def test_ray_missing_says_how_to_install_it(no_ray):
    for build in (lambda: make_executor("ray"), lambda: make_executor("ray", address="auto", num_gpus=0.25)):
        with pytest.raises(ExecutorError) as info:
            build()
        assert str(info.value) == MISSING_RAY
        assert str(info.value) == "--seedstab-executor ray needs the [ray] extra: pip install 'seedstab[ray]'"
        assert isinstance(info.value.__cause__, ImportError)
    # the local executor never needs Ray
    assert isinstance(make_executor("local"), LocalExecutor)


def test_importing_executors_does_not_import_ray():
    code = ("import sys, harness.executors as e, harness.ray_executor\n"
            "e.make_executor('local')\n"
            "assert e.RayExecutor.__name__ == 'RayExecutor'\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
