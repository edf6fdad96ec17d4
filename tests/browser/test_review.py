"""Review with the keyboard and export from the page, in a real browser on the real stack."""

import csv
import io
import json

import pytest

from runner.models import Record, Run

from ..designer.test_review_quality import quality_run
from ..designer.test_runs import make_run
from .conftest import login

pytestmark = [pytest.mark.django_db(transaction=True)]


def logged_in(page, owner):
    login(page, owner.username, "owner-pass-123")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def shown_record(page):
    return int(page.locator("#record").get_attribute("data-record"))


def press(page, key):
    with page.expect_navigation():
        page.keyboard.press(key)


def test_review_with_the_keyboard_persists(page, owner):
    run = make_run(owner, topics=2)
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/review/")
    assert shown_record(page) == recs[0].pk
    assert "0 of 4 reviewed" in page.locator("#review-counter").inner_text()

    press(page, "a")  # accept, and on to the next record
    assert shown_record(page) == recs[1].pk
    press(page, "r")  # reject
    assert shown_record(page) == recs[2].pk
    assert "2 of 4 reviewed" in page.locator("#review-counter").inner_text()
    press(page, "4")  # rate, and stay
    assert shown_record(page) == recs[2].pk
    assert page.locator("#rating-state").inner_text() == "rated 4/5"

    page.keyboard.press("e")  # edit
    answer = page.locator('textarea[name="field:answer"]')
    answer.wait_for(state="visible")
    answer.fill("A hand-written answer.")
    with page.expect_navigation():
        answer.press("Control+Enter")
    assert page.locator('[data-field="answer"] pre.value').inner_text() == "A hand-written answer."

    press(page, "k")  # back to the previous record
    assert shown_record(page) == recs[1].pk
    press(page, "ArrowRight")
    assert shown_record(page) == recs[2].pk

    for rec in recs:
        rec.refresh_from_db()
    assert [r.review for r in recs] == ["accepted", "rejected", "unreviewed", "unreviewed"]
    assert recs[2].rating == 4
    assert recs[2].edited["answer"] == "A hand-written answer."
    assert recs[2].data["answer"] == "It is Topic 1 sub 0."  # the original is kept
    assert page.console_errors == []


def test_export_downloaded_from_the_page_has_the_rows_and_fields(page, owner):
    run = make_run(owner, topics=2)
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    Record.objects.filter(pk__in=[recs[0].pk, recs[2].pk]).update(review=Record.ACCEPTED)
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/export/")
    page.check('input[name="type"][value="csv"]')
    page.check('input[name="records"][value="accepted"]')
    page.uncheck('input[name="field"][value="topic"]')
    page.uncheck('input[name="field"][value="subtopic"]')
    page.uncheck('input[name="meta"]')
    page.fill('input[name="rename:question"]', "prompt")
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(open(download.path(), encoding="utf-8").read())))
    assert [list(r) for r in rows] == [["prompt", "answer"], ["prompt", "answer"]]
    assert [r["prompt"] for r in rows] == [recs[0].data["question"], recs[2].data["question"]]

    page.goto(f"/runs/{run.code}/export/")
    page.check('input[name="shape"][value="chat"]')
    with page.expect_download() as info:
        page.click("#download")
    lines = open(info.value.path(), encoding="utf-8").read().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 4
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    assert rows[0]["messages"][1]["content"] == recs[0].data["answer"]
    assert page.console_errors == []


def test_restore_a_filtered_out_record_and_the_counts_follow(page, owner):
    run, recs = quality_run(owner)
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/review/")
    counts = page.locator("#aside-counts")
    assert "2 filtered out" in counts.inner_text()
    assert "0 of 5 reviewed" in page.locator("#review-counter").inner_text()
    assert shown_record(page) == recs["k1"].pk  # kept records first

    page.select_option('select[name="flag"]', "filtered")
    with page.expect_navigation():
        page.get_by_role("button", name="Filter").click()
    assert shown_record(page) == recs["f1"].pk
    note = page.locator(".aside-note")
    assert "Filtered out: score is '1' (keep only score at least 2)." in note.inner_text()
    assert "at step judge" in note.inner_text()

    with page.expect_navigation():
        note.get_by_role("button", name="Restore").click()
    assert shown_record(page) == recs["f1"].pk
    assert "restored" in page.locator(".aside-note").inner_text()
    assert page.locator(".aside-note button.restore").count() == 0
    assert "1 filtered out" in counts.inner_text() and "1 restored" in counts.inner_text()
    assert "0 of 6 reviewed" in page.locator("#review-counter").inner_text()

    with page.expect_navigation():
        counts.get_by_role("link", name="1 filtered out").click()
    rows = page.locator("tr[data-record]")
    assert rows.count() == 1 and rows.get_attribute("data-record") == str(recs["f2"].pk)
    recs["f1"].refresh_from_db()
    assert recs["f1"].flag == "" and recs["f1"].restored
    assert page.console_errors == []


def test_the_e_key_opens_the_edit_form_at_the_last_field(page, owner):
    run = make_run(owner, topics=1, status=Run.COMPLETED)
    login(page, owner.username, "owner-pass-123")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/runs/{run.code}/review/")
    page.wait_for_selector("#record")
    page.keyboard.press("e")
    focused = page.evaluate("() => document.activeElement.name")
    last = page.locator("#edit-form textarea").last.get_attribute("name")
    assert focused == last == "field:answer"
    assert page.console_errors == []
