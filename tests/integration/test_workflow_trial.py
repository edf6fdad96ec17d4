"""Trying a workflow step on a sample runs its whole workflow and shows every sub-call."""

import pytest

from runner.engine import trial
from runner.models import Provider

from .test_workflows import draft_critique_revise, questions_until


def make_provider(owner, fake):
    p = Provider(owner=owner, name="fake", base_url=fake.url, default_model="fake-model")
    p.set_api_key("sk-test-1234")
    p.save()
    return p


@pytest.mark.django_db
def test_trying_a_loop_runs_it_to_its_end(redis_client, fake_llm, owner):
    provider = make_provider(owner, fake_llm)
    step = questions_until(3).steps[0]
    trial_id = trial.create(owner.pk, step, {"topic": "Comets"}, provider.pk)
    trial.run(trial_id)
    data = trial.get(trial_id)
    assert data["status"] == "done", data
    assert [c["task"] for c in data["trace"]] == ["ask", "ask", "ask"]
    assert len(data["parsed"]) == 3 and all("Comets" in q for q in data["parsed"])
    assert [len(c["memory"]["questions"]) for c in data["trace"]] == [1, 2, 3]
    assert fake_llm.stats()["total"] == 3


@pytest.mark.django_db
def test_a_failing_prompt_of_a_tried_workflow_says_which(redis_client, fake_llm, owner):
    fake_llm.configure(fail_for={"Critique": 400})
    provider = make_provider(owner, fake_llm)
    step = draft_critique_revise().steps[0]
    trial_id = trial.create(owner.pk, step, {"topic": "Bees"}, provider.pk)
    trial.run(trial_id)
    data = trial.get(trial_id)
    assert data["status"] == "failed"
    assert data["error"].startswith("prompt 'critique' failed:")
    assert [(c["task"], c["ok"]) for c in data["trace"]] == [("draft", True), ("critique", False)]
