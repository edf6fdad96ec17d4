"""The seed's pipelines end to end: real Redis, a real Celery worker, a fake OpenAI server."""

import pytest

from runner import engine
from runner.models import Record, Run, Task
from runner.spec import library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_qa_from_topics_end_to_end(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    spec = library.get("qa-from-topics").spec
    topics = ["Solar energy", "Ocean tides", "Volcanoes", "Honey bees"]
    run = engine.launch_run(
        owner, spec, [{"topic": t} for t in topics], providers={"*": provider.pk}
    )
    wait_for(run)
    assert run.status == Run.COMPLETED, worker.output()[-2000:]
    # 4 topics -> 5 subtopics each -> one question and one answer per subtopic
    assert Task.objects.filter(run=run, step=0, status="done").count() == 4
    assert Task.objects.filter(run=run, step=1, status="done").count() == 20
    assert Task.objects.filter(run=run, step=2, status="done").count() == 20
    records = list(Record.objects.filter(run=run).order_by("seq"))
    assert len(records) == 20
    for rec in records:
        assert set(rec.data) == {"topic", "subtopic", "question", "answer"}
        assert rec.data["topic"] in topics
        chain = rec.lineage()
        assert len(chain) == 3
        root = Task.objects.get(pk=chain[0])
        assert root.step == 0 and root.context == {"topic": rec.data["topic"]}
        assert rec.data["subtopic"] in root.parsed
    # every subtopic of every topic is present exactly once
    per_topic = {
        t: sorted(r.data["subtopic"] for r in records if r.data["topic"] == t) for t in topics
    }
    for t in topics:
        root = Task.objects.get(run=run, step=0, context__topic=t)
        assert per_topic[t] == sorted(root.parsed)
    # 4 + 20 + 20 calls, each made once
    assert fake_llm.stats()["total"] == 44
    assert max(fake_llm.stats()["per_prompt"].values()) == 1


def test_instruction_variations_end_to_end(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    spec = library.get("instruction-variations").spec
    run = engine.launch_run(owner, spec, spec.inputs, providers={"*": provider.pk})
    wait_for(run)
    assert run.status == Run.COMPLETED
    records = list(Record.objects.filter(run=run))
    assert len(records) == 15  # 3 instructions x 5 variations
    assert {r.data["instruction"] for r in records} == {
        "Write a haiku",
        "Write a sonnet",
        "Write a limerick",
    }
    assert all(r.data["output"] for r in records)
