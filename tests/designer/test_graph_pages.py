"""The pipeline drawn on the pages, runs named after their input and renamed, the step form
checked while one types, action messages as toasts."""

import html
import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from designer.actions import create_pipeline
from designer.launch import run_name
from runner.models import Member, Provider, Run, Workspace
from runner.spec import library

from .test_editor import step_post
from .test_runs import make_run

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def qa(owner):
    return create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")


@pytest.fixture
def provider(owner):
    p = Provider(owner=owner, name="fake", base_url="http://127.0.0.1:9/v1", default_model="m")
    p.set_api_key("sk-test-1234")
    p.save()
    return p


@pytest.fixture
def client_owner(client, owner, redis_client):
    client.force_login(owner)
    return client


def drawing(page):
    """The SVG of the page's pipeline drawing and the texts it shows, unescaped."""
    match = re.search(r'<svg class="graph".*?</svg>', page, re.S)
    assert match, "the page has no drawing of the pipeline"
    svg = match[0]
    texts = [html.unescape(re.sub(r"<title>.*?</title>", "", t)) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S)]  # fmt: skip
    return svg, texts


# -- the drawing on each page --------------------------------------------------------------


def test_the_designer_draws_the_pipeline(client_owner, qa):
    page = client_owner.get(f"/pipelines/{qa.code}/edit/").content.decode()
    svg, texts = drawing(page)
    assert 'role="img"' in svg
    title = "The pipeline drawn: 1 topic → 5 subtopics each → 1 question each → 1 answer each"
    assert html.unescape(re.search(r"<title[^>]*>(.*?)</title>", svg)[1]) == title
    assert ["1. subtopics", "2. question", "3. answer"] == [t for t in texts if t[:2] in ("1.", "2.", "3.")]  # fmt: skip
    assert "5 subtopics each" in texts and "1 question each" in texts and "1 answer each" in texts
    assert "Inputs" in texts and "1 topic" in texts and "Records" in texts


def test_the_designer_redraws_after_an_edit(client_owner, qa):
    draft = json.dumps(qa.spec().to_dict())
    r = client_owner.post(
        f"/pipelines/{qa.code}/edit/add/", {"draft": draft, "kind": "variants"}, **HX
    )
    _, texts = drawing(r.text)
    assert "4. variants" in texts
    assert "3 variants each" in texts  # broadcast: 3 copies of each


def test_the_pipeline_page_draws_a_workflow_with_its_prompts_and_loop(client_owner, owner):
    pipeline = create_pipeline(owner, library.get("multi-turn-dialogue").spec)
    page = client_owner.get(f"/pipelines/{pipeline.code}/").content.decode()
    svg, texts = drawing(page)
    assert "user" in texts and "assistant" in texts and "6 prompts each" in texts
    assert 'class="graph-loop"' in svg
    assert "back to “user” until the number of items in dialogue is at least “6”" in html.unescape(svg)  # fmt: skip
    assert "2 topics → 1 dialogue each" in html.unescape(page)  # the caption


def test_the_launch_page_draws_the_run_of_one_input_and_of_a_file(client_owner, qa, provider):
    page = client_owner.get(f"/pipelines/{qa.code}/launch/").content.decode()
    _, texts = drawing(page)
    assert "1 topic" in texts and "5 subtopics" in texts
    text = "topic\nTea\nRain\n"
    upload = SimpleUploadedFile("topics.csv", text.encode(), content_type="text/csv")
    r = client_owner.post(f"/pipelines/{qa.code}/launch/preview/", {"file": upload}, **HX)
    _, texts = drawing(r.text)
    assert "2 topics" in texts and "10 subtopics" in texts and "10 answers" in texts


def test_the_run_page_draws_the_run_with_its_counts(client_owner, owner):
    run = make_run(owner, topics=2)  # 2 topics, 2 subtopics each, 2 questions, 2 answers
    page = client_owner.get(f"/runs/{run.code}/").content.decode()
    svg, texts = drawing(page)
    assert "2 topics" in texts and "5 subtopics each" in texts  # what was planned
    assert "4 made" in texts  # what each step made so far: 4 subtopics, 4 questions, 4 records
    assert texts.count("4 made") == 3
    assert "2 of 2 done" in texts and "4 of 4 done" in texts
    assert 'data-graph-step="0"' in svg and 'data-graph-made="2"' in svg
    assert re.search(r'<span data-bind="chain">2 → 4 → 4 → 4</span>', page)


# -- names of runs -----------------------------------------------------------------------


def test_a_run_launched_from_one_input_is_named_after_it(client_owner, qa, provider):
    data = {"source": "one", "input_topic": "  Honey\nbees  ", "provider": str(provider.code)}
    client_owner.post(f"/pipelines/{qa.code}/launch/", data)
    assert Run.objects.get().name == "QA · Honey bees"


