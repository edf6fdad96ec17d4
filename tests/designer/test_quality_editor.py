"""Quality in the designer: a judge step's rubric, "Keep only" rows and "Drop duplicates"."""

import html
import json
import re

import pytest

from designer.actions import create_pipeline
from runner.models import Provider
from runner.spec import library
from runner.spec.builder import Judge, PipelineBuilder, Step

from .test_workflow_editor import draft_of, posted, url

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
NO_LEVELS = {f"crit-level_{lv}": ["", ""] for lv in ("2", "3", "4", "fail")}
RUBRIC = {
    "crit-key": ["helpfulness", "grounded"],
    "crit-description": ["How helpful the answer is", "Only facts from the question"],
    "crit-scale": ["1-5", "pass_fail"],
    "crit-level_1": ["useless", ""],
    "crit-level_5": ["complete and correct", ""],
    "crit-level_pass": ["", "nothing made up"],
    **NO_LEVELS,
}


@pytest.fixture
def client_owner(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def qa(owner):
    Provider.objects.create(owner=owner, name="mine", base_url="http://127.0.0.1:9/v1")
    return create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")


def add_judge(client, pipeline):
    draft = json.dumps(pipeline.spec().to_dict())
    r = client.post(url(pipeline, "add/"), {"kind": "judge", "draft": draft}, **HX)
    assert r.status_code == 200
    return r


def open_step(client, pipeline, response, index):
    draft = json.dumps(draft_of(response))
    return client.post(url(pipeline, "step/"), {"index": index, "draft": draft}, **HX)


def card(response, index):
    cards = re.findall(r'<li class="step-card.*?</li>', response.text, re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", cards[index])).split())


def errors_of(response, field):
    """The error sentences shown in the block of form field `field`."""
    m = re.search(rf'data-field="{field}".*?(?=data-field=|</form>)', response.text, re.S)
    assert m, f"no field {field}"
    return [html.unescape(e) for e in re.findall(r"<li>(.*?)</li>", m[0], re.S)]


def row_values(response, name):
    """The values of the inputs called `name` outside the page's row templates."""
    text = re.sub(r"<template.*?</template>", "", response.text, flags=re.S)
    return [html.unescape(v) for v in re.findall(rf'name="{name}"[^>]*value="([^"]*)"', text)]


def test_the_palette_offers_a_judge_step(client_owner, qa):
    r = client_owner.get(url(qa))
    item = re.search(r'<li class="palette-item" data-kind="judge">.*?</li>', r.text, re.S)[0]
    assert "Judge with a rubric" in item and ">Add a judge step</button>" in item


def test_a_judge_step_built_in_the_form_is_the_builders_judge(client_owner, qa):
    r = add_judge(client_owner, qa)
    assert '<option value="judge" selected>' in r.text
    assert not re.search(r'<section id="judge"[^>]* hidden>', r.text)
    # the fields to judge: what the step before read and made, ticked; the others offered
    assert re.findall(r'name="step-judge" value="(\w+)"[^>]*checked', r.text) == [
        "question",
        "answer",
    ]
    assert re.findall(r'name="step-judge" value="(\w+)"', r.text) == [
        "question", "answer", "topic", "subtopic"
    ]  # fmt: skip
    data = posted(
        r,
        **RUBRIC,
        **{
            "step-instructions": "Be strict about facts.",
            "step-provider": "mine",
            "step-model": "big-model",
            "keep-field": "helpfulness",
            "keep-op": ">=",
            "keep-value": "4",
        },
    )
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Saved as version 2." in r.text, errors_of(r, "criteria")
    spec = qa.spec()
    expected = (
        Judge(
            ["question", "answer"],
            [
                {
                    "key": "helpfulness",
                    "description": "How helpful the answer is",
                    "levels": {"1": "useless", "5": "complete and correct"},
                },
                {
                    "key": "grounded",
                    "description": "Only facts from the question",
                    "scale": "pass_fail",
                    "levels": {"pass": "nothing made up"},
                },
            ],
            instructions="Be strict about facts.",
            name="judge",
            provider="mine",
            model="big-model",
        )
        .keep("helpfulness", ">=", 4)
        .to_spec(3)
    )
    assert spec.steps[3].model_dump() == expected.model_dump()
    assert spec.steps[:3] == library.get("qa-from-topics").spec.steps
    assert spec.problems() == []
    assert "4 judge 1 → 1 Judges question, answer on 2 criteria" in card(r, 3)
    assert "Model: big-model (mine) · adds helpfulness, grounded, rationale" in card(r, 3)
    assert "Keeps only: helpfulness at least 4" in card(r, 3)

    # opened again from the saved version, the form shows the rubric as it was written
    r = client_owner.get(url(qa))
    r = open_step(client_owner, qa, r, 3)
    assert row_values(r, "crit-key") == ["helpfulness", "grounded"]
    assert row_values(r, "crit-level_5") == ["complete and correct", ""]
    assert row_values(r, "crit-level_pass") == ["", "nothing made up"]
    assert re.findall(r'<option value="pass_fail" selected>', r.text) == ['<option value="pass_fail" selected>']  # fmt: skip
    assert "Be strict about facts.</textarea>" in r.text
    assert row_values(r, "keep-field") == ["helpfulness"] and row_values(r, "keep-value") == ["4"]
    # posted back as the page shows it, nothing changes
    r = client_owner.post(url(qa, "save/"), posted(r), **HX)
    assert "No changes since version 2." in r.text


def test_a_pair_judge_compares_two_fields(client_owner, qa):
    r = add_judge(client_owner, qa)
    data = posted(
        r,
        **RUBRIC,
        **{"step-judge": ["question"], "step-pair_a": "answer", "step-pair_b": "subtopic"},
    )
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Saved as version 2." in r.text
    judge = qa.spec().steps[3].judge
    assert judge.fields == ["question"] and judge.pair == ["answer", "subtopic"]
    assert "Judges question and compares answer (A) with subtopic (B) on 2 criteria" in card(r, 3)


def test_a_pipeline_built_in_python_opens_in_the_form_and_saves_unchanged(client_owner, owner):
    built = (
        PipelineBuilder("Pairs")
        << Step("Answer {{question}}", output_key="a").drop_duplicates("a", near=False)
        << Step("Answer {{question}} in another way", output_key="b")
        << Judge(["question"], [{"key": "clear", "scale": "pass_fail", "levels": {"fail": "vague"}}],
                 pair=("a", "b"), instructions="Prefer the shorter one.", model="judge-model")
        .keep("clear_a", "==", "pass")
        .drop_duplicates("chosen", threshold=0.95)
    ).build()  # fmt: skip
    pipeline = create_pipeline(owner, built, name="Pairs")
    r = client_owner.get(url(pipeline))
    assert "Drops duplicates of a (exact copies)" in card(r, 0)
    words = card(r, 2)
    assert "Judges question and compares a (A) with b (B) on 1 criterion" in words
    assert "Keeps only: clear_a equal to “pass”" in words
    assert "Drops duplicates of chosen (near, 95% similar)" in words
    r = open_step(client_owner, pipeline, r, 2)
    assert '<option value="a" selected>a</option>' in r.text.split('name="step-pair_a"')[1]
    assert row_values(r, "crit-level_fail") == ["vague"]
    assert row_values(r, "step-dedup") == ["chosen"]
    assert "Prefer the shorter one.</textarea>" in r.text
    r = client_owner.post(url(pipeline, "save/"), posted(r), **HX)
    assert "No changes since version 1." in r.text
    r = open_step(client_owner, pipeline, r, 0)
    assert not re.search(r'name="step-dedup_near"[^>]*checked', r.text)
    r = client_owner.post(url(pipeline, "save/"), posted(r), **HX)
    assert "No changes since version 1." in r.text
    assert pipeline.spec() == built


def test_keep_and_drop_duplicates_on_a_normal_step(client_owner, qa):
    r = open_step(client_owner, qa, client_owner.get(url(qa)), 1)
    assert row_values(r, "step-dedup_threshold") == ["0.85"]  # the default, near on
    assert re.search(r'name="step-dedup_near"[^>]*checked', r.text)
    assert '<option value="question"></option>' in r.text  # the results' fields, offered
    data = posted(
        r,
        **{
            "keep-field": ["question", "question"],
            "keep-op": ["min_length", "not_contains"],
            "keep-value": ["10", "lorem"],
            "step-dedup": "question",
            "step-dedup_threshold": "0.9",
        },
    )
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Saved as version 2." in r.text
    step, before = qa.spec().steps[1], library.get("qa-from-topics").spec.steps[1]
    built = (
        Step("x")
        .keep("question", "min_length", 10)
        .keep("question", "not_contains", "lorem")
        .drop_duplicates("question", threshold=0.9)
        .to_spec()
    )
    assert (step.keep, step.dedup) == (built.keep, built.dedup)
    assert step.model_copy(update={"keep": [], "dedup": None}) == before
    words = card(r, 1)
    assert (
        "Keeps only: question at least 10 characters long and question not containing “lorem”"
        in words
    )
    assert "Drops duplicates of question (near, 90% similar)" in words

    # exact duplicates only; a condition removed (as after its Remove button)
    r = open_step(client_owner, qa, r, 1)
    data = posted(r, **{"step-dedup_near": [], "keep-field": ["question"], "keep-op": ["min_length"], "keep-value": ["10"]})  # fmt: skip
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Saved as version 3." in r.text
    step = qa.spec().steps[1]
    assert step.dedup.near is False and [f.op for f in step.keep] == ["min_length"]
    assert "Drops duplicates of question (exact copies)" in card(r, 1)


def test_an_unknown_field_shows_beside_its_row_and_keeps_what_was_typed(client_owner, qa):
    r = add_judge(client_owner, qa)
    data = posted(
        r,
        **RUBRIC,
        **{
            "step-judge": ["question", "answr"],
            "keep-field": ["helpfulness", "helpfulnes"],
            "keep-op": [">=", ">="],
            "keep-value": ["4", "3"],
            "step-dedup": "questoin",
        },
    )
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    assert "Applied, but fix what is marked below before launching." in r.text
    rows = re.findall(r'<li class="keep-row.*?</li>\s*(?=<li|</ol>)', r.text, re.S)
    assert "field-errors" not in rows[0]
    assert (
        "This step's results have no field “helpfulnes” to check. They have: answer, grounded, "
        "helpfulness, question, rationale, subtopic, topic." in html.unescape(rows[1])
    )
    assert row_values(r, "keep-field") == ["helpfulness", "helpfulnes"]
    assert errors_of(r, "judge") == [
        "The records here have no field “answr” to judge. They have: answer, question, subtopic, topic."
    ]
    assert re.search(r'name="step-judge" value="answr"[^>]*checked', r.text)
    assert errors_of(r, "dedup")[0].startswith(
        "This step's results have no field “questoin” to compare."
    )
    assert row_values(r, "step-dedup") == ["questoin"]
    assert "have no field" in card(r, 3)  # the card says so too


def test_mistakes_stop_the_save_and_keep_the_input(client_owner, qa):
    r = add_judge(client_owner, qa)
    empty = {k: ["", ""] for k in RUBRIC if k != "crit-scale"}
    data = posted(
        r,
        **empty,
        **{
            "step-instructions": "Look for {{answer}} twice",
            "keep-field": ["helpfulness", ""],
            "keep-op": [">=", ">="],
            "keep-value": ["high", ""],  # the second row is empty: skipped
            "step-dedup": "question",
            "step-dedup_threshold": "1.5",
        },
    )
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Not saved: the open step has mistakes (see the form)." in r.text
    assert len(qa.spec().steps) == 3 and len(draft_of(r)["steps"]) == 4  # the draft has its judge
    assert draft_of(r)["steps"][3]["judge"]["criteria"][0]["key"] == "score"  # unchanged
    assert errors_of(r, "criteria") == [
        "Add at least one criterion: what the judge scores, for example helpfulness."
    ]
    assert errors_of(r, "instructions") == [
        "Leave out {{ }}, {% %} and {# #} here: the judge is given the fields it reads itself."
    ]
    assert "Look for {{answer}} twice</textarea>" in html.unescape(r.text)
    assert errors_of(r, "keep") == ["“at least” needs a number, for example 4 (not “high”)."]
    assert row_values(r, "keep-value") == ["high", ""]
    assert errors_of(r, "dedup_threshold") == [
        "The similarity is a number from 0.5 to 1 (1: the same words); try 0.85."
    ]
    assert row_values(r, "step-dedup_threshold") == ["1.5"]

    # at most 10 conditions
    many = {
        "keep-field": ["question"] * 11,
        "keep-op": ["min_length"] * 11,
        "keep-value": ["5"] * 11,
    }
    r = client_owner.post(url(qa, "step/apply/"), posted(r, **RUBRIC, **many), **HX)
    assert errors_of(r, "keep") == ["At most 10 conditions: remove 1."]
    assert len(row_values(r, "keep-field")) == 11

    # a criterion without a name, two with the same name; A without B
    data = posted(
        r,
        **{**RUBRIC, "crit-key": ["", "grounded"], "crit-description": ["How helpful", ""]},
        **{"step-instructions": "", "keep-value": ["4", ""], "step-dedup_threshold": "0.3"},
    )
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    crits = re.findall(r'<li class="crit.*?</li>\s*(?=<li|</ol>)', r.text, re.S)
    assert "Give the criterion a short name, for example helpfulness." in crits[0]
    assert "field-errors" not in crits[1]
    assert row_values(r, "crit-description") == ["How helpful", ""]
    assert errors_of(r, "dedup_threshold")[0].startswith("The similarity is a number from 0.5 to 1")
    data = posted(
        r,
        **{**RUBRIC, "crit-key": ["grounded", "grounded"]},
        **{"step-dedup_threshold": "0.85", "step-pair_a": "answer"},
    )
    r = client_owner.post(url(qa, "step/apply/"), data, **HX)
    crits = re.findall(r'<li class="crit.*?</li>\s*(?=<li|</ol>)', r.text, re.S)
    assert "Criterion 1 has this name too: rename one." in crits[1]
    assert errors_of(r, "pair_b") == ["Choose both responses, A and B, or neither."]


def test_text_typed_into_the_rubric_and_conditions_is_escaped(client_owner, qa):
    evil = "<script>alert(1)</script>"
    r = add_judge(client_owner, qa)
    data = posted(
        r,
        **{**RUBRIC, "crit-description": [evil, "x"], "crit-level_1": [evil, ""]},
        **{"keep-field": "answer", "keep-op": "contains", "keep-value": evil},
    )
    r = client_owner.post(url(qa, "save/"), data, **HX)
    assert "Saved as version 2." in r.text
    assert evil not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    r = open_step(client_owner, qa, r, 3)
    assert evil not in r.text and row_values(r, "crit-description")[0] == evil
    assert "Keeps only: answer containing “<script>alert(1)</script>”" in card(r, 3)


def test_another_users_pipeline_is_not_found(client, other_user, qa):
    client.force_login(other_user)
    draft = json.dumps(qa.spec().to_dict())
    for suffix, data in (
        ("add/", {"kind": "judge", "draft": draft}),
        ("step/", {"index": 2, "draft": draft}),
        ("step/apply/", {"step-index": 2, "keep-field": "answer", "draft": draft}),
        ("save/", {"draft": draft}),
    ):
        assert client.post(url(qa, suffix), data, **HX).status_code == 404
    assert qa.latest.number == 1
