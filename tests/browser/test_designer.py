"""The designer in a real browser: build qa-from-topics by dragging steps, see a validation
error, try a step through the worker, upload a CSV of topics and launch a run."""

import json
import re
import time

import pytest

from designer.actions import create_pipeline
from runner.models import Provider, Run
from runner.spec import PipelineSpec, library

from .conftest import login

pytestmark = [pytest.mark.django_db(transaction=True)]

SUBTOPICS_PROMPT = (
    "List 5 distinct subtopics of the topic below that a learner should know about.\n"
    "Topic: {{topic}}\n"
    "Reply with a JSON list of short strings and nothing else."
)


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("ada", password="a-long-password-1")


@pytest.fixture
def provider(user, fake_llm):
    p = Provider(owner=user, name="fake", base_url=fake_llm.url, default_model="fake-model")
    p.set_api_key("sk-test-1234")
    p.save()
    return p


@pytest.fixture
def pipeline(user):
    return create_pipeline(user, PipelineSpec(name="QA from topics"), name="QA from topics")


def drag(page, source, target_box, x_frac=0.5, y=None):
    """Drag with the mouse (SortableJS runs in fallback mode, driven by mouse events)."""
    box = source.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 12)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 10, box["y"] + 22, steps=5)
    tx = target_box["x"] + target_box["width"] * x_frac
    ty = target_box["y"] + (target_box["height"] / 2 if y is None else y)
    page.mouse.move(tx, ty, steps=20)
    time.sleep(0.1)
    page.mouse.move(tx, ty + 2, steps=2)
    page.mouse.up()


def drop_at_end(page, kind):
    """Drag a palette item below the last step; wait for the new step's form."""
    # htmx done swapping and settling: the boxes measured below stay where they are. A
    # function, not a bare expression: Playwright re-polls a bare expression with eval(),
    # which the page's content security policy refuses.
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling, .htmx-added')"
    )
    count = page.locator("#steps > li.step-card").count()
    page.evaluate("window.scrollTo(0, 0)")
    steps = page.locator("#steps").bounding_box()
    drag(page, page.locator(f"#palette li[data-kind={kind}]"), steps, y=steps["height"] - 15)
    page.wait_for_function(
        "n => document.querySelectorAll('#steps > li.step-card').length === n", arg=count + 1
    )
    page.wait_for_selector(f"#step-form h2:has-text('Step {count + 1}:')")


def fill_step(page, **fields):
    for name, value in fields.items():
        selector = f"#id_step-{name}"
        if page.locator(selector).evaluate("e => e.tagName") == "SELECT":
            page.select_option(selector, value)
        else:
            page.fill(selector, value)


def click_and_swap(page, selector):
    """Click, then wait until htmx has replaced the editor."""
    page.evaluate("document.getElementById('editor').dataset.old = '1'")
    page.click(selector)
    page.wait_for_selector("#editor:not([data-old])")


def apply(page):
    click_and_swap(page, "#apply-step")
    assert page.locator("#step-form .ok").inner_text() == "Applied. Save the pipeline to keep it."


