"""Bounded work: a prompt template that would pin a worker, and a reply too big to keep."""

import time

import pytest

from runner import engine
from runner.models import Record, Run, Task
from runner.spec import library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QA = library.get("qa-from-topics").spec
BOMB = (
    "List subtopics of {{ topic }}."
    "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
    "{% endfor %}{% endfor %}{% endfor %}"
)


def test_a_template_bomb_fails_its_task_within_the_limit_while_another_run_finishes(
    owner, worker, fake_llm
):
    provider = provider_for(owner, fake_llm)
    bomb = QA.model_copy(
        update={"steps": [QA.steps[0].model_copy(update={"prompt": BOMB}), *QA.steps[1:]]}
    )
    started = time.monotonic()
    bad = engine.launch_run(owner, bomb, [{"topic": "Tea"}], providers={"*": provider.pk})
    good = engine.launch_run(owner, QA, [{"topic": "Rain"}], providers={"*": provider.pk})
    wait_for(bad, timeout=60)
    assert time.monotonic() - started < 30  # one second of work, not hours
    assert bad.status == Run.FAILED
    task = Task.objects.get(run=bad)
    assert task.status == Task.FAILED
    assert "loops went over 1,000,000 steps (the limit)" in task.error
    assert "No record could be made" in bad.error
    wait_for(good, timeout=60)
    assert good.status == Run.COMPLETED
    assert Record.objects.filter(run=good).count() == 5
    assert fake_llm.stats()["total"] == 11  # the bomb never reached the provider


def test_a_huge_prompt_is_refused_before_it_is_sent(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    huge = QA.model_copy(
        update={
            "steps": [
                QA.steps[0].model_copy(update={"prompt": "{{ topic * 20000000 }}"}),
                *QA.steps[1:],
            ]
        }
    )
    run = engine.launch_run(owner, huge, [{"topic": "a"}], providers={"*": provider.pk})
    wait_for(run, timeout=60)
    task = Task.objects.get(run=run)
    assert "would be over 1,000,000 characters" in task.error
    assert fake_llm.stats()["total"] == 0
    assert len(task.messages or []) == 0 or sum(len(m["content"]) for m in task.messages) < 10_000


def test_a_reply_over_the_size_limit_fails_its_task_with_the_reason(owner, worker, fake_llm):
    fake_llm.configure(huge_reply_for={"Volcanoes": 5_000_000})
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner, QA, [{"topic": "Volcanoes"}, {"topic": "Tea"}], providers={"*": provider.pk}
    )
    wait_for(run, timeout=60)
    assert run.status == Run.COMPLETED_WITH_FAILURES
    failed = Task.objects.get(run=run, status=Task.FAILED)
    assert failed.context == {"topic": "Volcanoes"}
    assert "reply is over 4 MB (the limit)" in failed.error
    assert len(failed.raw_output) < 10_000  # nothing of the 5 MB was stored
    assert fake_llm.stats()["per_prompt"][failed.messages[-1]["content"]] == 1  # not retried
    assert Record.objects.filter(run=run).count() == 5


def test_a_provider_can_have_its_own_reply_limit(owner, worker, fake_llm):
    fake_llm.configure(huge_reply_for={"Volcanoes": 1_500_000})  # under the 4 MB default
    provider = provider_for(owner, fake_llm)
    provider.max_reply_mb = 1
    provider.save()
    run = engine.launch_run(owner, QA, [{"topic": "Volcanoes"}], providers={"*": provider.pk})
    wait_for(run, timeout=60)
    assert run.status == Run.FAILED
    assert "reply is over 1 MB (the limit)" in Task.objects.get(run=run).error
