"""Quality while the run goes: duplicates set aside before the next step pays for them,
shared by two worker processes; a judge's scores on the records and a filter on them."""

import json

import pytest

from runner import engine
from runner.models import Record, Run, Task
from runner.spec import PipelineSpec
from runner.spec.quality import normalized
from tests.fakes.openai_server import schema_value

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

LONG = (
    "Which gases escape from a volcano before a large eruption and how do scientists "
    "measure them from far away and safely"
)
# Every reply holds the same five questions, spelled differently; the sixth is LONG with
# one more word: a near duplicate of it.
POOL = [
    json.dumps(
        ["What is magma?", "How do volcanoes erupt?", LONG, "Why is lava hot?", "What is ash?", LONG + " today"]
    ),
    json.dumps(
        ["what is  MAGMA?", "How do volcanoes  erupt?", LONG + " today", "why is lava hot?", LONG, "What is ash?"]
    ),
    json.dumps(
        ["What is ash?", "WHAT IS MAGMA?", "Why is lava hot?", LONG, "How do volcanoes erupt?", LONG + " today"]
    ),
]  # fmt: skip
KINDS = 5

DEDUP = PipelineSpec.load(
    {
        "name": "Questions, deduplicated",
        "steps": [
            {
                "name": "questions",
                "prompt": "Write questions about {{topic}} as a JSON list.",
                "output_format": "json_list",
                "output_key": "questions",
                "callback": {"type": "scatter", "item_key": "question"},
                "dedup": {"field": "question", "near": True, "threshold": 0.85},
            },
            {"name": "answer", "prompt": "Answer this: {{question}}", "output_key": "answer"},
        ],
    }
)

JUDGED = PipelineSpec.load(
    {
        "name": "Answers, judged",
        "steps": [
            {"name": "answer", "prompt": "Answer this: {{topic}}", "output_key": "answer"},
            {
                "name": "judge",
                "judge": {
                    "fields": ["topic", "answer"],
                    "criteria": [
                        {"key": "score", "description": "How helpful the answer is"},
                        {"key": "verdict", "scale": "pass_fail", "description": "Is it true?"},
                    ],
                },
                "keep": [{"field": "score", "op": ">=", "value": "4"}],
            },
        ],
    }
)


def test_duplicates_found_across_two_workers_are_set_aside_and_never_answered(
    owner, worker_factory, fake_llm
):
    fake_llm.configure(latency=0.2, pool_for={"Write questions about": POOL})
    worker_factory(RUNNER_MAX_INFLIGHT="3")
    worker_factory(RUNNER_MAX_INFLIGHT="3")
    provider = provider_for(owner, fake_llm, concurrency=16)
    topics = [{"topic": f"volcano {i}"} for i in range(12)]
    run = engine.launch_run(owner, DEDUP, topics, providers={"*": provider.pk})
    wait_for(run, timeout=90)
    assert run.status == Run.COMPLETED, run.error

    # Both workers finished question tasks: the index they share decided across them.
    drivers = {
        c.split(":")[0]
        for c in Task.objects.filter(run=run, step=0).values_list("claim", flat=True)
    }
    assert len(drivers - {""}) >= 2

    kept = list(Record.objects.filter(run=run).kept())
    aside = list(Record.objects.filter(run=run).set_aside())
    assert len(kept) == KINDS
    assert len(kept) + len(aside) == 12 * 6
    # One answer per kind of question reached the provider; no duplicate was answered.
    answered = [p for p in fake_llm.stats()["per_prompt"] if p.startswith("Answer this:")]
    assert len(answered) == KINDS
    assert sorted(fake_llm.stats()["per_prompt"][p] for p in answered) == [1] * KINDS
    assert Task.objects.filter(run=run, step=1).count() == KINDS

    flags = {r.flag for r in aside}
    assert flags == {Record.DUPLICATE, Record.NEAR_DUPLICATE}
    originals = {t.key: t.context["question"] for t in Task.objects.filter(run=run, step=1)}
    for r in aside:
        assert r.step == 0
        assert r.duplicate_of in originals  # points at the question that was answered
        if r.flag == Record.DUPLICATE:
            assert normalized(originals[r.duplicate_of]) == normalized(r.data["question"])
            assert "repeats an earlier one" in r.flag_reason
        else:
            assert {originals[r.duplicate_of], r.data["question"]} == {LONG, LONG + " today"}
            assert "Near duplicate" in r.flag_reason
    # The kept records are the dataset: the exported rows and the counters leave the rest out.
    assert Record.objects.filter(run=run).kept().count() == KINDS


def test_a_judges_scores_reach_the_records_and_the_filter_keeps_the_right_ones(
    owner, worker, fake_llm
):
    fake_llm.configure(follow_schema=True)
    provider = provider_for(owner, fake_llm)
    topics = [{"topic": f"volcano fact {i}"} for i in range(20)]
    run = engine.launch_run(owner, JUDGED, topics, providers={"*": provider.pk})
    wait_for(run, timeout=60)
    assert run.status == Run.COMPLETED, run.error

    judged = Task.objects.filter(run=run, step=1)
    assert judged.count() == 20
    sent = judged.first().messages[-1]["content"]
    assert "How helpful the answer is" in sent and "Is it true?" in sent
    expected = {}
    schema = JUDGED.steps[1].output_schema
    for task in judged:
        prompt = task.messages[-1]["content"]
        reply = schema_value(schema, prompt)  # what the fake answered to this prompt
        expected[task.context["topic"]] = reply
    records = {r.data["topic"]: r for r in Record.objects.filter(run=run)}
    assert len(records) == 20
    for topic, reply in expected.items():
        r = records[topic]
        assert r.data["score"] == reply["score"]
        assert r.data["verdict"] == reply["verdict"]
        assert r.data["rationale"] == reply["rationale"]
        if reply["score"] >= 4:
            assert r.flag == "", (topic, reply)
        else:
            assert r.flag == Record.FILTERED
            assert r.step == 1
            assert f"score is '{reply['score']}' (keep only score at least 4)" in r.flag_reason
    kept = Record.objects.filter(run=run).kept().count()
    assert 0 < kept < 20  # both sides of the filter were seen
    assert kept == sum(1 for reply in expected.values() if reply["score"] >= 4)
