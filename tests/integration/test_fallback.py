"""A step lists models in order: when one keeps failing, the next answers, and the task says which."""

import pytest

from runner import engine
from runner.models import Provider, Record, Run, Task
from runner.spec import ModelRef, library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _spec(model, fallbacks):
    spec = library.get("qa-from-topics").spec
    steps = [
        s.model_copy(update={"model": ModelRef(name=model, fallbacks=fallbacks)})
        for s in spec.steps
    ]
    return spec.model_copy(update={"steps": steps})


def test_a_model_that_does_not_exist_falls_back_to_the_next(owner, worker, fake_llm):
    fake_llm.configure(models=["fake-model", "backup-model"])
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner,
        _spec("retired-model", ["backup-model"]),
        [{"topic": "Glaciers"}],
        providers={"*": provider.pk},
    )
    wait_for(run)
    assert run.status == Run.COMPLETED
    tasks = Task.objects.filter(run=run)
    assert tasks.count() == 11 and all(t.status == "done" for t in tasks)
    assert {t.model for t in tasks} == {"backup-model"}  # which model answered
    first = tasks.get(step=0)
    assert "404" in first.attempt_log[0]["error"]
    assert first.attempt_log[1]["fallback"] == "backup-model"
    assert first.attempts == 2  # one call to each model
    assert Record.objects.filter(run=run).count() == 5
    # a model that answered "not found" is not asked again by this driver
    models = [r["model"] for r in fake_llm.stats()["recent"]]
    assert models.count("retired-model") < 11


def test_a_model_whose_retries_run_out_falls_back(owner, worker_factory, fake_llm):
    worker_factory(RUNNER_MAX_TRANSIENT_RETRIES=1)
    fake_llm.configure(fail_models={"busy-model": 503})
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner,
        _spec("busy-model", ["fake-model"]),
        [{"topic": "Deserts"}],
        providers={"*": provider.pk},
    )
    wait_for(run)
    assert run.status == Run.COMPLETED
    first = Task.objects.get(run=run, step=0)
    assert first.status == "done" and first.model == "fake-model"
    assert [a.get("status") for a in first.attempt_log[:2]] == [503, 503]
    assert "busy-model failed: gave up after 2 attempts" in first.attempt_log[2]["error"]
    assert first.attempts == 3


def test_with_every_model_failing_the_task_fails_with_the_last_reason(owner, worker, fake_llm):
    fake_llm.configure(models=["fake-model"])
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner, _spec("gone-1", ["gone-2"]), [{"topic": "Caves"}], providers={"*": provider.pk}
    )
    wait_for(run)
    task = Task.objects.get(run=run)
    assert task.status == "failed"
    assert task.error.startswith("404 Not Found") and "gone-2" in task.error


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_fallback_on_each_provider_kind(owner, worker, kind):
    from tests.fakes.anthropic_server import FakeAnthropic
    from tests.fakes.gemini_server import FakeGemini

    fake_cls = FakeAnthropic if kind == "anthropic" else FakeGemini
    with fake_cls(api_key="key-1234", models=["backup-model"]) as fake:
        provider = Provider(owner=owner, name=kind, kind=kind, base_url=fake.url)
        provider.set_api_key("key-1234")
        provider.prices = {"backup-model": [1.0, 1.0]}
        provider.save()
        run = engine.launch_run(
            owner,
            _spec("retired-model", ["backup-model"]),
            [{"topic": "Glaciers"}],
            providers={"*": provider.pk},
        )
        wait_for(run)
    assert run.status == Run.COMPLETED
    tasks = Task.objects.filter(run=run)
    assert tasks.count() == 11 and {t.status for t in tasks} == {"done"}
    assert {t.model for t in tasks} == {"backup-model"}
    assert all(t.tokens_in > 0 and t.tokens_out > 0 for t in tasks)  # the provider's own usage
    assert all(t.cost == t.tokens_in + t.tokens_out for t in tasks)
    assert len(tasks.get(step=0).parsed) == 5  # the JSON list came back as a list
    assert Record.objects.filter(run=run).count() == 5
