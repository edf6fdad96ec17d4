"""Review by quality: set-aside records hidden by default and counted, why each was set
aside and what a duplicate repeats, restore, filters and sorts on a judge's score and a
field's length, bulk actions on exactly the filtered records, and the judge's verdict."""

import re
from html import unescape

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runner.export import Export
from runner.models import Record, Run, Task
from runner.spec import PipelineSpec

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"

SPEC = {
    "name": "Questions, answered and judged",
    "steps": [
        {
            "name": "questions",
            "prompt": "Write questions about {{topic}} as a JSON list.",
            "output_format": "json_list",
            "output_key": "questions",
            "callback": {"type": "scatter", "item_key": "question"},
            "dedup": {"field": "question"},
        },
        {"name": "answer", "prompt": "Answer this: {{question}}", "output_key": "answer"},
        {
            "name": "judge",
            "judge": {
                "fields": ["question", "answer"],
                "criteria": [
                    {"key": "score", "description": "How helpful the answer is"},
                    {"key": "verdict", "scale": "pass_fail", "description": "Is it true?"},
                ],
            },
            "keep": [{"field": "score", "op": ">=", "value": "2"}],
            "dedup": {"field": "answer", "near": True},
        },
    ],
}

PAIR_SPEC = {
    "name": "Two answers, compared",
    "steps": [
        {"name": "answer_a", "prompt": "Answer: {{topic}}", "output_key": "answer_a"},
        {"name": "answer_b", "prompt": "Answer again: {{topic}}", "output_key": "answer_b"},
        {
            "name": "compare",
            "judge": {
                "pair": ["answer_a", "answer_b"],
                "criteria": [{"key": "helpful", "description": "How helpful"}],
            },
        },
    ],
}


def judged(question, answer, score, verdict="pass", rationale="Clear and right."):
    data = {"topic": "Volcanoes", "question": question, "answer": answer}
    if score is not None:
        data.update(score=score, verdict=verdict, rationale=rationale)
    return data


def quality_run(owner):
    """A run of SPEC, made by hand: five kept records (one edited, one with no score), two
    filtered out by the judge's filter, a duplicate question (of a task) and a near
    duplicate answer (of a record). Returns the run and its records by name."""
    now = timezone.now()
    run = Run.objects.create(
        owner=owner,
        name="Judged run",
        spec=PipelineSpec.load(SPEC).to_dict(),
        inputs=[{"topic": "Volcanoes"}],
        status=Run.RUNNING,
        started=now,
    )
    seed = Task.objects.create(
        run=run,
        step=0,
        key="in:0",
        seq="00000000",
        status=Task.DONE,
        context={"topic": "Volcanoes"},
    )
    questions = [
        Task.objects.create(
            run=run,
            step=1,
            key=f"t{seed.pk}.{i}",
            seq=f"00000000.{i:06d}",
            parent=seed,
            status=Task.DONE,
            context={"topic": "Volcanoes", "question": q},
        )
        for i, q in enumerate(["What is magma?", "Why is lava hot?", "What is ash?"])
    ]

    def record(name, under, n, data, **extra):
        seq = f"{questions[under].seq}.000000.{n:06d}"
        return Record.objects.create(run=run, key=name, seq=seq, data=data, **extra)

    recs = {
        "k1": record("k1", 0, 0, judged("What is magma?", "Molten rock.", 5, rationale=XSS)),
        "k2": record("k2", 0, 1, judged("What is magma?", "Rock that melted " * 5, 4)),
        "k3": record("k3", 1, 0, judged("Why is lava hot?", "It comes from deep down.", 2)),
        "k4": record(
            "k4",
            1,
            1,
            judged("Why is lava hot?", "Heat.", 4),
            edited=judged("Why is lava hot?", "Heat, I think.", 1, verdict="fail"),
        ),
        "k5": record("k5", 2, 0, judged("What is ash?", "Small bits of rock and glass.", None)),
        "f1": record(
            "f1",
            2,
            1,
            judged("What is ash?", "Dust.", 1, verdict="fail"),
            flag=Record.FILTERED,
            step=2,
            flag_reason="Filtered out: score is '1' (keep only score at least 2).",
        ),
        "f2": record(
            "f2",
            2,
            2,
            judged("What is ash?", "No idea.", 1, verdict="fail"),
            flag=Record.FILTERED,
            step=2,
            flag_reason="Filtered out: score is '1' (keep only score at least 2).",
        ),
        # the same question again, set aside before it was answered: it repeats a task
        "d1": Record.objects.create(
            run=run,
            key=f"t{seed.pk}.3",
            seq="00000000.000003",
            data={"topic": "Volcanoes", "question": "what is  MAGMA?"},
            flag=Record.DUPLICATE,
            step=0,
            duplicate_of=questions[0].key,
            flag_reason="Duplicate: its question repeats an earlier one.",
        ),
        # judged well, but its answer is nearly k1's: it repeats a record
        "n1": record(
            "n1",
            0,
            2,
            judged("What is magma?", "Molten rock!", 5),
            flag=Record.NEAR_DUPLICATE,
            step=2,
            duplicate_of="k1",
            flag_reason="Near duplicate: its answer is at least 85% like an earlier one.",
        ),
    }
    return run, recs


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def made(owner):
    return quality_run(owner)


