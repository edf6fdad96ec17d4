"""Review: the records table, the one-record view, accept/reject/rate/edit, bulk actions."""

import pytest
from django.urls import reverse

from runner.models import Record, Run, Task

from .test_runs import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def records(run):
    return list(Record.objects.filter(run=run).order_by("seq"))


def test_records_table_shows_fields_as_columns_with_lineage_to_the_seed(owner_client, owner):
    run = make_run(owner, topics=2)
    response = owner_client.get(reverse("designer:run-records", args=[run.code]))
    page = response.content.decode()
    assert response.context["columns"] == ["topic", "subtopic", "question", "answer"]
    for col in ("<th>topic</th>", "<th>subtopic</th>", "<th>question</th>", "<th>answer</th>"):
        assert col in page
    assert page.count('<tr data-record="') == 4
    assert "It is Topic 1 sub 1." in page
    rec = records(run)[0]
    seed = Task.objects.get(run=run, step=0, context__topic="Topic 0")
    question = rec.task.parent
    # lineage: subtopics #seed -> question #.. -> answer #..
    assert f"subtopics #{seed.pk}</a> &rarr; " in page
    assert f"question #{question.pk}</a>" in page and f"answer #{rec.task_id}</a>" in page
    assert "0 of 4 reviewed" in " ".join(
        page.replace('<span data-bind="reviewed">', "")
        .replace('<span data-bind="records">', "")
        .replace("</span>", "")
        .split()
    )


def test_records_table_pages_and_keeps_queries_bounded(
    owner_client, owner, django_assert_max_num_queries
):
    run = make_run(owner, topics=30)  # 60 records
    url = reverse("designer:run-records", args=[run.code])
    with django_assert_max_num_queries(10):  # the header's workspaces, the review plan
        page = owner_client.get(url).content.decode()
    assert page.count('<tr data-record="') == 50
    assert "page 1 of 2 (60 in all)" in page
    page = owner_client.get(url + "?page=2").content.decode()
    assert page.count('<tr data-record="') == 10


def test_filters_by_status_rating_step_and_text(owner_client, owner):
    run = make_run(owner, topics=3)
    recs = records(run)
    Record.objects.filter(pk=recs[0].pk).update(review=Record.ACCEPTED, rating=5)
    Record.objects.filter(pk=recs[1].pk).update(review=Record.REJECTED, rating=2)
    Record.objects.filter(pk=recs[2].pk).update(edited={**recs[2].data, "answer": "Changed"})
    url = reverse("designer:run-records", args=[run.code])

    def shown(query):
        return owner_client.get(url + query).content.decode().count('<tr data-record="')

    assert shown("") == 6
    assert shown("?status=accepted") == 1
    assert shown("?status=rejected") == 1
    assert shown("?status=unreviewed") == 4
    assert shown("?status=edited") == 1
    assert shown("?rating=5") == 1 and shown("?rating=rated") == 2 and shown("?rating=unrated") == 4
    assert shown("?q=Topic+2") == 2
    assert shown("?q=changed") == 1  # the edited text is searched
    # "Topic 1" is in every field of topic 1's records; in the question step only those two
    assert shown("?q=sub+1&step=1") == 3
    assert shown("?q=It+is&step=1") == 0  # the answer text is not in the questions
    assert shown("?q=It+is&step=2") == 5


def test_accept_and_reject_move_to_the_next_record_and_persist(owner_client, owner):
    run = make_run(owner, topics=2)
    first, second, third = records(run)[:3]
    url = reverse("designer:record-review", args=[run.code, first.pk])
    response = owner_client.post(url, {"action": "accept", "filters": "status=unreviewed"})
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.review == Record.ACCEPTED
    # the next record matching the same filter
    page = owner_client.get(response["Location"])
    assert page.context["record"].pk == second.pk
    assert "1 of 4 reviewed" in " ".join(
        page.content.decode()
        .replace('<span data-bind="reviewed">', "")
        .replace('<span data-bind="records">', "")
        .replace("</span>", "")
        .split()
    )
    response = owner_client.post(
        reverse("designer:record-review", args=[run.code, second.pk]),
        {"action": "reject", "filters": "status=unreviewed"},
    )
    second.refresh_from_db()
    assert second.review == Record.REJECTED
    assert owner_client.get(response["Location"]).context["record"].pk == third.pk


def test_rating_stays_on_the_record_and_can_be_cleared(owner_client, owner):
    run = make_run(owner, topics=1)
    rec = records(run)[0]
    url = reverse("designer:record-review", args=[run.code, rec.pk])
    response = owner_client.post(url, {"action": "rate", "rating": "4"})
    rec.refresh_from_db()
    assert rec.rating == 4
    assert owner_client.get(response["Location"]).context["record"].pk == rec.pk
    owner_client.post(url, {"action": "rate", "rating": "9"})
    rec.refresh_from_db()
    assert rec.rating == 4  # refused
    owner_client.post(url, {"action": "rate", "rating": "0"})
    rec.refresh_from_db()
    assert rec.rating is None