def test_build_try_save_and_launch_qa_from_topics(page, user, provider, pipeline, fake_llm):
    login(page, "ada", "a-long-password-1")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/pipelines/{pipeline.code}/edit/")
    assert page.locator("#steps > li").count() == 0
    palette = page.locator("#palette li")
    assert palette.all_inner_texts()[0].startswith("Generate text")
    assert [palette.nth(i).get_attribute("data-kind") for i in range(5)] == [
        "text",
        "list",
        "variants",
        "combine",
        "transform",
    ]

    # 1. topic -> subtopics, a JSON list fanned out
    drop_at_end(page, "list")
    fill_step(
        page,
        name="subtopics",
        prompt=SUBTOPICS_PROMPT,
        output_key="subtopics",
        item_key="subtopic",
    )
    assert page.locator("#id_step-n").is_hidden()  # only the chosen callback's fields show
    apply(page)
    assert page.locator("#pipeline").get_attribute("data-dirty") == "true"

    # 2. one question per subtopic, written with the variable chips
    drop_at_end(page, "text")
    chips = page.locator("#step-form .chip").all_inner_texts()
    assert chips == ["{{subtopic}}", "{{topic}}"]
    fill_step(page, name="question", output_key="question")
    page.fill("#id_step-prompt", "Write one clear question that a curious learner might ask about ")
    page.locator("#id_step-prompt").press("End")
    page.click("#step-form .chip[data-insert=subtopic]")
    page.locator("#id_step-prompt").press_sequentially(" (part of the topic ")
    page.click("#step-form .chip[data-insert=topic]")
    page.locator("#id_step-prompt").press_sequentially("). Reply with the question only.")
    apply(page)

    # 3. one answer per question; first with a typo in the variable
    drop_at_end(page, "text")
    fill_step(
        page,
        name="answer",
        output_key="answer",
        prompt="Answer the question below accurately and concisely.\nQuestion: {{questoin}}",
    )
    click_and_swap(page, "#apply-step")
    error = page.locator("#step-form [data-field=prompt] .field-errors")
    assert "fix what is marked" in page.locator("#step-form .ok").inner_text()
    assert "“{{questoin}}” is not made by any step before this one." in error.inner_text()
    assert "{{question}}" in error.inner_text()  # says what can be used instead
    assert "is not made by any step" in page.locator("#steps li.step-card").nth(2).inner_text()
    fill_step(
        page,
        prompt="Answer the question below accurately and concisely.\nQuestion: {{question}}",
    )
    apply(page)
    assert page.locator("#step-form .field-errors").count() == 0, page.locator(
        "#step-form .field-errors"
    ).all_inner_texts()

    # the cards read as a flow
    cards = page.locator("#steps li.step-card")
    assert cards.count() == 3
    assert [cards.nth(i).locator(".fan").inner_text() for i in range(3)] == [
        "1 → N",
        "1 → 1",
        "1 → 1",
    ]
    assert cards.nth(1).locator(".arrow").is_visible()
    assert "List 5 distinct subtopics" in cards.nth(0).locator(".prompt-start").inner_text()
    assert "fake-model" not in cards.nth(0).inner_text()  # the provider's default, chosen at launch

    page.click("#save-button")
    page.wait_for_selector("#save-status:has-text('Saved as version 2.')")
    assert page.locator("#pipeline").get_attribute("data-dirty") == "false"
    spec = pipeline.spec()
    assert spec.problems() == []
    assert [(s.name, s.output_format, s.callback.type, s.output_key) for s in spec.steps] == [
        ("subtopics", "json_list", "scatter", "subtopics"),
        ("question", "text", "default", "question"),
        ("answer", "text", "default", "answer"),
    ]
    assert spec.steps[0].callback.item_key == "subtopic"
    assert spec.steps[0].prompt == SUBTOPICS_PROMPT
    assert spec.steps[1].prompt == (
        "Write one clear question that a curious learner might ask about {{subtopic}} "
        "(part of the topic {{topic}}). Reply with the question only."
    )
    assert spec.first_step_keys() == ["topic"]

    # reorder by drag and drop, remove a step (it asks first), then leave without saving
    page.evaluate("window.scrollTo(0, 0)")
    page.evaluate("document.getElementById('editor').dataset.old = '1'")
    first = cards.nth(0).locator(".card-head")
    drag(page, first, cards.nth(1).bounding_box(), y=cards.nth(1).bounding_box()["height"] - 5)
    page.wait_for_selector("#editor:not([data-old])")
    names = page.locator("#steps li.step-card .step-name").all_inner_texts()
    assert names == ["question", "subtopics", "answer"]
    assert page.locator("#pipeline").get_attribute("data-dirty") == "true"
    # the first step's variables are the pipeline's inputs
    assert page.locator(".inputs-line").inner_text() == "Each run starts from: subtopic, topic"
    dialogs = []

    def answer(dialog):
        dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    page.on("dialog", answer)
    click_and_swap(page, "#steps li.step-card >> nth=0 >> .remove-step")
    assert dialogs[0][0] == "confirm" and "Remove the step “question”?" in dialogs[0][1]
    assert page.locator("#steps li.step-card").count() == 2
    # the palette's buttons still work after its items were dragged
    assert page.locator("#palette li").count() == 6
    click_and_swap(page, "#palette li[data-kind=text] .add-step")
    assert page.locator("#steps li.step-card .step-name").all_inner_texts() == [
        "subtopics",
        "answer",
        "text",
    ]
    page.reload()  # warns about the unsaved changes; accepted, the saved version comes back
    assert [d[0] for d in dialogs] == ["confirm", "beforeunload"]
    assert page.locator("#steps li.step-card").count() == 3
    assert pipeline.versions.count() == 2

    # try the first step on one topic, through the worker
    page.locator("#steps li.step-card").nth(0).locator(".try-step").click()
    page.fill("#id_try-var_topic", "Solar energy")
    page.select_option("#id_try-provider", label="fake")
    page.click("#run-try")
    page.wait_for_selector("#try-result[data-status=done]", timeout=30000)
    raw = page.locator("#try-result .raw-reply").inner_text()
    assert raw.startswith("[") and "item 1" in raw
    parsed = json.loads(page.locator("#try-result .parsed-result").inner_text())
    assert len(parsed) == 5 and all("item" in item for item in parsed)
    assert "Topic: Solar energy" in page.locator("#try-result .message pre").inner_text()

    # upload a CSV of topics and launch; while the file is read, the page says so (the
    # preview's answer is held back until the test has seen it)
    page.click("#launch-link")
    page.wait_for_url(re.compile(r".*/launch/$"))
    held = []
    page.route("**/launch/preview/", lambda route: held.append(route))
    assert page.locator("#file-progress").is_hidden()
    page.set_input_files(
        "#id_file",
        files=[
            {
                "name": "topics.csv",
                "mimeType": "text/csv",
                "buffer": b"topic\nSolar energy\nOcean tides\nVolcanoes\n",
            }
        ],
    )
    page.locator("#file-progress").wait_for(state="visible")
    assert "file" in page.locator("#upload-words").inner_text()
    held[0].continue_()
    page.unroute("**/launch/preview/")
    preview = page.locator("#file-preview")
    preview.locator(".chain").wait_for()
    assert page.locator("#file-progress").is_hidden()
    assert preview.locator(".chain").inner_text() == (
        "3 topics → 15 subtopics → 15 questions → 15 answers"
    )
    assert "Ocean tides" in preview.locator("table.preview").inner_text()
    assert page.locator("#source-file").is_checked()
    page.select_option("#id_provider", label="fake")
    page.click("#launch-button")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}/$"))
    run = Run.objects.get(pipeline_code=pipeline.code)
    assert page.url.endswith(f"/runs/{run.code}/")
    assert run.inputs == [
        {"topic": "Solar energy"},
        {"topic": "Ocean tides"},
        {"topic": "Volcanoes"},
    ]
    assert run.pipeline_version == 2
    assert run.providers == {"*": provider.pk}
    deadline = time.time() + 60
    while time.time() < deadline and run.is_active:
        time.sleep(0.2)
        run.refresh_from_db()
    assert run.status == "completed"
    assert run.records.count() == 15
    assert page.console_errors == []