def url(name, run, *args):
    return reverse(f"designer:{name}", args=[run.code, *args])


def text(page):
    """What a person reads: the page without tags, spaces folded."""
    body = page.content.decode() if hasattr(page, "content") else page
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split())


def shown(client, run, query=""):
    """The keys of the records the table shows, in order."""
    page = client.get(url("run-records", run) + query)
    assert page.status_code == 200
    return [row["record"].key for row in page.context["rows"]]


def reviewed(run, review):
    return set(Record.objects.filter(run=run, review=review).values_list("key", flat=True))


def test_the_list_shows_kept_records_and_counts_what_was_set_aside(owner_client, made):
    run, recs = made
    assert shown(owner_client, run) == ["k1", "k2", "k3", "k4", "k5"]
    page = owner_client.get(url("run-records", run))
    words = text(page)
    assert "0 of 5 reviewed" in words
    assert "Set aside: 2 filtered out · 1 duplicate · 1 near duplicate" in words
    html = page.content.decode()
    for flag in ("filtered", "duplicate", "near_duplicate"):
        assert f'href="{url("run-records", run)}?flag={flag}"' in html
    assert shown(owner_client, run, "?flag=filtered") == ["f1", "f2"]
    assert shown(owner_client, run, "?flag=duplicate") == [recs["d1"].key]
    assert shown(owner_client, run, "?flag=near_duplicate") == ["n1"]
    assert len(shown(owner_client, run, "?flag=set_aside")) == 4
    assert len(shown(owner_client, run, "?flag=all")) == 9
    # the review page counts the same, and walks kept records only
    review = owner_client.get(url("run-review", run))
    assert review.context["record"].key == "k1" and review.context["matching"] == 5
    assert "2 filtered out · 1 duplicate · 1 near duplicate" in text(review)


def test_a_set_aside_record_says_why_where_and_what_it_repeats(owner_client, made):
    run, recs = made
    filtered = text(owner_client.get(url("run-records", run) + "?flag=filtered"))
    assert "filtered out at step judge" in filtered
    assert "Filtered out: score is '1' (keep only score at least 2)." in filtered

    # a duplicate question repeats a task: the link lists the records made from it
    page = owner_client.get(url("run-records", run) + "?flag=duplicate")
    words = text(page)
    assert "duplicate at step questions" in words
    assert "Duplicate: its question repeats an earlier one." in words
    assert "Repeats task t" in words and "What is magma?" in words
    link = re.search(r'href="([^"]*from=[^"]*)"', page.content.decode()).group(1)
    assert shown(owner_client, run, "?" + unescape(link).split("?", 1)[1]) == ["k1", "k2", "n1"]
    card = owner_client.get(url("run-review", run) + f"?record={recs['d1'].pk}&flag=duplicate")
    assert "Records made from it: k1 , k2 , n1 (near duplicate) · list them" in text(card)

    # a near duplicate answer repeats a record: a link to it
    page = owner_client.get(url("run-records", run) + "?flag=near_duplicate")
    assert "Repeats record k1 : Molten rock." in text(page)
    assert f"?record={recs['k1'].pk}&amp;flag=all" in page.content.decode()


