"""Export from the run's page: JSONL, CSV and Parquet; plain, chat and preference rows;
chosen and renamed fields; accepted only; the dataset card; a .zip of both."""

import csv
import io
import json
import os
import zipfile
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from django.urls import reverse
from django.utils import timezone

from runner.export import formats as export
from runner.models import Record, Run, Task
from runner.spec.builder import PipelineBuilder, Step

from .test_runs import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def download(client, run, **params):
    url = reverse("designer:run-export-download", args=[run.code])
    query = []
    for k, v in params.items():
        for item in v if isinstance(v, list) else [v]:
            query.append((k.replace("__", ":"), item))
    response = client.get(url, query)
    assert response.status_code == 200, response.content[:2000]
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


def jsonl(body):
    return [json.loads(line) for line in body.decode().splitlines()]


def make_pairs_run(owner, topics=3):
    """question (broadcast 2) -> answer: two answers per question, as records."""
    p = PipelineBuilder("Two answers", "Each question answered twice.")
    (
        p
        << Step(
            "Write a question about {{topic}}", name="question", output_key="question"
        ).broadcast(2)
        << Step("Answer: {{question}}", name="answer", output_key="answer")
    )
    spec = p.build()
    now = timezone.now()
    run = Run.objects.create(
        owner=owner,
        name="Pairs",
        spec=spec.to_dict(),
        status=Run.COMPLETED,
        started=now - timedelta(seconds=5),
        finished=now,
    )
    for i in range(topics):
        q = Task.objects.create(
            run=run,
            step=0,
            key=f"in:{i}",
            seq=f"{i:08d}",
            status=Task.DONE,
            context={"topic": f"T{i}"},
            parsed=f"Q{i}?",
            model="fake-model",
            tokens_in=5,
            tokens_out=3,
            finished=now,
        )
        for v in range(2):
            ctx = {"topic": f"T{i}", "question": f"Q{i}?"}
            a = Task.objects.create(
                run=run,
                step=1,
                key=f"t{q.pk}.{v}",
                seq=f"{i:08d}.{v:06d}",
                parent=q,
                variant=v,
                status=Task.DONE,
                context=ctx,
                parsed=f"A{i}.{v}",
                model="answer-model",
                finished=now,
            )
            Record.objects.create(
                run=run,
                task=a,
                key=f"t{a.pk}.0",
                seq=f"{i:08d}.{v:06d}.000000",
                data={**ctx, "answer": f"A{i}.{v}"},
            )
    return run


def test_jsonl_of_all_records_with_meta(owner_client, owner):
    run = make_run(owner, topics=2)
    response, body = download(
        owner_client, run, type="jsonl", field=["topic", "subtopic", "question", "answer"], meta="1"
    )
    assert response.streaming
    assert response["Content-Disposition"].endswith('.jsonl"')
    rows = jsonl(body)
    assert len(rows) == 4
    assert set(rows[0]) == {"topic", "subtopic", "question", "answer", "_meta"}
    assert rows[0]["_meta"]["run"] == str(run.code) and rows[0]["_meta"]["review"] == "unreviewed"
    assert [r["topic"] for r in rows] == ["Topic 0", "Topic 0", "Topic 1", "Topic 1"]


def test_csv_of_accepted_records_with_chosen_and_renamed_fields(owner_client, owner):
    run = make_run(owner, topics=2)
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    Record.objects.filter(pk__in=[recs[0].pk, recs[3].pk]).update(review=Record.ACCEPTED)
    Record.objects.filter(pk=recs[3].pk).update(edited={**recs[3].data, "answer": "Edited!"})
    _, body = download(
        owner_client,
        run,
        type="csv",
        records="accepted",
        field=["question", "answer"],
        rename__question="prompt",
        rename__answer="response",
    )
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert len(rows) == 2
    assert list(rows[0]) == ["prompt", "response"]
    assert rows[0]["prompt"] == recs[0].data["question"]
    assert rows[1]["response"] == "Edited!"


def test_parquet_plain_and_chat(owner_client, owner):
    run = make_run(owner, topics=2)
    _, body = download(owner_client, run, type="parquet", field=["topic", "answer"], meta="1")
    table = pq.read_table(io.BytesIO(body))
    assert table.num_rows == 4
    assert table.column_names[:2] == ["topic", "answer"]
    assert "_meta_review" in table.column_names
    _, body = download(
        owner_client,
        run,
        type="parquet",
        shape="chat",
        prompt_field="question",
        answer_field="answer",
        system="Be brief.",
        field="topic",
    )
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert len(rows) == 4
    assert rows[0] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is Topic 0 sub 0?"},
            {"role": "assistant", "content": "It is Topic 0 sub 0."},
        ]
    }


def test_chat_jsonl_shape(owner_client, owner):
    run = make_run(owner, topics=1)
    _, body = download(
        owner_client,
        run,
        type="jsonl",
        shape="chat",
        prompt_field="question",
        answer_field="answer",
        field="topic",
    )
    rows = jsonl(body)
    assert len(rows) == 2
    assert rows[1] == {
        "messages": [
            {"role": "user", "content": "What is Topic 0 sub 1?"},
            {"role": "assistant", "content": "It is Topic 0 sub 1."},
        ]
    }


