"""How many worker processes `make run` starts (scripts/services.py)."""

import os

import pytest

from scripts.services import worker_processes


def test_make_run_starts_one_worker_per_cpu_core_up_to_four():
    cores = len(os.sched_getaffinity(0))
    assert worker_processes({}) == min(cores, 4)


def test_runner_workers_chooses_how_many():
    assert worker_processes({"RUNNER_WORKERS": "3"}) == 3
    assert worker_processes({"RUNNER_WORKERS": " 1 "}) == 1


@pytest.mark.parametrize(
    "value, words",
    [("two", "is not a number of worker processes"), ("0", "must be between 1 and 64")],
)
def test_a_bad_runner_workers_is_named_in_the_error(value, words):
    with pytest.raises(SystemExit) as exc:
        worker_processes({"RUNNER_WORKERS": value})
    assert f"RUNNER_WORKERS={value!r}" in str(exc.value) or f"RUNNER_WORKERS={value}" in str(
        exc.value
    )
    assert words in str(exc.value)
