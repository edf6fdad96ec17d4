"""The pipelines page: list, create, rename, duplicate, delete, templates, import, export, versions."""

import io
import json

import pytest
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape

from designer import actions
from designer.models import Pipeline
from runner.spec import PipelineSpec, library

pytestmark = pytest.mark.django_db


@pytest.fixture
def logged_in(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def qa(owner):
    return actions.create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")


def html(response):
    return response.content.decode()


def open_url(pipeline):
    try:
        return reverse("designer:pipeline-edit", args=[pipeline.code])
    except NoReverseMatch:
        return reverse("designer:pipeline-detail", args=[pipeline.code])


def upload(data, name="pipeline.json"):
    f = io.BytesIO(data if isinstance(data, bytes) else data.encode())
    f.name = name
    return f


def test_list_shows_name_steps_and_version(logged_in, qa, other_user):
    actions.create_pipeline(other_user, PipelineSpec(name="Not mine"))
    page = html(logged_in.get("/pipelines/"))
    assert "QA" in page
    row = page[page.index(f'data-pipeline="{qa.code}"') :].split("</tr>")[0]
    assert "<td>3</td>" in row  # three steps
    assert "v1" in row
    assert "Not mine" not in page


def test_create_an_empty_pipeline_and_open_it(logged_in, owner):
    response = logged_in.post("/pipelines/new/", {"name": "  My   first pipeline "})
    pipeline = Pipeline.objects.get(owner=owner)
    assert pipeline.name == "My first pipeline"
    assert response.status_code == 302
    assert response["Location"] == open_url(pipeline)
    assert pipeline.latest.number == 1
    assert pipeline.spec().steps == []


def test_create_needs_a_name(logged_in, owner):
    response = logged_in.post("/pipelines/new/", {"name": "   "})
    assert response.status_code == 200
    assert "Give the pipeline a name." in html(response)
    response = logged_in.post("/pipelines/new/", {"name": ""}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Give the pipeline a name." in html(response)
    assert "<html" not in html(response)  # the form partial only
    assert not Pipeline.objects.exists()


def test_create_by_htmx_redirects_the_whole_page(logged_in, owner):
    response = logged_in.post("/pipelines/new/", {"name": "By htmx"}, HTTP_HX_REQUEST="true")
    pipeline = Pipeline.objects.get(owner=owner)
    assert response["HX-Redirect"] == open_url(pipeline)


def test_detail_page_summarises_the_spec(logged_in, qa):
    page = html(logged_in.get(f"/pipelines/{qa.code}/"))
    for name in ("subtopics", "question", "answer"):
        assert name in page
    assert "1 → N" in page  # subtopics are scattered
    assert "Version 1" in page


def test_rename_makes_a_new_version(logged_in, qa):
    assert logged_in.get(f"/pipelines/{qa.code}/rename/").status_code == 200
    response = logged_in.post(f"/pipelines/{qa.code}/rename/", {"name": "Topics to answers"})
    assert response.status_code == 302
    qa.refresh_from_db()
    assert qa.name == "Topics to answers"
    assert qa.latest.number == 2 and qa.latest.note == "renamed"
    assert qa.spec().name == "Topics to answers"
    assert "Topics to answers" in html(logged_in.get("/pipelines/"))


def test_rename_error_beside_the_field_on_htmx(logged_in, qa):
    response = logged_in.post(f"/pipelines/{qa.code}/rename/", {"name": ""}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Give the pipeline a name." in html(response)
    assert 'id="rename-pipeline"' in html(response)
    qa.refresh_from_db()
    assert qa.name == "QA"


def test_duplicate(logged_in, qa, owner):
    assert logged_in.get(f"/pipelines/{qa.code}/duplicate/").status_code == 405
    response = logged_in.post(f"/pipelines/{qa.code}/duplicate/")
    assert response.status_code == 302
    copy = Pipeline.objects.get(owner=owner, name="Copy of QA")
    assert copy.code != qa.code
    assert [s.name for s in copy.spec().steps] == ["subtopics", "question", "answer"]
    assert "Copy of QA" in html(logged_in.get("/pipelines/"))


def test_delete_asks_first(logged_in, qa):
    page = logged_in.get(f"/pipelines/{qa.code}/delete/")
    assert "Delete “QA”?" in html(page)
    assert Pipeline.objects.filter(pk=qa.pk).exists()
    response = logged_in.post(f"/pipelines/{qa.code}/delete/")
    assert response["Location"] == "/pipelines/"
    assert not Pipeline.objects.filter(pk=qa.pk).exists()
    assert "Deleted the pipeline “QA”" in html(logged_in.get("/pipelines/"))


def test_names_are_escaped(logged_in, owner):
    evil = actions.create_pipeline(owner, PipelineSpec(name="<script>alert(1)</script>"))
    for url in ("/pipelines/", f"/pipelines/{evil.code}/", f"/pipelines/{evil.code}/versions/"):
        page = html(logged_in.get(url))
        assert "<script>alert(1)" not in page, url
        assert "&lt;script&gt;alert(1)" in page, url


# -- templates -----------------------------------------------------------------------


def test_templates_gallery_shows_every_template(logged_in):
    page = html(logged_in.get("/templates/"))
    for t in library.templates():
        assert escape(t.title) in page
        assert escape(t.purpose) in page
        assert escape(t.shape) in page
        assert f"/templates/{t.slug}/use/" in page


def test_use_a_template_makes_an_editable_copy(logged_in, owner):
    assert logged_in.get("/templates/qa-from-topics/use/").status_code == 405
    response = logged_in.post("/templates/qa-from-topics/use/")
    pipeline = Pipeline.objects.get(owner=owner)
    assert response["Location"] == open_url(pipeline)
    template = library.get("qa-from-topics")
    assert pipeline.name == template.title
    assert pipeline.spec().steps == template.spec.steps
    assert logged_in.post("/templates/no-such-thing/use/").status_code == 404


@pytest.mark.parametrize("slug", library.slugs())
def test_every_template_can_be_copied(logged_in, owner, slug):
    template = library.get(slug)
    response = logged_in.post(f"/templates/{slug}/use/")
    assert response.status_code == 302
    pipeline = Pipeline.objects.get(owner=owner)
    assert response["Location"] == open_url(pipeline)
    assert pipeline.spec().steps == template.spec.steps  # workflows included
    PipelineSpec.load(pipeline.latest.spec)  # the copy passes the checks a launch makes


def test_the_gallery_shows_a_workflow_step_for_what_it_is(logged_in):
    page = html(logged_in.get("/templates/"))
    dialogue = library.get("multi-turn-dialogue")
    assert escape(dialogue.shape) in page
    assert "dialogue (2 prompts, 6 calls in a loop; 1 → 1)" in page


# -- import and export -----------------------------------------------------------------


def test_export_downloads_the_spec(logged_in, qa):
    response = logged_in.get(f"/pipelines/{qa.code}/export/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="qa-v1.json"'
    assert json.loads(response.content) == qa.latest.spec


def test_export_round_trip(logged_in, qa, owner):
    exported = logged_in.get(f"/pipelines/{qa.code}/export/").content
    response = logged_in.post("/pipelines/import/", {"file": upload(exported, "qa-v1.json")})
    assert response.status_code == 302
    imported = Pipeline.objects.exclude(pk=qa.pk).get(owner=owner)
    assert imported.name == f"{qa.name} (imported)"
    assert imported.spec() == qa.spec().model_copy(update={"name": imported.name})
    assert imported.latest.note == "imported from qa-v1.json"
    assert "Imported the pipeline “QA (imported)”." in html(logged_in.get(response["Location"]))


def test_an_imported_copy_of_an_imported_pipeline_is_not_named_twice(logged_in, qa, owner):
    exported = json.loads(logged_in.get(f"/pipelines/{qa.code}/export/").content)
    exported["name"] = "QA (imported)"
    logged_in.post("/pipelines/import/", {"file": upload(json.dumps(exported).encode(), "q.json")})
    assert Pipeline.objects.exclude(pk=qa.pk).get(owner=owner).name == "QA (imported)"


def test_import_a_broken_file_lists_every_problem_and_saves_nothing(logged_in):
    data = {
        "name": "Broken",
        "steps": [
            {
                "name": "a",
                "prompt": "List about {{topic}}",
                "output_key": "items",
                "callback": {"type": "scatter"},
            },
            {"name": "a", "prompt": "Use {{nowhere}}", "output_key": "bad key"},
            {"name": "c", "prompt": "x", "output_key": "c", "callback": {"type": "broadcast"}},
        ],
    }
    problems = None
    try:
        PipelineSpec.load(json.dumps(data))
    except Exception as exc:
        problems = exc.problems
    assert problems and len(problems) >= 4
    response = logged_in.post("/pipelines/import/", {"file": upload(json.dumps(data))})
    assert response.status_code == 200
    page = html(response)
    for problem in problems:
        assert str(problem).replace("'", "&#x27;") in page, problem
    assert f"{len(problems)} problems in this file; nothing was saved" in page
    assert not Pipeline.objects.exists()


def test_import_refuses_non_json_unknown_fields_and_big_files(logged_in):
    page = html(logged_in.post("/pipelines/import/", {"file": upload('{"name": "x",}')}))
    assert "the file is not valid JSON: line 1, character 14: a field name in double quotes" in page
    bad = {"steps": [{"name": "a", "prompt": "x", "output_key": "a", "colour": "red"}]}
    page = html(logged_in.post("/pipelines/import/", {"file": upload(json.dumps(bad))}))
    assert "step 1 (&#x27;a&#x27;): colour is not a known field" in page
    big = upload(b"{" + b" " * (1024 * 1024 + 10) + b"}")
    page = html(logged_in.post("/pipelines/import/", {"file": big}))
    assert "a pipeline file can be at most 1.0" in page
    page = html(logged_in.post("/pipelines/import/", {}))
    assert "Choose a pipeline file to import." in page
    assert not Pipeline.objects.exists()


# -- versions ---------------------------------------------------------------------------


def test_versions_list_view_and_restore(logged_in, qa):
    v1 = qa.spec()
    shorter = v1.model_copy(update={"steps": v1.steps[:2]})
    actions.save_version(qa, shorter, note="dropped the answer step")
    page = html(logged_in.get(f"/pipelines/{qa.code}/versions/"))
    assert "dropped the answer step" in page
    assert "subtopics → question → answer" in page
    assert "subtopics → question<" in page

    view = html(logged_in.get(f"/pipelines/{qa.code}/versions/1/"))
    assert "read-only" in view
    assert "&quot;output_key&quot;: &quot;answer&quot;" in view  # the JSON, escaped
    assert logged_in.get(f"/pipelines/{qa.code}/versions/9/").status_code == 404

    assert logged_in.get(f"/pipelines/{qa.code}/versions/1/restore/").status_code == 405
    response = logged_in.post(f"/pipelines/{qa.code}/versions/1/restore/")
    assert response["Location"] == f"/pipelines/{qa.code}/versions/"
    latest = qa.latest
    assert latest.number == 3
    assert latest.note == "restored version 1"
    assert qa.spec() == v1
    assert [v.number for v in qa.versions.all()] == [3, 2, 1]


def test_export_an_older_version(logged_in, qa):
    actions.rename_pipeline(qa, "Renamed")
    response = logged_in.get(f"/pipelines/{qa.code}/versions/1/export/")
    assert response["Content-Disposition"] == 'attachment; filename="renamed-v1.json"'
    assert json.loads(response.content)["name"] == "QA"