def test_restore_puts_a_record_back_and_the_counts_follow(owner_client, made):
    run, recs = made
    f1 = recs["f1"]
    response = owner_client.post(
        url("record-restore", run, f1.pk), {"filters": "flag=filtered", "back": "records"}
    )
    assert response.status_code == 302
    assert response["Location"] == url("run-records", run) + "?flag=filtered"
    f1.refresh_from_db()
    assert f1.flag == "" and f1.restored and f1.flag_reason.startswith("Filtered out")
    back = owner_client.get(response["Location"])
    assert "Restored f1: it counts among the run's records again." in text(back)
    assert [row["record"].key for row in back.context["rows"]] == ["f2"]
    page = owner_client.get(url("run-records", run))
    assert [row["record"].key for row in page.context["rows"]] == [
        "k1",
        "k2",
        "k3",
        "k4",
        "k5",
        "f1",
    ]
    words = text(page)
    assert "0 of 6 reviewed" in words and "1 filtered out" in words and "1 restored" in words
    row = re.search(rf'<tr data-record="{f1.pk}">.*?</tr>', page.content.decode(), re.S)
    assert "restored" in text(row.group(0)) and "Restore" not in text(row.group(0))
    assert len(list(Export(run).rows())) == 6  # the dataset has it again
    # from the one-record view: back to the same record, which now says restored
    response = owner_client.post(url("record-restore", run, recs["d1"].pk), {"filters": ""})
    card = owner_client.get(response["Location"])
    assert card.context["record"].key == recs["d1"].key and "restored" in text(card)


def test_filters_on_a_score_and_a_length_read_the_record_as_it_is_now(owner_client, made):
    run, _ = made
    assert shown(owner_client, run, "?num_field=score&min=4") == ["k1", "k2"]  # k4 edited to 1
    assert shown(owner_client, run, "?num_field=score&max=2") == ["k3", "k4"]
    assert shown(owner_client, run, "?num_field=score&min=2&max=4.5") == ["k2", "k3"]
    # set aside records only when asked
    assert shown(owner_client, run, "?num_field=score&min=4&flag=all") == ["k1", "k2", "n1"]
    assert shown(owner_client, run, "?num_field=score&min=4&flag=near_duplicate") == ["n1"]
    assert shown(owner_client, run, "?len_field=answer&min_len=50") == ["k2"]
    assert shown(owner_client, run, "?len_field=answer&max_len=14") == ["k1", "k4"]
    # with the existing filters
    assert shown(owner_client, run, "?num_field=score&min=4&q=molten") == ["k1"]
    assert shown(owner_client, run, "?num_field=score&max=4&status=edited") == ["k4"]


def test_sorts_by_score_and_length_and_the_one_record_view_walks_that_order(owner_client, made):
    run, recs = made
    q = "?num_field=score&sort=number_desc"
    assert shown(owner_client, run, q) == ["k1", "k2", "k3", "k4", "k5"]  # no score: last
    assert shown(owner_client, run, "?num_field=score&sort=number_asc") == [
        "k4",
        "k3",
        "k2",
        "k1",
        "k5",
    ]
    assert shown(owner_client, run, "?len_field=answer&sort=length_desc") == [
        "k2",
        "k5",
        "k3",
        "k4",
        "k1",
    ]
    assert shown(owner_client, run, "?len_field=answer&sort=length_asc&min_len=13") == [
        "k4",
        "k3",
        "k5",
        "k2",
    ]
    review = url("run-review", run)
    q = "?num_field=score&sort=number_asc"
    first = owner_client.get(review + q)
    assert first.context["record"].key == "k4" and first.context["position"] == 1
    walked, rec = ["k4"], first.context["record"]
    while True:
        page = owner_client.get(f"{review}{q}&after={rec.pk}")
        if page.context["record"] is None:
            break
        rec = page.context["record"]
        walked.append(rec.key)
    assert walked == ["k4", "k3", "k2", "k1", "k5"]
    back = owner_client.get(f"{review}{q}&before={recs['k1'].pk}")
    assert back.context["record"].key == "k2" and back.context["position"] == 3
    assert owner_client.get(f"{review}{q}&before={recs['k5'].pk}").context["record"].key == "k1"


