"""Quality while the run goes: duplicates set aside before the next step pays for them,
shared by two worker processes; a judge's scores on the records and a filter on them."""

import json

import pytest
from django.core.management import call_command

from runner import engine, export
from runner.events.stats import run_summary
from runner.models import Record, Run, Task
from runner.spec import PipelineSpec, library
from runner.spec.quality import distinct_n, normalized
from tests.fakes.openai_server import embedding_of, schema_value

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
    owner, worker_factory, fake_llm, tmp_path
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

    # The summary says what the duplicate check found and what it saved: one answer each.
    measured = run_summary(run)["quality"]
    exact = sum(r.flag == Record.DUPLICATE for r in aside)
    assert measured["dedup"] == [
        {
            "step": "questions",
            "field": "question",
            "duplicates": exact,
            "near_duplicates": len(aside) - exact,
            "calls_saved": len(aside),
        }
    ]
    question = measured["fields"]["question"]
    texts = [r.data["question"] for r in kept]
    assert question["records"] == KINDS and question["duplicates"] == 0
    assert question["distinct_1"] == distinct_n(texts, 1)
    assert question["set_aside"] == {"duplicates": exact, "near_duplicates": len(aside) - exact}

    # Exports leave what was set aside out, unless asked; then _meta says why.
    assert export.Export(run, export.Options()).count() == KINDS
    out = tmp_path / "all.jsonl"
    call_command("exportrun", str(run.code), "--output", str(out), "--set-aside")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 * 6
    marks = {r["_meta"]["record"]: r["_meta"] for r in rows}
    for r in aside:
        assert marks[r.key]["set_aside"] == r.flag
        assert marks[r.key]["set_aside_because"] == r.flag_reason
    assert sum(m["set_aside"] is None for m in marks.values()) == KINDS


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

    judges = run_summary(run)["quality"]["judges"]
    scores = [reply["score"] for reply in expected.values()]
    assert judges["score"] == {
        "step": "judge",
        "judged": 20,
        "passed": kept,
        "filtered": 20 - kept,
        "mean": round(sum(scores) / len(scores), 2),  # of everything judged
    }
    verdicts = [reply["verdict"] for reply in expected.values()]
    assert judges["verdict"]["pass_rate"] == round(verdicts.count("pass") / len(verdicts), 4)


def test_preference_pairs_export_one_row_per_judged_question(owner, worker, fake_llm, tmp_path):
    fake_llm.configure(follow_schema=True)
    provider = provider_for(owner, fake_llm)
    spec = library.get("preference-pairs").spec
    run = engine.launch_run(owner, spec, spec.inputs, providers={"*": provider.pk})
    wait_for(run, timeout=90)
    assert run.status == Run.COMPLETED, run.error

    records = {r.data["question"]: r.data for r in Record.objects.filter(run=run).kept()}
    assert len(records) == 8  # 2 topics x 4 subtopics, one question each
    options = export.Options(
        shape="preference",
        prompt_field=export.default_chat_fields(run)[0],
        choose=export.default_choose(run),
    )
    assert options.choose == "judge"
    out = tmp_path / "pairs.jsonl"
    assert export.Export(run, options).write(out) == 8
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    judge = spec.steps[-1].judge
    schema = spec.steps[-1].output_schema
    for row in rows:
        data = records[row["prompt"]]
        assert row["chosen"] != row["rejected"]
        assert {row["chosen"], row["rejected"]} == {data["response_a"], data["response_b"]}
        task = Task.objects.get(run=run, step=4, context__question=row["prompt"])
        reply = schema_value(schema, task.messages[-1]["content"])  # what the fake judged
        win, lose = ("a", "b") if reply["better"] == "A" else ("b", "a")
        assert row["chosen"] == data[f"response_{win}"]
        means = [
            sum(reply[side][c.key] for c in judge.criteria) / len(judge.criteria)
            for side in (win, lose)
        ]
        assert [row["score_chosen"], row["score_rejected"]] == [round(m, 2) for m in means]
        assert row["_meta"]["rationale"] == reply["rationale"]

    # The chat export takes the chosen answers.
    prompt, answer = export.default_chat_fields(run)
    assert answer == "chosen"
    chat = tmp_path / "sft.jsonl"
    export.Export(
        run, export.Options(shape="chat", prompt_field=prompt, answer_field=answer)
    ).write(chat)
    chosen = {json.loads(line)["messages"][1]["content"] for line in chat.read_text().splitlines()}
    assert chosen == {row["chosen"] for row in rows}

    # The dataset card says how the pairs were chosen and what the judge found.
    card = export.Export(run, options).card()
    assert "picked by the pipeline's judge step" in card
    assert "| helpfulness_a (judge) |" in card and "| question |" in card


def test_embedding_diversity_of_each_field_from_the_providers_embeddings_model(
    owner, worker, fake_llm
):
    provider = provider_for(owner, fake_llm)
    provider.embedding_model = "fake-embed"
    provider.save()
    spec = PipelineSpec.load(
        {
            "name": "Answers",
            "steps": [
                {"name": "answer", "prompt": "Answer this: {{topic}}", "output_key": "answer"}
            ],
        }
    )
    topics = [{"topic": t} for t in ["red apples", "red apples", "green pears", "blue sea"]]
    run = engine.launch_run(owner, spec, topics, providers={"*": provider.pk})
    wait_for(run, timeout=60)
    assert run.status == Run.COMPLETED, run.error

    measured = run_summary(run)["quality"]
    assert measured["embeddings"] == {"model": "fake-embed", "provider": provider.name, "texts": 8}
    assert fake_llm.stats()["embedded"] == 2  # one request a field
    for key in ("topic", "answer"):
        texts = [r.data[key] for r in Record.objects.filter(run=run)]
        vectors = [embedding_of(t) for t in texts]
        pairs = [(a, b) for i, a in enumerate(vectors) for j, b in enumerate(vectors) if i != j]
        similarity = sum(sum(x * y for x, y in zip(a, b, strict=True)) for a, b in pairs)
        expected = 1 - similarity / len(pairs)
        assert measured["fields"][key]["embedding_diversity"] == pytest.approx(expected, abs=1e-4)
    # Two of the four topics are the same words: some diversity, not none and not all.
    assert 0 < measured["fields"]["topic"]["embedding_diversity"] < 1
