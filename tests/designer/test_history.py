"""Who did what and when, on the pages of the pipeline, the run and the record."""

import pytest
from django.urls import reverse

from designer import actions
from runner.models import Member, Provider, Record, Run
from runner.spec import library

from .test_runs import make_run

pytestmark = pytest.mark.django_db


def test_launching_cancelling_and_reviewing_show_in_the_history(
    client, owner, django_user_model, redis_client
):
    pipeline = actions.pipeline_from_template(owner, library.get("qa-from-topics"))
    provider = Provider.objects.create(
        owner=owner, name="local", base_url="http://127.0.0.1:9/v1", default_model="m"
    )
    editor = django_user_model.objects.create_user("eve", password="eve-pass-123")
    Member.objects.create(workspace=pipeline.workspace, user=editor, role="editor")
    client.force_login(editor)
    client.post(reverse("designer:pipeline-rename", args=[pipeline.code]), {"name": "QA, renamed"})
    client.post(
        reverse("designer:pipeline-launch", args=[pipeline.code]),
        {"source": "one", "input_topic": "Tides", "provider": str(provider.code)},
    )
    run = Run.objects.get()
    client.post(reverse("designer:run-cancel", args=[run.code]))

    page = client.get(reverse("designer:run-detail", args=[run.code])).content.decode()
    history = page[page.index('id="history"') :]
    assert "<strong>eve</strong> cancelled the run" in history
    assert "<strong>eve</strong> launched a run of version 2 on 1 input(s)" in history
    assert history.index("cancelled the run") < history.index("launched a run")  # newest first
    pipeline_page = client.get(
        reverse("designer:pipeline-detail", args=[pipeline.code])
    ).content.decode()
    assert "renamed it from “Questions and answers from topics” to “QA, renamed”" in pipeline_page
    assert "launched a run of version 2" in pipeline_page


def test_a_records_history_names_its_reviewers(client, owner, django_user_model):
    run = make_run(owner, topics=1, status=Run.COMPLETED)
    record = Record.objects.filter(run=run).first()
    client.force_login(owner)
    url = reverse("designer:record-review", args=[run.code, record.pk])
    client.post(url, {"action": "accept"})
    client.post(url, {"action": "rate", "rating": "4"})
    client.post(url, {"action": "reject"})
    page = client.get(
        reverse("designer:run-review", args=[run.code]) + f"?record={record.pk}"
    ).content.decode()
    shown = page[page.index('id="record-history"') :]
    order = [
        f"rejected record {record.pk}",
        f"rated record {record.pk} 4/5",
        f"accepted record {record.pk}",
    ]
    assert [shown.index(t) for t in order] == sorted(shown.index(t) for t in order)
    assert "History of this record (3)" in page
