"""A step made of several prompts, edited in the designer's step form (no code)."""

import html
import json
import re
from html.parser import HTMLParser

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from designer.actions import create_pipeline
from designer.models import Pipeline
from runner.engine import trial
from runner.spec import PipelineSpec
from runner.spec.workflow import WorkflowSpec

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
QUESTION_PROMPT = "Write a question about {{topic}}, not one of these: {{questions}}"


@pytest.fixture
def client_owner(client, owner):
    client.force_login(owner)
    return client


def url(pipeline, suffix=""):
    return f"/pipelines/{pipeline.code}/edit/{suffix}"


def draft_of(response):
    m = re.search(r'<input type="hidden" id="draft" name="draft" value="([^"]*)"', response.text)
    assert m, response.text[:2000]
    return json.loads(html.unescape(m[1]))


class FormFields(HTMLParser):
    """The (name, value) pairs a browser posts for #step-form, in page order."""

    def __init__(self):
        super().__init__()
        self.fields, self.in_form, self.in_template = [], 0, 0
        self.textarea = self.select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == "step-form":
            self.in_form = 1
        if not self.in_form:
            return
        if tag == "template":
            self.in_template += 1
        if self.in_template:
            return
        if tag == "input" and a.get("name") and a.get("type") != "checkbox":
            self.fields.append((a["name"], a.get("value") or ""))
        elif tag == "input" and a.get("name") and "checked" in a:  # a ticked checkbox
            self.fields.append((a["name"], a.get("value") or "on"))
        elif tag == "textarea":
            self.textarea = [a["name"], ""]
        elif tag == "select":
            self.select = a["name"]
        elif tag == "option" and self.select and "selected" in a:
            self.fields.append((self.select, a.get("value", "")))

    def handle_data(self, data):
        if self.textarea is not None:
            self.textarea[1] += data

    def handle_endtag(self, tag):
        if tag == "template" and self.in_template:
            self.in_template -= 1
        elif tag == "textarea" and self.textarea is not None:
            name, value = self.textarea
            # a browser drops the one newline right after <textarea>
            self.fields.append((name, value[1:] if value.startswith("\n") else value))
            self.textarea = None
        elif tag == "select":
            self.select = None
        elif tag == "form" and self.in_form:
            self.in_form = 0


def posted(response, **changes):
    """What the page's step form posts: a dict of lists (every repeated name in order)."""
    parser = FormFields()
    parser.feed(response.text)
    data = {}
    for name, value in parser.fields:
        data.setdefault(name, []).append(value)
    data.update({k: v if isinstance(v, list) else [v] for k, v in changes.items()})
    data["draft"] = [json.dumps(draft_of(response))]
    return data


def questions_until_3():
    return WorkflowSpec.model_validate(
        {
            "tasks": [
                {
                    "id": "ask",
                    "prompt": QUESTION_PROMPT,
                    "inputs": [{"kind": "get_all", "key": "questions", "required": False}],
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
                        "expected": "3",
                        "target_if_not": "ask",
                    },
                }
            ],
            "return_value": ["questions"],
            "max_steps": 20,
        }
    )


def essay_spec():
    """Draft, critique, revise; the critique falls back to the check when it fails,
    and a review either ends early or goes on (a condition the form has no control for)."""
    return {
        "name": "Essays",
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
                            "system": "You are a strict editor.",
                            "outputs": [{"key": "critique"}],
                        },
                        {
                            "id": "revise",
                            "prompt": "Revise {{draft}} given {{critique}}",
                            "outputs": [{"key": "final"}, {"kind": "push", "key": "versions"}],
                        },
                        {
                            "id": "check",
                            "prompt": "Is {{final}} good? Say DONE or AGAIN.",
                            "output_format": "text",
                            "outputs": [{"key": "verdict"}],
                        },
                    ],  # fmt: skip
                    "edges": [
                        {"source": "critique", "target": "revise", "fallback": "check"},
                        {
                            "source": "check",
                            "target": "_end",
                            "condition": {
                                "input": {"kind": "read", "key": "verdict"},
                                "expression": "Equal",
                                "expected": "DONE",
                                "target_if_not": "critique",
                            },
                        },
                    ],
                    "return_value": ["draft", "final"],
                    "max_steps": 12,
                    "max_tokens": 500,
                },
            }
        ],
    }


