"""A workflow step built in a real browser, without code: "questions until 3", then a run."""

import re
import time

import pytest

from designer.actions import create_pipeline
from runner.models import Provider, Record, Run, Task
from runner.spec import PipelineSpec

from .conftest import login
from .test_designer import click_and_swap, drag

pytestmark = [pytest.mark.django_db(transaction=True)]

PROMPT = "Write one question about {{topic}}, not one of these: {{questions}}"


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("grace", password="a-long-password-2")


@pytest.fixture
def provider(user, fake_llm):
    p = Provider(owner=user, name="fake", base_url=fake_llm.url, default_model="fake-model")
    p.set_api_key("sk-test-5678")
    p.save()
    return p


def rows(page):
    return page.locator("#wf-tasks > li.wf-task")


def ids(page):
    return rows(page).locator("input[name=wf-id]").evaluate_all("els => els.map(e => e.value)")


def test_build_questions_until_3_and_run_it(page, user, provider, fake_llm):
    pipeline = create_pipeline(user, PipelineSpec(name="Questions"), name="Questions")
    login(page, "grace", "a-long-password-2")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/pipelines/{pipeline.code}/edit/")
    click_and_swap(page, "#palette li[data-kind=text] .add-step")
    page.fill("#id_step-name", "questions")

    # one prompt for now; choosing several shows the workflow's prompts instead
    assert page.locator("#workflow").is_hidden()
    assert page.locator("#id_step-prompt").is_visible()
    page.select_option("#id_step-mode", "workflow")
    assert page.locator("#workflow").is_visible()
    assert page.locator("#id_step-prompt").is_hidden()
    assert rows(page).count() == 1

    # a second prompt, dragged above the first, then removed again
    page.click("#wf-add")
    assert ids(page) == ["prompt", "prompt1"]
    page.evaluate("window.scrollTo(0, 0)")
    second = rows(page).nth(1).locator(".wf-grip")
    second.scroll_into_view_if_needed()
    drag(page, second, rows(page).nth(0).bounding_box(), x_frac=0.1, y=5)
    page.wait_for_function(
        "() => document.querySelector('#wf-tasks input[name=wf-id]').value === 'prompt1'"
    )
    assert ids(page) == ["prompt1", "prompt"]
    assert rows(page).locator(".wf-number").all_inner_texts() == ["1", "2"]
    rows(page).nth(0).locator(".wf-remove").click()
    assert ids(page) == ["prompt"]

    row = rows(page).nth(0)
    row.locator("input[name=wf-id]").fill("ask")
    prompt = row.locator("textarea[name=wf-prompt]")
    prompt.fill("Write one question about ")
    prompt.press("End")
    row.locator(".wf-chip[data-wf-insert=topic]").click()  # the same chips as one prompt
    prompt.press_sequentially(", not one of these: {{questions}}")
    row.locator("input[name=wf-key]").fill("questions")
    row.locator("select[name=wf-kind]").select_option(label="add to a list")
    row.locator("input[name=wf-repeat_key]").fill("questions")
    row.locator("input[name=wf-repeat_n]").fill("3")
    # the return value lists what the prompts save, as they are typed
    options = page.locator("#id_wf-return option").all_inner_texts()
    assert "questions" in options
    page.select_option("#id_wf-return", ["questions"])
    assert page.locator("#id_wf-max_steps").input_value() == "20"

    click_and_swap(page, "#apply-step")
    assert page.locator("#step-form .ok").inner_text() == "Applied. Save the pipeline to keep it."
    assert page.locator("#workflow .wf-problems").count() == 0
    card = page.locator("#steps li.step-card").nth(0)
    assert card.locator(".wf-shape-text").inner_text() == "1 prompt, loops up to 20 prompts in all"
    assert card.locator(".wf-calls").inner_text() == "3 calls per input"
    io = rows(page).nth(0).locator(".wf-io").inner_text()
    assert "Reads questions topic" in io and "Writes questions (add to a list)" in io

    page.click("#save-button")
    page.wait_for_selector("#save-status:has-text('Saved as version 2.')")
    step = pipeline.spec().steps[0]
    assert step.workflow.tasks[0].prompt == PROMPT
    assert step.workflow.return_value == ["questions"] and step.output_key == "questions"
    assert pipeline.spec().problems() == []

    # try it on one topic: every sub-call, in order
    page.locator("#steps li.step-card").nth(0).locator(".try-step").click()
    page.fill("#id_try-var_topic", "Glaciers")
    page.select_option("#id_try-provider", label="fake")
    page.click("#run-try")
    page.wait_for_selector("#try-result[data-status=done]", timeout=30000)
    assert page.locator("#try-result h3").first.inner_text() == "The workflow made 3 calls"
    assert page.locator("#try-result .wf-call").evaluate_all(
        "els => els.map(e => e.dataset.task)"
    ) == ["ask", "ask", "ask"]
    assert "glacier" in page.locator("#try-result .wf-reply").nth(2).inner_text().lower()

    # launch on one topic and watch it complete
    page.click("#launch-link")
    page.wait_for_url(re.compile(r".*/launch/$"))
    page.fill("#id_input_topic", "Volcanoes")
    page.select_option("#id_provider", label="fake")
    page.click("#launch-button")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}/$"))
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]').textContent === 'completed'",
        timeout=60000,
    )
    run = Run.objects.get(pipeline_code=pipeline.code)
    deadline = time.time() + 10
    while run.is_active and time.time() < deadline:
        time.sleep(0.2)
        run.refresh_from_db()
    assert run.status == Run.COMPLETED
    record = Record.objects.get(run=run)
    assert record.data["topic"] == "Volcanoes"
    assert len(record.data["questions"]) == 3
    assert all("volcano" in q.lower() for q in record.data["questions"])
    assert [c["task"] for c in Task.objects.get(run=run).trace] == ["ask", "ask", "ask"]
    assert page.console_errors == []
