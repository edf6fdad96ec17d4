"""Inputs and launch: one input or a CSV / JSONL file, the call estimate, limits, the run."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from designer.actions import create_pipeline, save_version
from runner.models import Provider, Run
from runner.spec import CallbackSpec, PipelineSpec, StepSpec, estimate, library

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def provider(owner):
    p = Provider(owner=owner, name="fake", base_url="http://127.0.0.1:9/v1", default_model="m")
    p.set_api_key("sk-test-1234")
    p.save()
    return p


@pytest.fixture
def qa(owner):
    pipeline = create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")
    spec = pipeline.spec()
    steps = list(spec.steps)
    steps[2] = steps[2].model_copy(update={"prompt": "Answer well: {{question}}"})
    save_version(pipeline, spec.model_copy(update={"steps": steps}))  # version 2
    return pipeline


@pytest.fixture
def client_owner(client, owner, redis_client):
    client.force_login(owner)
    return client


def url(pipeline, suffix=""):
    return f"/pipelines/{pipeline.code}/launch/{suffix}"


def csv_file(text, name="topics.csv"):
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def test_page_asks_for_the_first_steps_variables_and_shows_the_estimate(client_owner, qa):
    r = client_owner.get(url(qa))
    assert r.status_code == 200
    assert 'name="input_topic"' in r.text
    assert "version 2" in r.text
    assert "1 topic → 5 subtopics → 5 questions → 5 answers" in r.text
    assert "11 calls" in r.text and "an estimate" in r.text
    assert "Add a provider first" in r.text


def test_launch_from_a_csv_maps_columns_and_records_the_version(client_owner, qa, provider):
    text = "id,Subject\n1,Solar energy\n2,Ocean tides\n3,Volcanoes\n"
    r = client_owner.post(url(qa, "preview/"), {"file": csv_file(text)}, **HX)
    assert r.status_code == 200
    assert "CSV file, 3 rows" in r.text
    assert "<td>Ocean tides</td>" in r.text
    assert '<select name="map_topic"' in r.text
    # no column is named topic: the person chooses
    assert '<option value="Subject" selected>' not in r.text
    r = client_owner.post(
        url(qa, "preview/"), {"file": csv_file(text), "map_topic": "Subject"}, **HX
    )
    assert '<option value="Subject" selected>' in r.text
    assert "3 topics → 15 subtopics → 15 questions → 15 answers" in r.text
    assert "33 calls" in r.text
    # launching without choosing the column is refused, nothing runs
    r = client_owner.post(
        url(qa),
        {"source": "file", "file": csv_file(text), "provider": str(provider.code)},
    )
    assert r.status_code == 200
    assert "Choose the column that holds {{topic}}." in r.text
    assert Run.objects.count() == 0
    r = client_owner.post(
        url(qa),
        {
            "source": "file",
            "file": csv_file(text),
            "map_topic": "Subject",
            "provider": str(provider.code),
        },
    )
    run = Run.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/runs/{run.code}/"
    assert run.inputs == [
        {"topic": "Solar energy"},
        {"topic": "Ocean tides"},
        {"topic": "Volcanoes"},
    ]
    assert run.pipeline_code == qa.code and run.pipeline_version == 2
    assert run.providers == {"*": provider.pk}
    assert run.spec["steps"][2]["prompt"] == "Answer well: {{question}}"
    assert run.tasks.filter(step=0).count() == 3


def test_launch_with_htmx_redirects_to_the_run(client_owner, qa, provider):
    r = client_owner.post(
        url(qa),
        {"source": "one", "input_topic": "Honey bees", "provider": str(provider.code)},
        **HX,
    )
    run = Run.objects.get()
    assert r["HX-Redirect"] == f"/runs/{run.code}/"
    assert run.inputs == [{"topic": "Honey bees"}]


def test_jsonl_and_a_column_named_like_the_variable(client_owner, qa, provider):
    rows = [{"topic": "Bees", "n": 1}, {"topic": "Ants", "n": 2}]
    f = SimpleUploadedFile("t.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    r = client_owner.post(url(qa), {"source": "file", "file": f, "provider": str(provider.code)})
    assert r.status_code == 302
    assert Run.objects.get().inputs == [{"topic": "Bees"}, {"topic": "Ants"}]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("t.csv", b"\xff\xfe\x00b\x00a\x00d", "not UTF-8 text"),
        ("t.csv", b"topic\n", "no rows under its header"),
        ("t.csv", b"", "The file is empty."),
        ("t.csv", b"topic\nBees\n\nAnts\n", None),  # ok: blank lines are skipped
        ("t.csv", b"topic\nBees\nAnts, x\n", "Line 3 has 2 values but the header names 1 column."),
        ("t.csv", b"topic,notes\nBees\n  ,x\n", "Row 2 has no value in the column “topic”"),
        ("t.jsonl", b'{"topic": "Bees"}\nnot json\n', "Line 2 is not valid JSON"),
        ("t.jsonl", b'{"topic": "Bees"}\n[1, 2]\n', "Line 2 is not a JSON object"),
        ("t.csv", b"topic,topic\nBees,Ants\n", "Two columns are named “topic”"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message(
    client_owner, qa, provider, name, content, message
):
    f = SimpleUploadedFile(name, content)
    r = client_owner.post(url(qa), {"source": "file", "file": f, "provider": str(provider.code)})
    if message is None:
        assert r.status_code == 302
        return
    assert r.status_code == 200
    assert message in r.text
    assert Run.objects.count() == 0


def test_size_and_row_limits(client_owner, qa, provider, settings):
    big = b"topic\n" + b"Solar energy and more\n" * (settings.INPUT_MAX_BYTES // 22 + 10)
    assert len(big) > settings.INPUT_MAX_BYTES
    r = client_owner.post(
        url(qa),
        {
            "source": "file",
            "file": SimpleUploadedFile("big.csv", big),
            "provider": str(provider.code),
        },
    )
    assert "files up to 20 MB are accepted" in r.text
    r = client_owner.post(url(qa, "preview/"), {"file": SimpleUploadedFile("big.csv", big)}, **HX)
    assert "files up to 20 MB are accepted" in r.text
    settings.INPUT_MAX_ROWS = 3
    for name, body in [
        ("rows.csv", "topic\na\nb\nc\nd\n"),
        ("rows.jsonl", '{"topic": "a"}\n' * 4),
    ]:
        r = client_owner.post(
            url(qa),
            {"source": "file", "file": csv_file(body, name), "provider": str(provider.code)},
        )
        assert "The file has more than 3 rows; up to 3 are accepted" in r.text
    assert Run.objects.count() == 0


def test_one_input_and_the_provider_are_required(client_owner, qa, provider, other_user):
    r = client_owner.post(url(qa), {"source": "one", "input_topic": "  "})
    assert "Give a value for {{topic}}." in r.text
    assert "Choose the provider the run calls." in r.text
    theirs = Provider.objects.create(owner=other_user, name="x", base_url="http://127.0.0.1:9/v1")
    r = client_owner.post(
        url(qa), {"source": "one", "input_topic": "Bees", "provider": str(theirs.code)}
    )
    assert "That provider no longer exists" in r.text
    r = client_owner.post(url(qa), {"source": "file", "provider": str(provider.code)})
    assert "Choose a CSV or JSON Lines file" in r.text
    assert Run.objects.count() == 0


def test_launch_problems_are_shown_in_plain_words(client_owner, owner, qa, provider):
    provider.default_model = ""
    provider.save()
    r = client_owner.post(
        url(qa), {"source": "one", "input_topic": "Bees", "provider": str(provider.code)}
    )
    assert r.status_code == 200
    assert "Step 1 (subtopics): No model is chosen" in r.text
    assert Run.objects.count() == 0
    broken = create_pipeline(
        owner,
        PipelineSpec(
            steps=[
                StepSpec(name="a", prompt="{{topic}}", output_key="a"),
                StepSpec(name="b", prompt="{{nope}}", output_key="b"),
            ]
        ),
        name="Broken",
    )
    r = client_owner.get(url(broken))
    assert "The pipeline can't run yet" in r.text
    assert "Step 2 (b): “{{nope}}” is not made by any step before this one." in r.text
    assert 'id="launch-button"' not in r.text
    r = client_owner.post(
        url(broken), {"source": "one", "input_topic": "x", "provider": str(provider.code)}
    )
    assert Run.objects.count() == 0


def test_the_estimate():
    spec = library.get("qa-from-topics").spec
    est = estimate.estimate(spec, [{"topic": str(i)} for i in range(20)])
    assert est.chain == "20 topics → 100 subtopics → 100 questions → 100 answers"
    assert [s.calls for s in est.steps] == [20, 100, 100] and est.total == 220
    assert est.approximate
    spec = PipelineSpec(
        steps=[
            StepSpec(
                name="qs",
                prompt="Write questions about {{topic}} as a JSON list.",
                output_format="json_list",
                output_key="questions",
                callback=CallbackSpec(type="scatter", item_key="question"),
            ),
            StepSpec(
                name="answer",
                prompt="{{question}}",
                output_key="answer",
                callback=CallbackSpec(type="broadcast", n=3),
            ),
            StepSpec(
                name="judge",
                prompt="{{answer}}",
                output_key="verdict",
                callback=CallbackSpec(type="aggregate", group_by="topic", into="verdicts"),
            ),
            StepSpec(name="sum", prompt="{{verdicts}}", output_key="summary"),
        ]
    )
    inputs = [{"topic": "a"}, {"topic": "b"}, {"topic": "a"}]
    est = estimate.estimate(spec, inputs)
    assert [(s.calls, s.made) for s in est.steps] == [(3, 15), (15, 45), (45, 2), (2, 2)]
    assert "a guess" in est.steps[0].note and "3 copies" in est.steps[1].note
    assert est.chain == ("3 topics → 15 questions → 45 answers → 2 lists of verdicts → 2 summaries")
    assert estimate.items_asked("List {{n}} things, 12 of them, from 2020") == (12, True)
    assert estimate.items_asked("Give three examples") == (3, True)


def test_another_users_pipeline_is_404(client, qa, other_user, redis_client):
    client.force_login(other_user)
    assert client.get(url(qa)).status_code == 404
    assert client.post(url(qa), {"source": "one", "input_topic": "x"}).status_code == 404
    r = client.post(url(qa, "preview/"), {"file": csv_file("topic\na\n")}, **HX)
    assert r.status_code == 404
    assert Run.objects.count() == 0