def add_step(client, pipeline):
    r = client.post(
        url(pipeline, "add/"),
        {"kind": "text", "draft": json.dumps(pipeline.spec().to_dict())},
        **HX,
    )
    assert r.status_code == 200
    return r


def test_questions_until_3_built_with_form_controls_saves_the_workflow(client_owner, owner):
    pipeline = create_pipeline(owner, PipelineSpec(name="Questions"), name="Questions")
    r = add_step(client_owner, pipeline)
    assert 'name="step-mode"' in r.text and "Several prompts (a workflow)" in r.text
    assert re.search(r'<section id="workflow"[^>]* hidden>', r.text)  # one prompt for now
    data = posted(
        r,
        **{
            "step-name": "questions",
            "step-mode": "workflow",
            "wf-id": "ask",
            "wf-prompt": QUESTION_PROMPT,
            "wf-key": "questions",
            "wf-kind": "push",
            "wf-repeat_key": "questions",
            "wf-repeat_n": "3",
            "wf-return": "questions",
        },
    )
    r = client_owner.post(url(pipeline, "save/"), data, **HX)
    assert "Saved as version 2." in r.text, r.text[:3000]
    spec = pipeline.spec()
    step = spec.steps[0]
    assert step.workflow == questions_until_3()
    assert step.prompt == "" and step.output_key == "questions"
    assert step.output_format == "json_list"
    assert spec.problems() == [] and spec.first_step_keys() == ["topic"]

    # reloaded, the page shows the workflow, and the card its shape
    r = client_owner.get(url(pipeline))
    card = re.search(r'<li class="step-card.*?</li>', r.text, re.S)[0]
    assert "1 prompt, loops up to 20 prompts in all" in card
    assert ">3 calls per input<" in card
    r = client_owner.post(url(pipeline, "step/"), {"index": 0, "draft": json.dumps(spec.to_dict())}, **HX)  # fmt: skip
    assert not re.search(r'<section id="workflow"[^>]* hidden>', r.text)
    assert '<option value="workflow" selected>' in r.text
    text = html.unescape(r.text)
    assert 'name="wf-repeat_key" class="wf-repeat-key" maxlength="64" value="questions"' in text
    assert "Reads <code" in text and "(add to a list)" in text
    # posted back as the page shows it, nothing changes
    r = client_owner.post(url(pipeline, "save/"), posted(r), **HX)
    assert "No changes since version 2." in r.text