def test_preference_pairs_by_rating_first_and_review(owner_client, owner):
    run = make_pairs_run(owner, topics=3)
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    # T0: second answer rated higher; T1: a tie (no pair by rating); T2: first rated higher
    for rec, rating in zip(recs, [2, 5, 3, 3, 4, 1], strict=True):
        Record.objects.filter(pk=rec.pk).update(rating=rating)
    common = {"type": "jsonl", "shape": "preference", "field": "topic"}
    common |= {"prompt_field": "question", "answer_field": "answer"}
    _, body = download(owner_client, run, choose="rating", **common)
    assert jsonl(body) == [
        {"prompt": "Q0?", "chosen": "A0.1", "rejected": "A0.0"},
        {"prompt": "Q2?", "chosen": "A2.0", "rejected": "A2.1"},
    ]
    _, body = download(owner_client, run, choose="first", **common)
    rows = jsonl(body)
    assert len(rows) == 3 and rows[1] == {"prompt": "Q1?", "chosen": "A1.0", "rejected": "A1.1"}
    Record.objects.filter(pk=recs[2].pk).update(review=Record.REJECTED)
    Record.objects.filter(pk=recs[3].pk).update(review=Record.ACCEPTED)
    _, body = download(owner_client, run, choose="review", **common)
    assert jsonl(body) == [{"prompt": "Q1?", "chosen": "A1.1", "rejected": "A1.0"}]


def test_dataset_card_alone_and_in_a_zip(owner_client, owner):
    run = make_run(owner, topics=2, status=Run.COMPLETED)
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    Record.objects.filter(pk=recs[0].pk).update(review=Record.ACCEPTED, rating=4)
    Record.objects.filter(pk=recs[1].pk).update(review=Record.REJECTED, rating=2)
    response, body = download(owner_client, run, type="jsonl", package="card", field="answer")
    card = body.decode()
    assert response["Content-Disposition"].endswith('README.md"')
    assert "# QA run" in card
    assert "Questions and answers from topics" in card  # the pipeline
    assert "fake-model" in card  # the models
    assert "| answer | 4 | 0 |" in card  # counts per step
    assert "Accepted: 1, rejected: 1, not reviewed: 2." in card
    assert "average 3.00" in card
    assert "Cost" in card
    assert '"output_key": "subtopics"' in card  # the spec
    assert "4 rows" in card

    response, body = download(
        owner_client, run, type="csv", package="zip", records="accepted", field="answer"
    )
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert sorted(zf.namelist()) == ["README.md", "data.csv"]
        rows = list(csv.DictReader(io.StringIO(zf.read("data.csv").decode())))
        readme = zf.read("README.md").decode()
    assert [r["answer"] for r in rows] == [recs[0].data["answer"]]
    assert "`data.csv`: 1 rows" in readme and "accepted in review only" in readme


def test_bad_options_show_the_form_with_what_to_fix(owner_client, owner):
    run = make_run(owner, topics=1)
    url = reverse("designer:run-export-download", args=[run.code])
    page = owner_client.get(url, {"type": "jsonl"}).content.decode()
    assert "choose at least one field to export" in page
    page = owner_client.get(
        url, {"type": "jsonl", "field": ["question", "answer"], "rename:answer": "question"}
    ).content.decode()
    assert "two fields would both be called" in page
    page = owner_client.get(
        url, {"type": "jsonl", "shape": "chat", "prompt_field": "nope", "answer_field": "answer"}
    ).content.decode()
    assert "the records have no field &#x27;nope&#x27;" in page


def test_export_page_offers_fields_and_defaults(owner_client, owner):
    run = make_run(owner, topics=1)
    page = owner_client.get(reverse("designer:run-export", args=[run.code])).content.decode()
    for key in ("topic", "subtopic", "question", "answer"):
        assert f'name="field" value="{key}"' in page
    assert '<option value="question" selected>' in page  # the prompt field guess
    assert '<option value="answer" selected>' in page


def test_rows_are_read_in_batches_not_all_at_once(owner, monkeypatch, tmp_path):
    run = make_run(owner, topics=5)  # 10 records
    monkeypatch.setattr(export, "BATCH", 3)
    out = tmp_path / "all.jsonl"
    assert export.write_records(run, out) == 10
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["_meta"]["record"] for r in rows}) == 10
    seqs = [Record.objects.get(run=run, key=r["_meta"]["record"]).seq for r in rows]
    assert seqs == sorted(seqs)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_exports_stream_in_many_chunks_plain_and_zipped(owner, monkeypatch, kind):
    run = make_run(owner, topics=20)  # 40 records
    for rec in Record.objects.filter(run=run):  # text that does not compress away in the zip
        rec.data["answer"] = os.urandom(2000).hex()
        rec.save()
    monkeypatch.setattr(export, "BATCH", 5)
    monkeypatch.setattr(export, "CHUNK_BYTES", 200)
    job = export.Export(run, export.Options(meta=False))
    parts = list(job.chunks(kind))
    assert len([p for p in parts if p]) > 3  # written as it goes, not at the end
    data = b"".join(parts)
    if kind == "parquet":
        assert pq.read_table(io.BytesIO(data)).num_rows == 40
    else:
        assert len(data.decode().splitlines()) == 40 + (kind == "csv")
    parts = list(export.Export(run, export.Options(meta=False)).zip_chunks(kind))
    assert len([p for p in parts if p]) > 3
    with zipfile.ZipFile(io.BytesIO(b"".join(parts))) as zf:
        inner = zf.read(f"data.{kind}")
        assert "40 rows" in zf.read("README.md").decode()
    if kind == "parquet":
        assert pq.read_table(io.BytesIO(inner)).num_rows == 40
    else:
        assert inner == data
