"""A provider's concurrency limit holds across every worker and driver."""

import os
import time

import pytest

from runner import engine
from runner.models import Record, Run
from runner.spec import library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_limit_holds_across_two_workers_and_two_runs(owner, worker_factory, fake_llm):
    fake_llm.configure(latency=0.15)
    worker_factory()
    worker_factory()
    provider = provider_for(owner, fake_llm, concurrency=6)
    spec = library.get("qa-from-topics").spec
    runs = [
        engine.launch_run(
            owner,
            spec,
            [{"topic": f"Run {n} topic {i}"} for i in range(4)],
            providers={"*": provider.pk},
        )
        for n in range(2)
    ]
    for run in runs:
        wait_for(run, timeout=120)
        assert run.status == Run.COMPLETED
        assert Record.objects.filter(run=run).count() == 20
    stats = fake_llm.stats()
    assert stats["total"] == 2 * (4 + 20 + 20)
    assert stats["max_in_flight"] <= 6
    assert stats["max_in_flight"] >= 4  # and the calls really ran side by side


def _sessions_opened():
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cur.fetchone()[0]


@pytest.mark.skipif(
    not os.environ.get("TEST_POSTGRES"), reason="PostgreSQL counts its sessions (make test's run)"
)
def test_a_busy_worker_keeps_its_database_connections(owner, worker, fake_llm):
    # A connection is a server process on PostgreSQL: the worker's host looks for runs 4
    # times a second and its drivers announce progress as often; none of them reconnects.
    fake_llm.configure(latency=0.4)
    provider = provider_for(owner, fake_llm, concurrency=4)
    spec = library.get("qa-from-topics").spec
    run = engine.launch_run(owner, spec, [{"topic": "Kelp"}], providers={"*": provider.pk})
    wait_for(run, timeout=60, until=lambda r: r.tasks.filter(status="done").exists())
    before = _sessions_opened()
    wait_for(run, timeout=120)  # 10 more calls at 4 in flight: 3 rounds of 0.4 s, or more
    assert run.status == Run.COMPLETED
    assert _sessions_opened() - before <= 3


def _driven_to_the_end(run, timeout=30):
    """Wait for the run to end and its drivers to stop (each leaves the run's crew)."""
    from runner.engine import keys, limits

    wait_for(run, timeout=timeout)
    deadline = time.monotonic() + timeout
    while limits.client().exists(keys.crew(run.code)):
        assert time.monotonic() < deadline, "the run's drivers did not stop"
        time.sleep(0.02)
    return run


@pytest.mark.skipif(
    not os.environ.get("TEST_POSTGRES"), reason="PostgreSQL counts its sessions (make test's run)"
)
def test_a_worker_drives_run_after_run_on_the_connection_it_kept(owner, worker, fake_llm):
    # A driver's thread waits for the next run with its connection open: a run's start
    # does not wait for a new PostgreSQL server process.
    provider = provider_for(owner, fake_llm, concurrency=4)
    spec = library.get("qa-from-topics").spec
    first = engine.launch_run(owner, spec, [{"topic": "Kelp"}], providers={"*": provider.pk})
    assert _driven_to_the_end(first).status == Run.COMPLETED
    before = _sessions_opened()
    second = engine.launch_run(owner, spec, [{"topic": "Coral"}], providers={"*": provider.pk})
    assert _driven_to_the_end(second).status == Run.COMPLETED
    assert Record.objects.filter(run=second).count() == 5
    assert _sessions_opened() - before == 0


@pytest.mark.skipif(
    not os.environ.get("TEST_POSTGRES"),
    reason="PostgreSQL ends sessions on demand (make test's run)",
)
def test_a_kept_connection_the_database_cut_is_opened_again_for_the_next_run(
    owner, worker, fake_llm
):
    from django.db import connection

    provider = provider_for(owner, fake_llm, concurrency=4)
    spec = library.get("qa-from-topics").spec
    first = engine.launch_run(owner, spec, [{"topic": "Kelp"}], providers={"*": provider.pk})
    assert _driven_to_the_end(first).status == Run.COMPLETED
    with connection.cursor() as cur:  # as a database restart would: every other session ends
        cur.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cur.fetchone()[0] >= 1
    second = engine.launch_run(owner, spec, [{"topic": "Coral"}], providers={"*": provider.pk})
    assert wait_for(second, timeout=60).status == Run.COMPLETED, second.error
    assert Record.objects.filter(run=second).count() == 5