def test_bulk_accept_confirms_the_count_and_changes_exactly_those(owner_client, made):
    run, recs = made
    records = url("run-records", run)
    page = owner_client.get(records + "?num_field=score&min=4")
    assert "Accept all 2 matching" in text(page) and "Reject all 2 matching" in text(page)
    confirm = owner_client.get(url("records-bulk", run) + "?num_field=score&min=4&action=accept")
    words = text(confirm)
    assert "Accept all 2 matching record(s)?" in words
    assert "The filter selects: kept records, score at least 4." in words
    assert "Yes, accept all 2" in words
    form = confirm.context
    post = {"filters": form["filter_query"], "action": "accept", "expected": "2"}
    response = owner_client.post(url("records-bulk", run), post)
    assert response.status_code == 302
    assert reviewed(run, Record.ACCEPTED) == {
        "k1",
        "k2",
    }  # not n1 (score 5, a near duplicate), not k4 (edited to 1)
    assert "Accepted 2 record(s)." in text(owner_client.get(response["Location"]))

    # the run made another matching record since the confirm page: nothing changes, count again
    Record.objects.filter(pk=recs["k3"].pk).update(data=judged("Why is lava hot?", "Deep heat.", 5))
    post = {"filters": "num_field=score&min=4", "action": "reject", "expected": "2"}
    again = owner_client.post(url("records-bulk", run), post)
    assert again.status_code == 200
    assert "The selection changed since you looked: 3 record(s) match now." in text(again)
    assert reviewed(run, Record.REJECTED) == set()
    post["expected"] = "3"
    owner_client.post(url("records-bulk", run), post)
    assert reviewed(run, Record.REJECTED) == {"k1", "k2", "k3"}

    # a filter with a bad value changes nothing (it would select more than meant)
    post = {"filters": "num_field=score&min=four", "action": "accept"}
    response = owner_client.post(url("records-bulk", run), post)
    assert "Nothing was changed" in text(owner_client.get(response["Location"]))
    assert reviewed(run, Record.ACCEPTED) == set()


@pytest.mark.parametrize(
    "query, problem",
    [
        ("?num_field=score&min=abc", "'abc' is not a number such as 4"),
        ("?num_field=score&max=inf", "'inf' is not a number such as 4"),
        ("?len_field=answer&min_len=-3", "'-3' is not a whole number of characters"),
        ("?len_field=answer&max_len=2.5", "'2.5' is not a whole number of characters"),
        ("?num_field=nope&min=3", "'nope' is not a field of these records"),
        ("?sort=number_desc", "choose the field whose number to use"),
        ("?flag=gone", "'gone' is not a choice for Show"),
        ("?sort=sideways", "'sideways' is not a choice for Sort"),
        ("?status=maybe", "'maybe' is not a choice for Review"),
        ("?rating=9", "'9' is not a choice for Rating"),
        ("?from=t999.9", "This run has no task or record 't999.9'"),
    ],
)
def test_a_bad_filter_value_is_said_in_plain_words(owner_client, made, query, problem):
    run, _ = made
    for name in ("run-records", "run-review"):
        page = owner_client.get(url(name, run) + query)
        assert page.status_code == 200
        assert problem in text(page)
    # the rest of the page still works: the bad filter is left out
    assert len(shown(owner_client, run, query)) >= 5 or "from" in query