def test_an_imported_workflow_round_trips_with_edges_the_form_cannot_show(client_owner):
    upload = SimpleUploadedFile("essays.json", json.dumps(essay_spec()).encode())
    r = client_owner.post("/pipelines/import/", {"file": upload})
    assert r.status_code in (200, 302), r.content[:2000]
    pipeline = Pipeline.objects.get(name="Essays (imported)")
    original = pipeline.spec().steps[0].workflow
    assert original.max_tokens == 500

    draft = json.dumps(pipeline.spec().to_dict())
    r = client_owner.post(url(pipeline, "step/"), {"index": 0, "draft": draft}, **HX)
    text = html.unescape(r.text)
    assert [v for v in re.findall(r'name="wf-id" class="wf-id" maxlength="64" value="(\w+)"', text)] == [
        "draft", "critique", "revise", "check"
    ]  # fmt: skip
    assert (
        "Other edges (kept as they are): then goes to “revise”; if it fails, goes to “check”."
        in text
    )
    assert "goes to “_end” when verdict is “DONE”, otherwise to “critique”" in text

    # saved as posted: the same workflow, edges and limits included
    r = client_owner.post(url(pipeline, "save/"), posted(r), **HX)
    assert "No changes since version 1." in r.text, r.text[:3000]
    r = client_owner.post(url(pipeline, "save/"), posted(r, **{"step-name": "essay 2"}), **HX)
    assert "Saved as version 2." in r.text
    assert pipeline.spec().steps[0].workflow == original
    card = re.search(r'<li class="step-card.*?</li>', r.text, re.S)[0]
    assert "4 prompts, loops up to 12 prompts in all" in card and "up to 12 calls per input" in card

    # reordered (as after dragging), the rows post in their new order
    data = posted(r)
    order = [1, 0, 2, 3]
    for name in [k for k in data if k.startswith("wf-") and len(data[k]) == 4]:
        data[name] = [data[name][i] for i in order]
    client_owner.post(url(pipeline, "step/apply/"), data, **HX)
    r = client_owner.post(url(pipeline, "save/"), data, **HX)
    moved = pipeline.spec().steps[0].workflow
    assert [t.id for t in moved.tasks] == ["critique", "draft", "revise", "check"]
    assert moved.edges == original.edges  # the kept edges name their prompts, not places


def test_workflow_problems_show_in_a_box_above_the_prompts(client_owner, owner):
    pipeline = create_pipeline(owner, PipelineSpec(name="P"), name="P")
    r = add_step(client_owner, pipeline)
    base = {"step-mode": "workflow", "wf-id": "ask", "wf-prompt": "Tell me about {{topic}}",
            "wf-key": "answer", "wf-kind": "write"}  # fmt: skip
    r = client_owner.post(url(pipeline, "step/apply/"), posted(r, **base, **{"wf-return": "nothing_here"}), **HX)  # fmt: skip
    box = re.search(r'<div class="wf-problems error-box".*?</div>', r.text, re.S)
    assert box, r.text[:3000]
    assert "The return value &#x27;nothing_here&#x27; is never written by a prompt" in box[0]
    form_top = r.text.split('<form id="step-form"')[1].split('<section id="workflow"')[0]
    assert "never written" not in form_top  # shown once, in the box
    assert "never written" in re.search(r'<li class="step-card.*?</li>', r.text, re.S)[0]

    # what the controls cannot make stops the apply, in plain words
    r = client_owner.post(
        url(pipeline, "step/apply/"),
        posted(r, **base, **{"wf-return": "answer", "wf-repeat_key": "answer",
                             "wf-repeat_n": "2", "wf-goto": "_end", "wf-goto_text": "x"}),
        **HX,
    )  # fmt: skip
    box = re.search(r'<div class="wf-problems error-box".*?</div>', r.text, re.S)[0]
    assert "Not applied" in box and "Prompt 1: choose one way on" in box
    r = client_owner.post(
        url(pipeline, "step/apply/"),
        posted(r, **{**base, "wf-return": [], "wf-prompt": " ", "wf-max_steps": "0"}),
        **HX,
    )
    box = html.unescape(re.search(r'<div class="wf-problems error-box".*?</div>', r.text, re.S)[0])
    assert "Prompt 1: write what the model should do." in box
    assert "Choose what the step returns" in box and "is a number from 1 to 500" in box