def test_launch_one_input_and_a_file_over_the_limit(page, user, provider, fake_llm):
    from runner.spec import library

    pipeline = create_pipeline(user, library.get("qa-from-topics").spec, name="QA")
    login(page, "ada", "a-long-password-1")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/pipelines/{pipeline.code}/launch/")
    assert "1 topic → 5 subtopics → 5 questions → 5 answers" in page.inner_text(".estimate")
    # a file over the limit is refused in the page, before it is uploaded
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.evaluate(
        """() => {
            const input = document.getElementById("id_file");
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(21 * 1024 * 1024)], "big.csv"));
            input.files = data.files;
            input.dispatchEvent(new Event("change", {bubbles: true}));
        }"""
    )
    alert = page.locator("#file-preview .error")
    alert.wait_for()
    assert "files up to 20 MB are accepted" in alert.inner_text()
    assert not any("/launch/preview/" in u for u in requests)
    assert page.locator("#id_file").evaluate("e => e.files.length") == 0
    # one typed input; the user's only provider is already chosen
    page.fill("#id_input_topic", "Honey bees")
    assert page.locator("#source-one").is_checked()
    assert page.locator("#id_provider option:checked").inner_text().strip() == "fake"
    assert Run.objects.count() == 0
    page.click("#launch-button")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}/$"))
    run = Run.objects.get()
    assert page.url.endswith(f"/runs/{run.code}/")
    assert run.inputs == [{"topic": "Honey bees"}] and run.pipeline_version == 1
    assert page.console_errors == []


