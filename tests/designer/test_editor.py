"""The designer page: palette, drafts edited over htmx, the step form's errors, saving versions."""

import html
import json
import re

import pytest

from designer.actions import create_pipeline
from runner.models import Provider
from runner.spec import PipelineSpec, library

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def client_owner(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def empty(owner):
    return create_pipeline(owner, PipelineSpec(name="Empty"), name="Empty")


@pytest.fixture
def qa(owner):
    return create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")


def url(pipeline, suffix=""):
    return f"/pipelines/{pipeline.code}/edit/{suffix}"


def draft_of(response):
    m = re.search(r'<input type="hidden" id="draft" name="draft" value="([^"]*)"', response.text)
    assert m, response.text[:2000]
    return json.loads(html.unescape(m[1]))


def field_block(response, name):
    """The HTML of the step form's field `name` (label, input, its errors)."""
    m = re.search(
        rf'<div class="field[^"]*" data-field="{name}"[^>]*>(.*?)</div>', response.text, re.S
    )
    assert m, f"no field {name}"
    return html.unescape(m[1])


def step_post(draft, index, **fields):
    step = draft["steps"][index]
    data = {
        "step-index": index,
        "step-name": step["name"],
        "step-prompt": step["prompt"],
        "step-system": step["system"],
        "step-provider": step["model"]["provider"],
        "step-model": step["model"]["name"],
        "step-temperature": step["params"]["temperature"] or "",
        "step-max_tokens": step["params"]["max_tokens"] or "",
        "step-output_format": step["output_format"],
        "step-schema_fields": "",
        "step-output_key": step["output_key"],
        "step-callback": step["callback"]["type"],
        "step-n": step["callback"]["n"] or "",
        "step-item_key": step["callback"]["item_key"] or "",
        "step-into": step["callback"]["into"] or "",
        "step-group_by": step["callback"]["group_by"] or "",
        "step-delimiter": step["callback"]["delimiter"] or "",
        "step-field": step["callback"]["field"] or "",
        "draft": json.dumps(draft),
    }
    data.update({f"step-{k}": v for k, v in fields.items()})
    return data


def test_page_shows_palette_steps_and_arrows(client_owner, qa):
    r = client_owner.get(url(qa))
    assert r.status_code == 200
    for title in (
        "Generate text",
        "Generate a list and fan it out",
        "Generate n variants",
        "Combine all results",
        "Transform",
    ):
        assert title in r.text
    # one card per step with its name, prompt start, model and fan
    assert r.text.count('class="step-card') == 3
    assert "List 5 distinct subtopics of the topic below" in r.text
    assert "1 → N" in r.text and "1 → 1" in r.text
    assert "default model (chosen at launch)" in r.text
    assert r.text.count('class="arrow"') == 2  # between the three steps
    assert "every item of each list becomes its own task" in r.text
    assert 'data-dirty="false"' in r.text
    assert "sortablejs-1.15.7/Sortable.min.js" in r.text
    assert "<script>" not in r.text and " style=" not in r.text


def test_add_move_and_remove_steps_edit_the_draft_only(client_owner, empty):
    r = client_owner.post(url(empty, "add/"), {"kind": "list", "draft": ""} | {}, **HX)
    assert r.status_code == 400  # a draft that is not a spec is refused
    draft = draft_of(client_owner.get(url(empty)))
    r = client_owner.post(url(empty, "add/"), {"kind": "list", "draft": json.dumps(draft)}, **HX)
    assert r.status_code == 200
    draft = draft_of(r)
    assert [s["callback"]["type"] for s in draft["steps"]] == ["scatter"]
    assert draft["steps"][0]["output_format"] == "json_list"
    assert 'id="step-form"' in r.text  # the new step's form opens
    assert 'data-dirty="true"' in r.text
    r = client_owner.post(
        url(empty, "add/"), {"kind": "text", "index": 1, "draft": json.dumps(draft)}, **HX
    )
    draft = draft_of(r)
    r = client_owner.post(
        url(empty, "add/"), {"kind": "combine", "index": 0, "draft": json.dumps(draft)}, **HX
    )
    draft = draft_of(r)
    assert [s["name"] for s in draft["steps"]] == ["combine", "list", "text"]
    # the second step reads the first one's item
    assert "{{item}}" in draft["steps"][2]["prompt"]
    r = client_owner.post(
        url(empty, "move/"), {"from": 0, "to": 2, "draft": json.dumps(draft)}, **HX
    )
    draft = draft_of(r)
    assert [s["name"] for s in draft["steps"]] == ["list", "text", "combine"]
    r = client_owner.post(url(empty, "remove/"), {"index": 1, "draft": json.dumps(draft)}, **HX)
    draft = draft_of(r)
    assert [s["name"] for s in draft["steps"]] == ["list", "combine"]
    assert "Removed the step “text”" in r.text
    r = client_owner.post(url(empty, "remove/"), {"index": 7, "draft": json.dumps(draft)}, **HX)
    assert r.status_code == 400
    assert empty.versions.count() == 1  # nothing saved yet


def test_unknown_variable_is_shown_beside_the_prompt(client_owner, qa):
    draft = draft_of(client_owner.get(url(qa)))
    data = step_post(draft, 2, prompt="Answer this: {{questoin}}")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert r.status_code == 200
    prompt = field_block(r, "prompt")
    assert "“{{questoin}}” is not made by any step before this one." in prompt
    assert "You can use: {{question}}, {{subtopic}}, {{topic}}." in prompt
    assert "questoin" not in field_block(r, "name")
    # the card says so too, and the draft holds the change (nothing is lost)
    assert draft_of(r)["steps"][2]["prompt"] == "Answer this: {{questoin}}"
    assert 'class="step-card has-problems' in r.text
    # the chips offer what is available to this step
    assert re.findall(r'class="chip" data-insert="(\w+)"', r.text) == [
        "question",
        "subtopic",
        "topic",
    ]


def test_step_form_errors_in_plain_words_keep_the_draft(client_owner, qa):
    draft = draft_of(client_owner.get(url(qa)))
    data = step_post(draft, 1, temperature="5", name="", output_key="the question")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert r.status_code == 200
    assert "The temperature is between 0 and 2." in field_block(r, "temperature")
    assert "Give the step a short name" in field_block(r, "name")
    assert draft_of(r) == draft  # not applied
    data = step_post(draft, 1, output_key="the question")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert "A result name starts with a letter" in field_block(r, "output_key")
    data = step_post(draft, 2, output_key="subtopics")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert "Step 1 already stores its result as “subtopics”" in field_block(r, "output_key")
    data = step_post(draft, 0, callback="default", output_format="text")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    # the next step now uses {{subtopic}}, which nothing makes: that card shows it
    assert "“{{subtopic}}” is not made by any step before this one." in r.text
    data = step_post(draft, 1, callback="broadcast", n="")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert "Say how many copies" in field_block(r, "n")
    data = step_post(draft, 1, callback="scatter", item_key="")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert "set the output format to “JSON list”" in field_block(r, "callback")
    data = step_post(draft, 1, prompt="About {{ subtopic ")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert "has a mistake in a {{ }} placeholder" in field_block(r, "prompt")


def test_json_object_fields_make_a_schema(client_owner, qa):
    draft = draft_of(client_owner.get(url(qa)))
    data = step_post(draft, 2, output_format="json_object", schema_fields="")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert "Name at least one field" in field_block(r, "schema_fields")
    data = step_post(draft, 2, output_format="json_object", schema_fields="answer, source")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    step = draft_of(r)["steps"][2]
    assert step["output_format"] == "json_object"
    assert step["output_schema"] == {
        "type": "object",
        "properties": {"answer": {}, "source": {}},
        "required": ["answer", "source"],
    }
    assert "Applied." in r.text


def test_provider_choices_are_the_owners(client_owner, qa, owner, other_user):
    Provider.objects.create(owner=owner, name="mine", base_url="http://127.0.0.1:9/v1")
    Provider.objects.create(owner=other_user, name="theirs", base_url="http://127.0.0.1:9/v1")
    draft = draft_of(client_owner.get(url(qa)))
    r = client_owner.post(url(qa, "step/"), {"index": 0, "draft": json.dumps(draft)}, **HX)
    assert '<option value="mine">' in r.text and "theirs" not in r.text
    data = step_post(draft, 0, provider="mine", model="small-model", max_tokens="300")
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    step = draft_of(r)["steps"][0]
    assert (step["model"]["provider"], step["model"]["name"]) == ("mine", "small-model")
    assert step["params"]["max_tokens"] == 300
    assert "small-model (mine)" in r.text


def test_save_makes_a_version_only_when_something_changed(client_owner, qa):
    draft = draft_of(client_owner.get(url(qa)))
    r = client_owner.post(url(qa, "save/"), {"draft": json.dumps(draft)}, **HX)
    assert "No changes since version 1." in r.text
    assert qa.versions.count() == 1
    draft["steps"][2]["prompt"] = "Answer briefly: {{question}}"
    r = client_owner.post(url(qa, "save/"), {"draft": json.dumps(draft)}, **HX)
    assert "Saved as version 2." in r.text
    assert 'data-dirty="false"' in r.text
    assert qa.versions.count() == 2
    assert qa.spec().steps[2].prompt == "Answer briefly: {{question}}"
    r = client_owner.post(url(qa, "save/"), {"draft": json.dumps(draft)}, **HX)
    assert "No changes since version 2." in r.text and qa.versions.count() == 2
    # the open step form is applied by Save
    data = step_post(draft, 1, name="ask")
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Saved as version 3." in r.text
    assert [s.name for s in qa.spec().steps] == ["subtopics", "ask", "answer"]
    # a step form with mistakes stops the save
    data = step_post(draft_of(r), 1, temperature="9")
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Not saved" in r.text and qa.versions.count() == 3


def test_save_keeps_work_in_progress_and_says_what_blocks_launch(client_owner, qa):
    draft = draft_of(client_owner.get(url(qa)))
    draft["steps"][2]["prompt"] = "{{nope}}"
    r = client_owner.post(url(qa, "save/"), {"draft": json.dumps(draft)}, **HX)
    assert "Saved as version 2. Fix the problems shown before launching it." in r.text
    assert "“{{nope}}” is not made by any step before this one." in r.text
    r = client_owner.post(url(qa, "save/"), {"draft": json.dumps({"steps": [{}]})}, **HX)
    assert r.status_code == 400 and qa.versions.count() == 2


def test_try_form_asks_for_the_steps_variables(client_owner, qa, owner):
    Provider.objects.create(owner=owner, name="mine", base_url="http://127.0.0.1:9/v1")
    draft = draft_of(client_owner.get(url(qa)))
    r = client_owner.post(url(qa, "try/"), {"index": 1, "draft": json.dumps(draft)}, **HX)
    assert r.status_code == 200
    assert 'name="try-var_subtopic"' in r.text and 'name="try-var_topic"' in r.text
    r = client_owner.post(
        url(qa, "try/start/"),
        {"try-index": 1, "try-var_topic": "Bees", "draft": json.dumps(draft)},
        **HX,
    )
    assert "Give a sample value for {{subtopic}}." in html.unescape(r.text)
    assert "Choose the provider to call." in r.text


def test_anonymous_visitors_are_sent_to_log_in(client, qa):
    r = client.get(url(qa))
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]
    r = client.post(url(qa, "save/"), {"draft": "{}"})
    assert r.status_code == 302 and "/accounts/login/" in r["Location"]