def test_a_run_launched_from_a_file_is_named_after_the_file(client_owner, qa, provider):
    upload = SimpleUploadedFile("spring topics.csv", b"topic\nTea\nRain\n", content_type="text/csv")
    data = {"source": "file", "file": upload, "provider": str(provider.code)}
    r = client_owner.post(f"/pipelines/{qa.code}/launch/", data)
    assert r.status_code == 302
    run = Run.objects.get()
    assert run.name == "QA · spring topics.csv"
    assert "<h1>QA · spring topics.csv</h1>" in client_owner.get(r["Location"]).content.decode()


def test_a_long_input_is_shortened_in_the_name():
    name = run_name("QA", [{"topic": "word " * 30}])
    assert name == "QA · word word word word word word word word…"
    assert run_name("QA", [{}]) == "QA"


def test_the_owner_renames_a_run(client_owner, owner):
    run = make_run(owner, topics=1)
    r = client_owner.post(f"/runs/{run.code}/rename/", {"name": "  Tea, second try "})
    assert r.status_code == 302
    run.refresh_from_db()
    assert run.name == "Tea, second try"
    page = client_owner.get(r["Location"]).content.decode()
    assert "<h1>Tea, second try</h1>" in page
    assert 'role="status"' in page and "Renamed the run “Tea, second try”." in page  # a toast


def test_an_empty_name_is_refused_and_says_why(client_owner, owner):
    run = make_run(owner, topics=1, name="Kept")
    r = client_owner.post(f"/runs/{run.code}/rename/", {"name": "   "}, follow=True)
    run.refresh_from_db()
    assert run.name == "Kept"
    assert "The run was not renamed: give it a name." in r.content.decode()


@pytest.fixture
def viewer(django_user_model, owner):
    """A viewer of the owner's workspace."""
    user = django_user_model.objects.create_user("watcher", password="pw-watcher-1")
    Member.objects.create(workspace=Workspace.personal(owner), user=user, role="viewer")
    return user


def test_a_viewer_may_not_rename_a_run_and_sees_no_form(client, owner, viewer):
    run = make_run(owner, topics=1, name="Kept", workspace=Workspace.personal(owner))
    client.force_login(viewer)
    assert 'id="rename-run"' not in client.get(f"/runs/{run.code}/").content.decode()
    r = client.post(f"/runs/{run.code}/rename/", {"name": "Mine"})
    assert r.status_code == 403
    run.refresh_from_db()
    assert run.name == "Kept"


def test_a_stranger_cannot_rename_a_run(client, owner, other_user):
    run = make_run(owner, topics=1, name="Kept")
    client.force_login(other_user)
    assert client.post(f"/runs/{run.code}/rename/", {"name": "Mine"}).status_code == 404
    run.refresh_from_db()
    assert run.name == "Kept"


# -- the step form checked while one types --------------------------------------------------


def test_the_step_form_asks_to_be_checked_while_one_types(client_owner, qa):
    draft = json.dumps(qa.spec().to_dict())
    r = client_owner.post(f"/pipelines/{qa.code}/edit/step/", {"index": 1, "draft": draft}, **HX)
    assert 'hx-trigger="input changed delay:400ms from:#step-form"' in r.text
    assert f'hx-post="/pipelines/{qa.code}/edit/step/check/"' in r.text


def test_checking_names_a_missing_variable_without_applying_it(client_owner, qa):
    draft = qa.spec().to_dict()
    check = f"/pipelines/{qa.code}/edit/step/check/"
    r = client_owner.post(check, step_post(draft, 2, prompt="Answer: {{questoin}}"), **HX)
    assert r.status_code == 200
    text = html.unescape(r.text)
    assert "Apply would mark:" in text
    assert "<strong>Prompt:</strong> “{{questoin}}” is not made by any step before this one." in text  # fmt: skip
    assert "<svg" not in r.text and 'id="draft"' not in r.text  # the problems only
    r = client_owner.post(check, step_post(draft, 2, prompt="Answer: {{question}}"), **HX)
    assert "No problems so far." in r.text
    assert qa.versions.count() == 1  # nothing saved


def test_the_designer_marks_unsaved_changes(client_owner, qa):
    draft = json.dumps(qa.spec().to_dict())
    r = client_owner.post(f"/pipelines/{qa.code}/edit/remove/", {"draft": draft, "index": 2}, **HX)
    assert 'data-dirty="true"' in r.text and "save-status unsaved" in r.text
    page = client_owner.get(f"/pipelines/{qa.code}/edit/").content.decode()
    assert 'data-dirty="false"' in page