def test_a_go_to_control_makes_a_branch_and_reads_back(client_owner, owner):
    pipeline = create_pipeline(owner, PipelineSpec(name="B"), name="B")
    r = add_step(client_owner, pipeline)
    data = posted(
        r,
        **{
            "step-mode": "workflow",
            "wf-id": ["judge", "fix", "done"],
            "wf-prompt": [
                "Is {{topic}} spelled right? Say OK or WRONG.",
                "Fix {{topic}}",
                "Use {{topic}}",
            ],  # fmt: skip
            "wf-system": ["", "", ""],
            "wf-format": ["text", "text", "text"],
            "wf-key": ["verdict", "fixed", "used"],
            "wf-kind": ["write", "write", "write"],
            "wf-repeat_key": ["", "", ""],
            "wf-repeat_n": ["", "", ""],
            "wf-goto": ["done", "", ""],
            "wf-goto_text": ["OK", "", ""],
            "wf-extra": ["", "", ""],
            "wf-return": ["used", "verdict"],
        },
    )
    r = client_owner.post(url(pipeline, "save/"), data, **HX)
    wf = pipeline.spec().steps[0].workflow
    edge = wf.edges[0]
    assert (edge.source, edge.target, edge.condition.target_if_not) == ("judge", "done", "fix")
    assert (edge.condition.expression, edge.condition.input.key, edge.condition.expected) == (
        "Contains", "verdict", "OK"
    )  # fmt: skip
    assert wf.return_value == ["used", "verdict"]
    assert pipeline.spec().steps[0].output_key == "used"
    r = client_owner.post(url(pipeline, "step/"), {"index": 0, "draft": draft_of(r) and json.dumps(draft_of(r))}, **HX)  # fmt: skip
    assert '<option value="done" selected>done</option>' in r.text
    # back to one prompt: the step is a one-prompt step again
    r = client_owner.post(
        url(pipeline, "save/"),
        posted(r, **{"step-mode": "one", "step-prompt": "Spell {{topic}}", "step-output_key": "spelled",
                    "step-output_format": "text"}),
        **HX,
    )  # fmt: skip
    assert "Saved as version 3." in r.text, re.findall(
        r'<ul class="field-errors".*?</ul>', r.text, re.S
    )
    step = pipeline.spec().steps[0]
    assert step.workflow is None and step.prompt == "Spell {{topic}}"


def test_llm_text_and_prompts_with_markup_are_escaped(client_owner, owner, redis_client):
    evil = "<script>alert(1)</script>"
    spec = PipelineSpec.model_validate(essay_spec())
    spec.steps[0].workflow.tasks[0].prompt = f"Draft {evil} on {{{{topic}}}}"
    pipeline = create_pipeline(owner, spec, name="X")
    r = client_owner.post(url(pipeline, "step/"), {"index": 0, "draft": json.dumps(spec.to_dict())}, **HX)  # fmt: skip
    assert evil not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text

    trial_id = trial.create(owner.pk, spec.steps[0], {"topic": "t"}, 1, pipeline.code, 0)
    data = trial.get(trial_id)
    data.update(
        status="done",
        parsed_json=json.dumps({"draft": evil}),
        trace=[
            {"task": "draft", "ok": True, "reply": evil, "memory": {"draft": evil},
             "messages": [{"role": "user", "content": evil}], "tokens_in": 3, "tokens_out": 4, "ms": 5},
            {"task": "critique", "ok": False, "error": f"prompt 'critique' failed: {evil}"},
        ],
    )  # fmt: skip
    trial._save(data)
    r = client_owner.get(url(pipeline, f"try/{trial_id}/"), **HX)
    assert r.status_code == 200
    assert "The workflow made 2 calls" in r.text
    assert evil not in r.text and r.text.count("&lt;script&gt;") >= 5
    assert re.search(r'data-task="draft".*data-task="critique"', r.text, re.S)


def test_the_try_form_of_a_workflow_asks_for_what_its_prompts_read(client_owner, owner):
    from runner.models import Provider

    Provider.objects.create(owner=owner, name="mine", base_url="http://127.0.0.1:9/v1")
    pipeline = create_pipeline(owner, PipelineSpec.model_validate(essay_spec()), name="E")
    draft = json.dumps(pipeline.spec().to_dict())
    r = client_owner.post(url(pipeline, "try/"), {"index": 0, "draft": draft}, **HX)
    assert re.findall(r'name="try-var_(\w+)"', r.text) == ["topic"]