def test_add_a_judge_with_a_criterion_and_keep_only_its_best(page, user):
    from runner.spec import library

    pipeline = create_pipeline(user, library.get("qa-from-topics").spec, name="QA")
    login(page, "ada", "a-long-password-1")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/pipelines/{pipeline.code}/edit/")
    click_and_swap(page, "#palette li[data-kind=judge] .add-step")
    assert page.locator("#palette li[data-kind=judge] .add-step").inner_text() == "Add a judge step"
    page.wait_for_selector("#step-form h2:has-text('Step 4: judge')")
    assert page.locator("#judge").is_visible() and page.locator("#id_step-prompt").is_hidden()
    ticked = page.locator("#step-form input[name=step-judge]:checked")
    assert [ticked.nth(i).get_attribute("value") for i in range(ticked.count())] == [
        "question",
        "answer",
    ]

    # one criterion: its name, what it measures, and what its levels mean
    row = page.locator("#criteria-rows > li.crit").nth(0)
    row.locator("input[name=crit-key]").fill("helpfulness")
    row.locator("input[name=crit-description]").fill("How helpful the answer is")
    row.locator("select[name=crit-scale]").select_option("pass_fail")
    assert row.locator("input[name=crit-level_5]").is_hidden()
    assert row.locator("input[name=crit-level_pass]").is_visible()
    row.locator("select[name=crit-scale]").select_option("1-5")
    row.locator("input[name=crit-level_1]").fill("no help at all")
    row.locator("input[name=crit-level_5]").fill("complete and correct")
    page.click("#crit-add")  # a second row, removed again
    assert page.locator("#criteria-rows > li.crit").count() == 2
    assert page.locator("#criteria-rows > li.crit .crit-number").all_inner_texts() == ["1", "2"]
    page.locator("#criteria-rows > li.crit").nth(1).locator(".crit-remove").click()
    assert page.locator("#criteria-rows > li.crit").count() == 1

    # keep only the best answers
    assert page.locator("#keep-rows > li").count() == 0
    page.click("#keep-add")
    keep = page.locator("#keep-rows > li.keep-row").nth(0)
    keep.locator("input[name=keep-field]").fill("helpfulness")
    keep.locator("select[name=keep-op]").select_option(label="at least")
    keep.locator("input[name=keep-value]").fill("4")
    assert "Unsaved changes" in page.locator("#save-status").inner_text()
    apply(page)

    card = page.locator("#steps li.step-card").nth(3)
    assert card.locator(".judge-words").inner_text() == "Judges question, answer on 1 criterion"
    assert card.locator(".quality-words").all_inner_texts() == [
        "Keeps only: helpfulness at least 4"
    ]
    page.click("#save-button")
    page.wait_for_selector("#save-status:has-text('Saved as version 2.')")
    step = pipeline.spec().steps[3]
    assert [(c.key, c.scale, c.levels) for c in step.judge.criteria] == [
        ("helpfulness", "1-5", {"1": "no help at all", "5": "complete and correct"})
    ]
    assert step.judge.fields == ["question", "answer"]
    assert [(f.field, f.op, f.value) for f in step.keep] == [("helpfulness", ">=", "4")]
    assert page.console_errors == []


def test_the_step_form_is_checked_while_typing_and_the_drawing_follows(page, user):
    qa = create_pipeline(user, library.get("qa-from-topics").spec, name="QA")
    login(page, "ada", "a-long-password-1")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/pipelines/{qa.code}/edit/")
    assert page.locator("#graph .node-title").evaluate_all("els => els.map(e => e.textContent)") == [
        "Inputs", "1. subtopics", "2. question", "3. answer", "Records",
    ]  # fmt: skip
    page.locator("#steps .edit-step").nth(2).click()
    page.wait_for_selector("#step-form")
    page.fill("#id_step-prompt", "Answer: {{questoin}}")
    check = page.locator("#step-check")
    check.get_by_text("is not made by any step before this one").wait_for()
    assert page.locator("#step-form").is_visible()  # the form stays as it was
    assert page.input_value("#id_step-prompt") == "Answer: {{questoin}}"
    page.fill("#id_step-prompt", "Answer: {{question}}")
    check.get_by_text("No problems so far.").wait_for()
    assert "Unsaved changes" in page.locator("#save-status").inner_text()
    assert page.console_errors == []
