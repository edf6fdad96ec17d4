"""Trying one step on one sample: runner.engine.trial against the fake LLM and a real Redis,
and the whole path (page -> Celery worker -> page polling) with a real worker."""

import html
import json
import re
import time

import pytest

from designer.actions import create_pipeline
from runner.engine import keys, trial
from runner.models import Provider
from runner.spec import CallbackSpec, StepSpec, library

HX = {"HTTP_HX_REQUEST": "true"}


def make_provider(owner, fake, name="fake", model="fake-model"):
    p = Provider(owner=owner, name=name, base_url=fake.url, default_model=model)
    p.set_api_key("sk-test-1234")
    p.save()
    return p


LIST_STEP = StepSpec(
    name="subtopics",
    prompt="List 5 distinct subtopics of {{topic}}.\nReply with a JSON list of short strings.",
    system="You are terse. The topic is {{topic}}.",
    output_format="json_list",
    output_key="subtopics",
    callback=CallbackSpec(type="scatter", item_key="subtopic"),
)


@pytest.mark.django_db
def test_a_trial_calls_the_provider_once_and_keeps_everything(redis_client, fake_llm, owner):
    provider = make_provider(owner, fake_llm)
    trial_id = trial.create(owner.pk, LIST_STEP, {"topic": "Solar energy"}, provider.pk)
    assert trial.get(trial_id)["status"] == "queued"
    trial.run(trial_id)
    data = trial.get(trial_id)
    assert data["status"] == "done", data
    assert data["messages"] == [
        {"role": "system", "content": "You are terse. The topic is Solar energy."},
        {
            "role": "user",
            "content": "List 5 distinct subtopics of Solar energy.\nReply with a JSON list of short strings.",
        },
    ]
    assert isinstance(data["parsed"], list) and len(data["parsed"]) == 5
    assert json.loads(data["raw"]) == data["parsed"]
    assert data["tokens_in"] > 0 and data["tokens_out"] > 0
    assert data["model"] == "fake-model" and data["elapsed_ms"] >= 0
    assert 0 < redis_client.ttl(keys.trial(trial_id)) <= trial.TTL
    # a second run (a redelivered message) does not call again
    trial.run(trial_id)
    assert fake_llm.stats()["total"] == 1


@pytest.mark.django_db
def test_a_reply_that_does_not_parse_is_reported(redis_client, fake_llm, owner):
    provider = make_provider(owner, fake_llm)
    fake_llm.configure(never_json_for=["Bees"])
    trial_id = trial.create(owner.pk, LIST_STEP, {"topic": "Bees"}, provider.pk)
    data = trial.run(trial_id)
    assert data["status"] == "done"
    assert data["raw"].startswith("I would rather not format this")
    assert data["parse_error"] == "reply was not a JSON list"
    assert "parsed" not in data


@pytest.mark.django_db
def test_failures_are_reported_in_words(redis_client, fake_llm, owner, other_user, settings):
    settings.RUNNER_MAX_TRANSIENT_RETRIES = 1
    settings.RUNNER_BACKOFF_BASE = 0.01
    provider = make_provider(owner, fake_llm)
    fake_llm.configure(fail_for={"boom": 401})
    step = LIST_STEP.model_copy(update={"prompt": "boom {{topic}}", "system": ""})
    data = trial.run(trial.create(owner.pk, step, {"topic": "x"}, provider.pk))
    assert data["status"] == "failed" and "401" in data["error"]
    # someone else's provider is never used
    theirs = make_provider(other_user, fake_llm, name="theirs")
    data = trial.run(trial.create(owner.pk, LIST_STEP, {"topic": "x"}, theirs.pk))
    assert data["status"] == "failed" and "no longer exists" in data["error"]
    # a value the prompt needs is missing
    data = trial.run(trial.create(owner.pk, LIST_STEP, {}, provider.pk))
    assert data["status"] == "failed" and "could not be filled in" in data["error"]
    # no model anywhere
    bare = make_provider(owner, fake_llm, name="bare", model="")
    data = trial.run(trial.create(owner.pk, LIST_STEP, {"topic": "x"}, bare.pk))
    assert data["status"] == "failed" and "no model is chosen" in data["error"]
    assert trial.run("0" * 32) is None  # expired


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_try_a_step_from_the_page_through_a_worker(client, owner, worker, fake_llm):
    provider = make_provider(owner, fake_llm)
    pipeline = create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")
    client.force_login(owner)
    spec = pipeline.spec()
    steps = list(spec.steps)
    # the draft, not the saved version, is tried; model text must come back escaped
    steps[2] = steps[2].model_copy(update={"prompt": "Answer <b>now</b>: {{question}}"})
    draft = json.dumps(spec.model_copy(update={"steps": steps}).to_dict())
    base = f"/pipelines/{pipeline.code}/edit/try/"
    r = client.post(
        base + "start/",
        {
            "try-index": 2,
            "try-var_question": "Why is the sky blue?",
            "try-provider": str(provider.code),
            "draft": draft,
        },
        **HX,
    )
    assert r.status_code == 200
    m = re.search(r'hx-get="(/pipelines/[^"]+/edit/try/(\w+)/)" hx-trigger="every 1s"', r.text)
    assert m, r.text[-3000:]
    poll, trial_id = m[1], m[2]
    deadline = time.time() + 30
    while time.time() < deadline:
        r = client.get(poll, **HX)
        if 'hx-trigger="every 1s"' not in r.text:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the trial did not finish: " + worker.output()[-3000:])
    assert 'data-status="done"' in r.text, r.text
    assert "Answer: Answer &lt;b&gt;now&lt;/b&gt;: Why is the sky blue?" in r.text
    assert "<b>now</b>" not in r.text
    assert "Prompt as sent" in r.text and "tokens in" in r.text
    assert fake_llm.stats()["total"] == 1
    # only its owner sees it, under its own pipeline
    other = create_pipeline(owner, library.get("qa-from-topics").spec, name="Other")
    assert client.get(f"/pipelines/{other.code}/edit/try/{trial_id}/").status_code == 404
    client.logout()
    from django.contrib.auth import get_user_model

    stranger = get_user_model().objects.create_user("stranger", password="stranger-pass-1")
    client.force_login(stranger)
    assert client.get(poll).status_code == 404
    assert html.unescape(r.text)  # the page text was read as HTML
