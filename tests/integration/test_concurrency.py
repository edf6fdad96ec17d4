"""A provider's concurrency limit holds across every worker and driver."""

import os

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
