"""Workflow steps through a real worker and a fake provider: loops, limits, crashes."""

import pytest

from runner import engine
from runner.models import Record, Run, Task
from runner.spec import PipelineSpec

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def questions_until(n, max_steps=20):
    """One step: ask for a question, push it, until `questions` holds n of them."""
    return PipelineSpec.load(
        {
            "name": "questions until n",
            "steps": [
                {
                    "name": "questions",
                    "workflow": {
                        "tasks": [
                            {
                                "id": "ask",
                                "prompt": "Write a question about {{topic}}, "
                                "not one of these: {{questions}}",
                                "inputs": [
                                    {"kind": "get_all", "key": "questions", "required": False}
                                ],
                                "outputs": [{"kind": "push", "key": "questions"}],
                            }
                        ],
                        "edges": [
                            {
                                "source": "ask",
                                "target": "_end",
                                "condition": {
                                    "input": {"kind": "size", "key": "questions"},
                                    "expression": "GreaterThanOrEqual",
                                    "expected": str(n),
                                    "target_if_not": "ask",
                                },
                            }
                        ],
                        "return_value": ["questions"],
                        "max_steps": max_steps,
                    },
                }
            ],
        }
    )


def draft_critique_revise():
    return PipelineSpec.load(
        {
            "name": "draft, critique, revise",
            "steps": [
                {
                    "name": "essay",
                    "workflow": {
                        "tasks": [
                            {
                                "id": "draft",
                                "prompt": "Draft a paragraph on {{topic}}",
                                "outputs": [{"key": "draft"}],
                            },
                            {
                                "id": "critique",
                                "prompt": "Critique this draft: {{draft}}",
                                "outputs": [{"key": "critique"}],
                            },
                            {
                                "id": "revise",
                                "prompt": "Revise {{draft}} given {{critique}}",
                                "outputs": [{"key": "final"}],
                            },
                        ],
                        "return_value": ["draft", "final"],
                    },
                }
            ],
        }
    )


def test_a_loop_makes_exactly_its_bounded_number_of_calls(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner, questions_until(3), [{"topic": "Volcanoes"}, {"topic": "Tides"}],
        providers={"*": provider.pk},
    )  # fmt: skip
    wait_for(run)
    assert run.status == Run.COMPLETED
    assert fake_llm.stats()["total"] == 6  # 3 prompts for each of the 2 topics
    records = {r.data["topic"]: r.data for r in Record.objects.filter(run=run)}
    assert set(records) == {"Volcanoes", "Tides"}
    for topic, data in records.items():
        assert len(data["questions"]) == 3
        assert all(topic.lower() in q.lower() for q in data["questions"])
    task = Task.objects.get(run=run, context__topic="Tides")
    assert [c["task"] for c in task.trace] == ["ask", "ask", "ask"]
    assert [len(c["memory"]["questions"]) for c in task.trace] == [1, 2, 3]
    assert task.attempts == 3 and task.tokens_in > 0 and task.warning == ""
    # the prompt as sent, each time with what memory held then
    assert "not one of these: []" in task.trace[0]["messages"][-1]["content"]
    assert task.trace[1]["reply"] in task.trace[2]["messages"][-1]["content"]


def test_max_steps_ends_the_workflow_with_what_it_has_and_says_so(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner, questions_until(100, max_steps=4), [{"topic": "Glaciers"}],
        providers={"*": provider.pk},
    )  # fmt: skip
    wait_for(run)
    assert run.status == Run.COMPLETED
    assert fake_llm.stats()["total"] == 4
    task = Task.objects.get(run=run)
    assert task.status == Task.DONE
    assert "stopped after 4 prompts" in task.warning and "max_steps 4" in task.warning
    assert len(Record.objects.get(run=run).data["questions"]) == 4


def test_several_return_keys_land_under_their_own_names(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner, draft_critique_revise(), [{"topic": "Bees"}], providers={"*": provider.pk}
    )
    wait_for(run)
    assert run.status == Run.COMPLETED
    data = Record.objects.get(run=run).data
    assert set(data) == {"topic", "draft", "final"}
    assert "Bees" in data["draft"] and data["final"]
    task = Task.objects.get(run=run)
    assert [c["task"] for c in task.trace] == ["draft", "critique", "revise"]
    assert data["draft"] in task.trace[1]["messages"][-1]["content"]


def test_a_failing_prompt_goes_to_its_fallback_else_fails_the_task(owner, worker, fake_llm):
    fake_llm.configure(fail_for={"Critique": 400})
    provider = provider_for(owner, fake_llm)
    spec = draft_critique_revise()
    run = engine.launch_run(owner, spec, [{"topic": "Owls"}], providers={"*": provider.pk})
    wait_for(run)
    task = Task.objects.get(run=run)
    assert task.status == Task.FAILED and task.error.startswith("prompt 'critique' failed:")
    assert [c["task"] for c in task.trace] == ["draft", "critique"]

    data = spec.to_dict()
    data["steps"][0]["workflow"]["edges"] = [
        {"source": "critique", "target": "revise", "fallback": "revise"}
    ]
    data["steps"][0]["workflow"]["tasks"][2]["prompt"] = "Revise {{draft}}"
    run = engine.launch_run(
        owner, PipelineSpec.load(data), [{"topic": "Owls"}], providers={"*": provider.pk}
    )
    wait_for(run)
    task = Task.objects.get(run=run)
    assert task.status == Task.DONE
    assert [(c["task"], c["ok"]) for c in task.trace] == [
        ("draft", True),
        ("critique", False),
        ("revise", True),
    ]


def test_a_worker_killed_between_sub_calls_repeats_none_that_finished(
    owner, worker_factory, fake_llm
):
    fake_llm.configure(latency=0.3)
    provider = provider_for(owner, fake_llm, concurrency=4)
    first = worker_factory(RUNNER_HEARTBEAT_TTL=3)
    topics = [{"topic": f"Subject {i}"} for i in range(4)]
    run = engine.launch_run(owner, draft_critique_revise(), topics, providers={"*": provider.pk})
    wait_for(run, until=lambda r: fake_llm.stats()["total"] >= 6)
    first.kill()
    assert not Task.objects.filter(run=run, status="done").exists()  # every workflow mid-way
    at_kill = fake_llm.stats()["total"]
    worker_factory(RUNNER_HEARTBEAT_TTL=3)
    wait_for(run, timeout=90)
    assert run.status == Run.COMPLETED
    assert Record.objects.filter(run=run).count() == 4
    per_prompt = fake_llm.stats()["per_prompt"]
    assert len(per_prompt) == 12  # 4 workflows of 3 prompts, every prompt its own
    repeated = [p for p, n in per_prompt.items() if n > 1]
    # only calls still in flight when the worker died (at most one per workflow) are made again
    assert len(repeated) <= 4 < at_kill
    assert sum(per_prompt.values()) == 12 + len(repeated)


def test_the_task_page_shows_every_sub_call_in_order(owner, client, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner, draft_critique_revise(), [{"topic": "Kites <b>"}], providers={"*": provider.pk}
    )
    wait_for(run)
    task = Task.objects.get(run=run)
    client.force_login(owner)
    page = client.get(f"/runs/{run.code}/tasks/{task.pk}/").content.decode()
    assert "Workflow: 3 prompts in order" in page
    positions = [
        page.index(f"{n}. {name}") for n, name in enumerate(["draft", "critique", "revise"], 1)
    ]
    assert positions == sorted(positions)
    assert "Draft a paragraph on Kites &lt;b&gt;" in page and "Kites <b>" not in page
    assert "Memory after it" in page