def test_edit_keeps_the_original_and_shows_both(owner_client, owner):
    run = make_run(owner, topics=1)
    rec = records(run)[0]
    original = dict(rec.data)
    url = reverse("designer:record-edit", args=[run.code, rec.pk])
    owner_client.post(
        url,
        {
            "field:answer": "A better answer.",
            "field:question": original["question"],
            "field:topic": original["topic"],
            "field:subtopic": original["subtopic"],
        },
    )
    rec.refresh_from_db()
    assert rec.data == original
    assert rec.edited == {**original, "answer": "A better answer."}
    page = owner_client.get(
        reverse("designer:run-review", args=[run.code]) + f"?record={rec.pk}"
    ).content.decode()
    assert "A better answer." in page and original["answer"] in page
    assert 'class="badge edited"' in page
    # the export uses the edited text
    from runner.export import Export

    assert next(Export(run).rows())["answer"] == "A better answer."
    owner_client.post(url, {"action": "restore"})
    rec.refresh_from_db()
    assert rec.edited is None and rec.data == original


def test_edit_of_a_json_field_must_stay_json(owner_client, owner):
    run = make_run(owner, topics=1)
    rec = records(run)[0]
    Record.objects.filter(pk=rec.pk).update(data={**rec.data, "tags": ["a", "b"]})
    url = reverse("designer:record-edit", args=[run.code, rec.pk])
    response = owner_client.post(url, {"field:tags": '["a", "b",]'})
    assert response.status_code == 200
    page = response.content.decode()
    assert "“tags” must stay JSON like the original, and it is not: line 1, character 11" in page
    assert "a value was expected (is one missing, or is there a comma too many?)" in page
    assert "Expecting" not in page  # not Python's own words
    rec.refresh_from_db()
    assert rec.edited is None
    owner_client.post(url, {"field:tags": '["a", "c"]'})
    rec.refresh_from_db()
    assert rec.edited["tags"] == ["a", "c"] and rec.data["tags"] == ["a", "b"]


def test_bulk_accept_changes_only_the_filtered_selection(owner_client, owner):
    run = make_run(owner, topics=3)
    other = make_run(owner, topics=1)
    url = reverse("designer:records-bulk", args=[run.code])
    response = owner_client.post(url, {"action": "accept", "filters": "q=Topic+1"})
    assert response.status_code == 302 and "q=Topic+1" in response["Location"]
    accepted = Record.objects.filter(run=run, review=Record.ACCEPTED)
    assert accepted.count() == 2
    assert all(r.data["topic"] == "Topic 1" for r in accepted)
    assert not Record.objects.filter(run=other).exclude(review=Record.UNREVIEWED).exists()
    owner_client.post(url, {"action": "reject", "filters": "q=Topic+2+sub+0&step=1"})
    rejected = Record.objects.get(run=run, review=Record.REJECTED)
    assert rejected.data["subtopic"] == "Topic 2 sub 0"
    owner_client.post(url, {"action": "reject", "filters": "status=unreviewed"})
    assert Record.objects.filter(run=run, review=Record.REJECTED).count() == 4
    assert Record.objects.filter(run=run, review=Record.ACCEPTED).count() == 2


def test_one_record_view_walks_records_and_sees_new_ones_while_the_run_goes(owner_client, owner):
    run = make_run(owner, topics=1)
    first, second = records(run)
    url = reverse("designer:run-review", args=[run.code])
    response = owner_client.get(url)
    assert response.context["record"].pk == first.pk
    assert response.context["position"] == 1 and response.context["matching"] == 2
    nxt = owner_client.get(url + f"?after={first.pk}")
    assert nxt.context["record"].pk == second.pk
    assert owner_client.get(url + f"?before={second.pk}").context["record"].pk == first.pk
    end = owner_client.get(url + f"?after={second.pk}")
    assert end.context["record"] is None
    assert "Records appear here while the run is still going" in end.content.decode()
    # the run makes another record: the same "next" now finds it
    task = second.task
    Record.objects.create(
        run=run, task=task, key="late", seq=second.seq + "z", data={"topic": "Late"}
    )
    assert owner_client.get(url + f"?after={second.pk}").context["record"].key == "late"
    assert Run.objects.get(pk=run.pk).status == Run.RUNNING


def test_review_page_has_keyboard_targets(owner_client, owner):
    run = make_run(owner, topics=1)
    page = owner_client.get(reverse("designer:run-review", args=[run.code])).content.decode()
    for key in ("a", "r", "u", "1", "5", "e", "j", "k"):
        assert f'data-key="{key}"' in page
    assert "js/review.js" in page
