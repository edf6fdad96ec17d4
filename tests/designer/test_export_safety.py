"""Exports are safe to open: formulas are neutralised in CSV only; an empty export says why."""

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils.html import escape

from runner import export
from runner.models import Record

from .test_export import make_pairs_run
from .test_runs import make_run

pytestmark = pytest.mark.django_db

FORMULAS = [
    '=HYPERLINK("http://evil.example","click")',
    "@SUM(1+1)",
    "+1+1",
    "-2+3",
    "\tTAB",
    "\rCR",
]
SAFE = ["plain answer", "1 = 1", "a@b.example", "[1, 2]"]


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def formula_run(owner):
    run = make_run(owner, topics=5)
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    for rec, answer in zip(recs, FORMULAS + SAFE, strict=False):
        Record.objects.filter(pk=rec.pk).update(data={**rec.data, "answer": answer})
    return run


def get(client, run, **params):
    url = reverse("designer:run-export-download", args=[run.code])
    response = client.get(url, params)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def test_csv_cells_that_start_like_a_formula_get_a_quote_in_front(owner_client, formula_run):
    _, body = get(owner_client, formula_run, type="csv", field=["answer"])
    cells = [row["answer"] for row in csv.DictReader(io.StringIO(body.decode(), newline=""))]
    assert cells == ["'" + f for f in FORMULAS] + SAFE


def test_jsonl_and_parquet_keep_the_exact_text(owner_client, formula_run):
    _, body = get(owner_client, formula_run, type="jsonl", field=["answer"])
    assert [json.loads(line)["answer"] for line in body.decode().splitlines()] == FORMULAS + SAFE
    _, body = get(owner_client, formula_run, type="parquet", field=["answer"])
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert [r["answer"] for r in rows] == FORMULAS + SAFE


def test_the_command_line_csv_exports_are_neutralised_too(formula_run, tmp_path):
    out = tmp_path / "qa.csv"
    call_command("exportrun", str(formula_run.code), "--output", str(out), stderr=io.StringIO())
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode(), newline="")))
    assert rows[0]["answer"] == "'" + FORMULAS[0] and rows[6]["answer"] == SAFE[0]
    # runpipeline --output x.csv writes through the same writer
    out = tmp_path / "records.csv"
    assert export.write_records(formula_run, out) == 10
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode(), newline="")))
    assert [r["answer"] for r in rows] == ["'" + f for f in FORMULAS] + SAFE


PREFERENCE = {
    "type": "jsonl",
    "shape": "preference",
    "prompt_field": "question",
    "answer_field": "answer",
    "choose": "rating",
}


def test_a_preference_export_without_pairs_explains_why_on_the_page(owner_client, owner):
    run = make_pairs_run(owner, topics=2)  # two answers per question, none rated
    response, body = get(owner_client, run, **PREFERENCE)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")  # the export page, not a file
    assert "Content-Disposition" not in response
    page = body.decode()
    assert 'id="export-problems"' in page
    assert escape("No prompt has two answers with different ratings: rate the answers") in page
    for package in ("data", "zip"):
        response, _ = get(owner_client, run, **{**PREFERENCE, "package": package, "type": "csv"})
        assert "Content-Disposition" not in response
    # with ratings that differ, the same export is a file
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    Record.objects.filter(pk=recs[0].pk).update(rating=5)
    Record.objects.filter(pk=recs[1].pk).update(rating=1)
    response, body = get(owner_client, run, **PREFERENCE)
    assert response["Content-Disposition"].endswith('.jsonl"')
    assert [json.loads(line)["chosen"] for line in body.decode().splitlines()] == ["A0.0"]


def test_a_preference_export_without_pairs_is_a_clear_error_from_the_command_line(owner, tmp_path):
    run = make_pairs_run(owner, topics=2)
    out = tmp_path / "pairs.jsonl"
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command(
            "exportrun",
            str(run.code),
            "--output",
            str(out),
            "--format",
            "preference",
            "--choose",
            "review",
            stderr=err,
        )
    assert exc.value.code == 2
    assert "No prompt has one accepted and one rejected answer" in err.getvalue()
    assert not out.exists()


def test_other_empty_exports_say_why(owner_client, owner):
    run = make_run(owner, topics=1)
    response, body = get(owner_client, run, type="csv", field=["answer"], records="accepted")
    assert "Content-Disposition" not in response
    assert "No record of this run is accepted yet" in body.decode()
    Record.objects.filter(run=run).delete()
    response, body = get(owner_client, run, type="jsonl", field=["answer"])
    assert "This run has no records yet, so there is nothing to export." in body.decode()