def test_the_record_view_shows_the_judges_verdict_escaped(owner_client, made):
    run, recs = made
    page = owner_client.get(url("run-review", run) + f"?record={recs['k1'].pk}")
    html = page.content.decode()
    assert "<script>alert(1)" not in html
    verdict = html[html.index('<aside class="verdicts"') : html.index("</aside>")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in verdict
    words = text(verdict)
    assert "Judge: judge" in words and "score 5 / 5" in words and "verdict pass" in words
    edited = owner_client.get(url("run-review", run) + f"?record={recs['k4'].pk}")
    assert "score 1 / 5 verdict fail" in text(edited)  # the edit, as the record is now


def test_a_pairwise_verdict_shows_both_scores_and_the_preferred(owner_client, owner):
    run = Run.objects.create(
        owner=owner, spec=PipelineSpec.load(PAIR_SPEC).to_dict(), inputs=[{"topic": "Tides"}]
    )
    data = {
        "topic": "Tides",
        "answer_a": "The moon.",
        "answer_b": "The moon's pull on the oceans.",
        "helpful_a": 2,
        "helpful_b": 5,
        "preferred": "B",
        "chosen": "The moon's pull on the oceans.",
        "rejected": "The moon.",
        "rationale": "B explains <why>.",
    }
    rec = Record.objects.create(run=run, key="r1", seq="00000000.000000", data=data)
    page = owner_client.get(url("run-review", run) + f"?record={rec.pk}")
    html = page.content.decode()
    verdict = text(html[html.index('<aside class="verdicts"') : html.index("</aside>")])
    assert "Criterion A (answer_a) B (answer_b) helpful 2 / 5 5 / 5" in verdict
    assert "Preferred: B (answer_b)" in verdict
    assert "B explains <why>." in verdict and "&lt;why&gt;" in html


def test_another_user_gets_404_and_changes_nothing(client, other_user, made):
    run, recs = made
    client.force_login(other_user)
    f1 = recs["f1"]
    assert client.get(url("run-records", run) + "?flag=filtered").status_code == 404
    assert client.get(url("run-review", run) + f"?record={f1.pk}").status_code == 404
    assert client.get(url("records-bulk", run) + "?action=accept").status_code == 404
    assert client.post(url("record-restore", run, f1.pk), {}).status_code == 404
    post = {"filters": "flag=all", "action": "accept"}
    assert client.post(url("records-bulk", run), post).status_code == 404
    f1.refresh_from_db()
    assert f1.flag == Record.FILTERED and not f1.restored
    assert reviewed(run, Record.ACCEPTED) == set()


def test_restore_and_bulk_need_a_login_a_post_and_the_csrf_token(client, owner, made):
    run, recs = made
    restore = url("record-restore", run, recs["f1"].pk)
    response = client.post(restore, {})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(owner)
    assert client.get(restore).status_code == 405
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    assert client.post(restore, {}).status_code == 403  # no CSRF token
    bulk = {"filters": "flag=all", "action": "accept"}
    assert client.post(url("records-bulk", run), bulk).status_code == 403
    assert reviewed(run, Record.ACCEPTED) == set()
    recs["f1"].refresh_from_db()
    assert recs["f1"].flag == Record.FILTERED


def test_reasons_and_repeated_text_from_the_run_are_escaped(owner_client, made):
    run, recs = made
    Record.objects.filter(pk=recs["n1"].pk).update(flag_reason=f"Near duplicate: {XSS}")
    Record.objects.filter(pk=recs["k1"].pk).update(data=judged("What is magma?", XSS, 5))
    for name in ("run-records", "run-review"):
        page = owner_client.get(url(name, run) + "?flag=near_duplicate").content.decode()
        assert "<script>alert" not in page
        assert "Near duplicate: &lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert '<q class="repeated">&lt;script&gt;alert(1)&lt;/script&gt;</q>' in page
