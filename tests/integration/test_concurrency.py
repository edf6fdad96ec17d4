"""A provider's concurrency limit holds across every worker and driver."""

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
