"""The built-in templates whose steps are workflows, end to end: a real worker, the fake server.

What a user checks after a run: it completed, it made the calls the launch page
estimated, and the records hold what the template promises.
"""

import pytest

from runner import engine
from runner.export.formats import Export, Options
from runner.models import Record, Run, Task
from runner.spec import PipelineSpec, library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

WORKFLOW_TEMPLATES = [
    "multi-turn-dialogue",
    "questions-until-n",
    "draft-critique-revise",
    "evol-instruct",
    "persona-backstory",
    "nvidia-preference",
]


def run_template(owner, fake_llm, slug):
    """Launch a template on its example inputs; (run, estimate, records in seq order)."""
    provider = provider_for(owner, fake_llm)
    spec = library.get(slug).spec
    providers = {"*": provider.pk}
    est = engine.estimate_run(owner, spec, spec.inputs, providers=providers)
    run = engine.launch_run(owner, spec, spec.inputs, providers=providers)
    wait_for(run, timeout=90)
    assert run.status == Run.COMPLETED, run.error
    assert fake_llm.stats()["total"] == est.calls  # every call the estimate counted, no more
    made = [Task.objects.filter(run=run, step=i).count() for i in range(len(spec.steps))]
    assert made == [s.calls // s.prompts for s in est.steps]
    assert not Task.objects.filter(run=run).exclude(warning="").exists()  # no limit was hit
    return run, est, list(Record.objects.filter(run=run).order_by("seq"))


def test_every_workflow_template_is_in_the_gallery_and_loads():
    slugs = library.slugs()
    for slug in WORKFLOW_TEMPLATES:
        assert slug in slugs
        t = library.get(slug)
        assert any(s.workflow is not None for s in t.spec.steps)
        assert "prompt" in t.shape and t.purpose
        PipelineSpec.load(t.spec.to_dict())  # the checks any saved spec passes


def test_multi_turn_dialogue(owner, worker, fake_llm):
    run, est, records = run_template(owner, fake_llm, "multi-turn-dialogue")
    turns = 2 * library.DIALOGUE_EXCHANGES
    assert est.calls == turns * len(records) and len(records) == 2
    for rec in records:
        assert set(rec.data) == {"topic", "dialogue"}
        assert len(rec.data["dialogue"]) == turns
        assert rec.data["dialogue"][0].endswith("?")  # the user opens with a question
    task = Task.objects.filter(run=run).first()
    assert [c["task"] for c in task.trace] == ["user", "assistant"] * library.DIALOGUE_EXCHANGES
    # every turn sees the conversation so far, labelled
    last_prompt = task.trace[-1]["messages"][-1]["content"]
    assert "User: " + task.trace[0]["reply"] in last_prompt
    assert "Assistant: " + task.trace[1]["reply"] in last_prompt


def test_questions_until_n_then_answers(owner, worker, fake_llm):
    run, est, records = run_template(owner, fake_llm, "questions-until-n")
    n = library.QUESTIONS
    assert len(records) == 2 * n and est.calls == 2 * (n + n)
    for topic in ("Volcanoes", "Honey bees"):
        mine = [r.data for r in records if r.data["topic"] == topic]
        assert len(mine) == n
        questions = [d["question"] for d in mine]
        assert len(set(questions)) == n  # each a new one
        assert all(topic.lower() in q.lower() and q.endswith("?") for q in questions)
        assert all(set(d) == {"topic", "question", "answer"} and d["answer"] for d in mine)
    # each new question was asked with the ones already in memory
    task = Task.objects.get(run=run, step=0, context__topic="Volcanoes")
    assert task.trace[0]["reply"] in task.trace[2]["messages"][-1]["content"]


def test_draft_critique_revise(owner, worker, fake_llm):
    run, est, records = run_template(owner, fake_llm, "draft-critique-revise")
    assert len(records) == 2 and est.calls == 6
    for rec in records:
        assert set(rec.data) == {"topic", "draft", "critique", "revision"}
        assert all(rec.data[k] for k in ("draft", "critique", "revision"))
    task = Task.objects.filter(run=run).first()
    assert [c["task"] for c in task.trace] == ["draft", "critique", "revise"]
    revise_prompt = task.trace[2]["messages"][-1]["content"]
    assert task.trace[0]["reply"] in revise_prompt and task.trace[1]["reply"] in revise_prompt


def test_evol_instruct(owner, worker, fake_llm):
    run, est, records = run_template(owner, fake_llm, "evol-instruct")
    k = library.EVOL_ROUNDS
    assert len(records) == 2 and est.calls == 2 * (k + 1)
    for rec in records:
        assert set(rec.data) == {"instruction", "versions", "response"}
        versions = rec.data["versions"]
        assert len(versions) == k and len(set(versions)) == k
    task = Task.objects.get(run=run, step=0, context__instruction="Explain recursion")
    assert [c["task"] for c in task.trace] == ["evolve"] + ["evolve_again"] * (k - 1)
    assert "Instruction: Explain recursion" in task.trace[0]["messages"][-1]["content"]
    for before, after in zip(task.trace, task.trace[1:], strict=False):
        # each round rewrites the version the one before wrote (Peek -1)
        assert f"Instruction: {before['reply']}" in after["messages"][-1]["content"]
    answered = Task.objects.get(run=run, step=1, parent=task)
    assert task.parsed[-1] in answered.messages[-1]["content"]


def test_persona_backstory(owner, worker, fake_llm):
    run, est, records = run_template(owner, fake_llm, "persona-backstory")
    assert len(records) == 2 and est.calls == 4
    for rec in records:
        assert set(rec.data) == {"domain", "persona", "backstory"}
        trace = Task.objects.get(pk=rec.lineage()[0]).trace
        assert [c["task"] for c in trace] == ["persona", "backstory"]
        assert rec.data["persona"] in trace[1]["messages"][-1]["content"]  # the backstory reads it


def test_nvidia_preference(owner, worker, fake_llm):
    run, est, records = run_template(owner, fake_llm, "nvidia-preference")
    # 1 topic -> 3 subtopics -> 2 questions each -> 2 responses each
    assert [s.made for s in est.steps] == [3, 6, 12] and est.calls == 1 + 3 + 6 * 2
    assert len(records) == 12
    subtopics = {r.data["subtopic"] for r in records}
    assert len(subtopics) == 3 and all("," not in s and s for s in subtopics)
    questions = [r.data["question"] for r in records]
    assert len(set(questions)) == 6 and all("\n" not in q for q in questions)
    for rec in records:
        assert set(rec.data) == {"topic", "subtopic", "question", "response"}
    # the two responses of a question are adjacent records, and different
    for a, b in zip(records[::2], records[1::2], strict=True):
        assert a.data["question"] == b.data["question"]
        assert a.data["response"] != b.data["response"]
    export = Export(
        run,
        Options(
            shape="preference", prompt_field="question", answer_field="response", choose="first"
        ),
    )
    rows = list(export.rows())
    assert len(rows) == 6 and export.skipped == 0
    assert {r["prompt"] for r in rows} == set(questions)
    assert all(r["chosen"] != r["rejected"] for r in rows)
