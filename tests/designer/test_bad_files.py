"""Bad files on the web: nested JSON, malformed CSV, wrong encodings get a form error, nothing saved."""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils.html import escape

from designer.actions import create_pipeline
from designer.models import Pipeline
from runner.models import Provider, Run
from runner.spec import library

pytestmark = pytest.mark.django_db

DEEP_LIST = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


@pytest.fixture
def logged_in(client, owner, redis_client):
    client.force_login(owner)
    return client


@pytest.fixture
def qa(owner):
    return create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")


@pytest.fixture
def provider(owner):
    p = Provider(owner=owner, name="fake", base_url="http://127.0.0.1:9/v1", default_model="m")
    p.set_api_key("sk-test-1234")
    p.save()
    return p


def pipeline_file(data, name="pipeline.json"):
    f = io.BytesIO(data)
    f.name = name
    return f


@pytest.mark.parametrize("data", [DEEP_LIST, DEEP_OBJECT, b'{"name": "x", "steps": ' + DEEP_LIST])
def test_importing_a_deeply_nested_pipeline_is_a_form_error(logged_in, data):
    r = logged_in.post("/pipelines/import/", {"file": pipeline_file(data)})
    assert r.status_code == 200
    assert "This file cannot be imported" in r.text
    assert "nested more than 64 levels deep" in r.text
    assert not Pipeline.objects.exists()


def launch(client, pipeline, provider, name, content):
    return client.post(
        f"/pipelines/{pipeline.code}/launch/",
        {
            "source": "file",
            "file": SimpleUploadedFile(name, content),
            "provider": str(provider.code),
        },
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("topics.json", DEEP_LIST, "nested more than 64 levels deep"),
        ("topics.json", DEEP_OBJECT, "Line 1 is nested more than 64 levels deep"),
        (
            "topics.jsonl",
            b'{"topic": "Bees"}\n{"topic": ' + DEEP_LIST + b"}\n",
            "Line 2 is nested more than 64 levels deep",
        ),
        (
            "topics.csv",
            b'topic,notes\nBees,x\nAnts,"open quote\nWasps,y\n',
            'Line 3 opens a quote (") that is never closed',
        ),
        ("topics.csv", b"topic,notes\nBees,x,extra\n", "Line 2 has 3 values"),
        ("topics.csv", b"topic\nBees\nCaf\xe9\n", "Line 3 is not UTF-8 text"),
    ],
)
def test_launching_with_a_bad_file_is_a_form_error(logged_in, qa, provider, name, content, message):
    r = launch(logged_in, qa, provider, name, content)
    assert r.status_code == 200
    assert escape(message) in r.text
    assert Run.objects.count() == 0
    # the preview says the same
    r = logged_in.post(
        f"/pipelines/{qa.code}/launch/preview/",
        {"file": SimpleUploadedFile(name, content)},
        HTTP_HX_REQUEST="true",
    )
    assert r.status_code == 200 and escape(message) in r.text


def test_the_limits_are_the_settings_and_are_named(logged_in, qa, provider, settings):
    settings.INPUT_MAX_ROWS = 2
    r = launch(logged_in, qa, provider, "t.csv", b"topic\na\nb\nc\n")
    assert "more than 2 rows; up to 2 are accepted (the INPUT_MAX_ROWS setting)" in r.text
    settings.INPUT_MAX_BYTES = 1024 * 1024
    r = launch(logged_in, qa, provider, "t.csv", b"topic\n" + b"x" * (1024 * 1024))
    assert "files up to 1 MB are accepted (the INPUT_MAX_BYTES setting)" in r.text
    assert Run.objects.count() == 0


def test_a_deeply_nested_draft_from_the_editor_is_a_bad_request_not_an_error(logged_in, qa):
    r = logged_in.post(
        f"/pipelines/{qa.code}/edit/save/", {"draft": DEEP_LIST.decode()}, HTTP_HX_REQUEST="true"
    )
    assert r.status_code == 400
    assert qa.versions.count() == 1