def test_another_users_pipeline_is_404_on_every_editor_url(client, qa, other_user):
    client.force_login(other_user)
    draft = json.dumps(qa.spec().to_dict())
    assert client.get(url(qa)).status_code == 404
    assert client.get(url(qa, "try/" + "a" * 32 + "/")).status_code == 404
    for suffix, data in [
        ("add/", {"kind": "text"}),
        ("move/", {"from": 0, "to": 1}),
        ("remove/", {"index": 0}),
        ("save/", {}),
        ("step/", {"index": 0}),
        ("step/apply/", {"step-index": 0}),
        ("try/", {"index": 0}),
        ("try/start/", {"try-index": 0}),
    ]:
        r = client.post(url(qa, suffix), {**data, "draft": draft}, **HX)
        assert r.status_code == 404, suffix
    assert qa.versions.count() == 1


def test_trial_that_expired_or_cannot_be_queued(client_owner, qa, owner, redis_client, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from runner.engine import trial

    r = client_owner.get(url(qa, "try/" + "0" * 32 + "/"), **HX)
    assert r.status_code == 200 and "no longer kept" in r.text
    assert 'hx-trigger="every 1s"' not in r.text
    provider = Provider.objects.create(owner=owner, name="mine", base_url="http://127.0.0.1:9/v1")

    def down(*args, **kwargs):
        raise RedisConnectionError("refused")

    monkeypatch.setattr(trial, "start", down)
    draft = draft_of(client_owner.get(url(qa)))
    r = client_owner.post(
        url(qa, "try/start/"),
        {
            "try-index": 0,
            "try-var_topic": "Bees",
            "try-provider": str(provider.code),
            "draft": json.dumps(draft),
        },
        **HX,
    )
    assert r.status_code == 200
    assert "The workers&#x27; queue (Redis) cannot be reached right now" in r.text
