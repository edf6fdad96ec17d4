"""Every callback through the real stack: scatter, broadcast, aggregate, flatten, custom Python."""

import pytest

from runner import engine
from runner.events import stats
from runner.models import Record, Run, Task
from runner.spec import library
from runner.spec.builder import PipelineBuilder, Step

from . import seed_steps
from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def launch(owner, fake, spec, inputs=None):
    provider = provider_for(owner, fake)
    run = engine.launch_run(
        owner, spec, inputs if inputs is not None else spec.inputs, providers={"*": provider.pk}
    )
    wait_for(run)
    assert run.status == Run.COMPLETED, stats.run_state(run)
    return run


def test_seed_basic_pipeline_with_kwargs_and_list_inputs(owner, worker, fake_llm):
    run = launch(owner, fake_llm, seed_steps.basic_pipeline("Write a haiku"))
    records = list(Record.objects.filter(run=run))
    assert len(records) == 5
    assert all(r.data["result"] for r in records)
    assert len({r.data["instruction"] for r in records}) == 5  # each variation executed

    run = launch(
        owner,
        fake_llm,
        seed_steps.basic_pipeline_many(["Write a haiku", "Write a sonnet", "Write a limerick"]),
    )
    assert Record.objects.filter(run=run).count() == 15


def test_seed_custom_flatten_callback(owner, worker, fake_llm):
    run = launch(owner, fake_llm, seed_steps.flatten_pipeline(["Rivers", "Deserts", "Glaciers"]))
    # three lists of 3 flattened into one input -> one question
    final = Task.objects.get(run=run, step=1)
    assert len(final.context["subtopics"]) == 9
    roots = Task.objects.filter(run=run, step=0).order_by("seq")
    assert final.context["subtopics"] == [s for t in roots for s in t.parsed]  # input order kept
    records = list(Record.objects.filter(run=run))
    assert len(records) == 1 and records[0].data["question"]


def test_broadcast_makes_n_real_copies(owner, worker, fake_llm):
    p = PipelineBuilder("Three answers")
    (
        p
        << Step("Write a question about {{topic}}.", name="q", output_key="question").broadcast(3)
        << Step("Answer: {{question}}", name="a", output_key="answer")
    )
    p.input([{"topic": "Bread"}, {"topic": "Clouds"}])
    run = launch(owner, fake_llm, p.build())
    assert Task.objects.filter(run=run, step=1, status="done").count() == 6
    assert Record.objects.filter(run=run).count() == 6
    answer_prompts = [t.messages[-1]["content"] for t in Task.objects.filter(run=run, step=1)]
    per_prompt = fake_llm.stats()["per_prompt"]
    # three identical prompts per question, each really sent (no dedupe across copies)
    assert all(per_prompt[p] == 3 for p in set(answer_prompts))


def test_aggregate_in_input_order_grouped_by_key(owner, worker, fake_llm):
    p = PipelineBuilder("Group")
    (
        p
        << Step(
            "List 3 subtopics of {{topic}} as a JSON list.",
            name="subs",
            output="json_list",
            output_key="subtopics",
        ).scatter("subtopic")
        << Step("Write a question about {{subtopic}}.", name="q", output_key="question").aggregate(
            into="questions", group_by="topic"
        )
        << Step(
            "Rank these questions about {{topic}}: {{ questions | join(' | ') }}",
            name="rank",
            output_key="ranking",
        )
    )
    p.input([{"topic": "Bread"}, {"topic": "Clouds"}])
    run = launch(owner, fake_llm, p.build())
    finals = list(Task.objects.filter(run=run, step=2).order_by("seq"))
    assert [t.context["topic"] for t in finals] == ["Bread", "Clouds"]
    for t in finals:
        qs = Task.objects.filter(run=run, step=1, context__topic=t.context["topic"]).order_by("seq")
        assert t.context["questions"] == [q.parsed for q in qs]
    assert Record.objects.filter(run=run).count() == 2


def test_flatten_template_and_identical_calls_made_once(owner, worker, fake_llm):
    spec = library.get("topics-flatten-qa").spec
    run = launch(owner, fake_llm, spec, [{"topic": "Tea"}, {"topic": "Tea"}, {"topic": "Coffee"}])
    per_prompt = fake_llm.stats()["per_prompt"]
    tea_prompt = (
        Task.objects.filter(run=run, step=0, context__topic="Tea").first().messages[-1]["content"]
    )
    assert per_prompt[tea_prompt] == 1  # two identical calls, one request
    assert Task.objects.filter(run=run, step=0, cached=True).count() == 1
    flattened = Task.objects.get(run=run, step=1).context["subtopics"]
    assert len(flattened) == 9
    assert (
        Record.objects.filter(run=run).count()
        == Task.objects.filter(run=run, step=2, status="done").count()
        > 0
    )
