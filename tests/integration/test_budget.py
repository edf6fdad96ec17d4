"""Spend and budgets: tasks priced from their tokens, a run that pauses at its budget and resumes."""

import pytest

from runner import engine
from runner.models import Record, Run, Task
from runner.spec import library
from runner.spec import money as costs

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# $/1M tokens; the fake counts words as tokens
PRICES = {"fake-model": [1000.0, 2000.0]}


def _priced(owner, fake):
    provider = provider_for(owner, fake, concurrency=4)
    provider.prices = PRICES
    provider.save()
    return provider


def test_every_task_is_priced_and_the_run_spend_is_their_sum(owner, worker, fake_llm):
    provider = _priced(owner, fake_llm)
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": "Comets"}],
        providers={"*": provider.pk},
    )
    wait_for(run)
    assert run.status == Run.COMPLETED
    for task in Task.objects.filter(run=run):
        assert task.cost == task.tokens_in * 1000 + task.tokens_out * 2000  # whole micro-dollars
        assert task.cost > 0
    total = sum(t.cost for t in Task.objects.filter(run=run))
    assert run.spent == total
    assert costs.fmt_dollars(run.spent) == costs.fmt_dollars(total)


def test_a_run_pauses_at_its_budget_and_resumes_when_it_is_raised(owner, worker, fake_llm):
    fake_llm.configure(latency=0.05)
    provider = _priced(owner, fake_llm)
    topics = [f"Planet {i}" for i in range(4)]
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": t} for t in topics],
        providers={"*": provider.pk},
        budget="0.50",
    )
    wait_for(run, timeout=60)
    assert run.status == Run.PAUSED
    assert run.spent >= 500_000  # micro-dollars: the budget was reached...
    done = Task.objects.filter(run=run, status="done").count()
    assert 0 < done < 44  # ...before the run was done
    assert run.error == costs.paused_message(run.spent, 500_000)
    assert run.error.startswith("Paused: spent $0.") and "of the $0.50 budget" in run.error
    assert run.error.endswith("raise the budget to continue")
    assert not Task.objects.filter(run=run, status="running").exists()
    calls = fake_llm.stats()["total"]

    # raising it, but not above what was spent, keeps it paused
    engine.set_budget(run, costs.dollars(run.spent * 99 // 100))
    assert run.status == Run.PAUSED
    assert fake_llm.stats()["total"] == calls

    engine.set_budget(run, 100)
    # queued again (a worker may already have picked it up), with no reason left
    assert run.status in (Run.QUEUED, Run.RUNNING) and run.error == ""
    wait_for(run, timeout=60)
    assert run.status == Run.COMPLETED
    assert Record.objects.filter(run=run).count() == 20
    assert max(fake_llm.stats()["per_prompt"].values()) == 1  # nothing was paid for twice
    assert run.spent == sum(t.cost for t in Task.objects.filter(run=run))


def test_estimate_counts_calls_tokens_and_cost(owner, fake_llm):
    provider = _priced(owner, fake_llm)
    spec = library.get("qa-from-topics").spec
    est = engine.estimate_run(
        owner, spec, [{"topic": "Comets"}, {"topic": "Tides"}], providers={"*": provider.pk}
    )
    assert [s.calls for s in est.steps] == [2, 10, 10]  # "List 5 ..." scatters 5 each
    assert est.calls == 22 and est.tokens_in > 0 and est.tokens_out > 0
    assert est.cost_micro == est.tokens_in * 1000 + est.tokens_out * 2000
    assert est.unpriced == [] and est.complete
    assert "about 22 calls" in est.summary() and "$" in est.summary()
    provider.prices = {}
    provider.save()
    est = engine.estimate_run(owner, spec, [{"topic": "Comets"}], providers={"*": provider.pk})
    assert est.unpriced == ["fake-model"] and "no price is set for fake-model" in est.summary()
