"""`manage.py exportrun` from a terminal, as a user would type it, on the test database."""

import csv
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from runner.models import Record, Run

from ..conftest import ROOT, worker_env
from ..designer.test_export import make_pairs_run
from ..designer.test_runs import make_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def exportrun(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "manage.py", "exportrun", *map(str, args)],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_plain_jsonl_accepted_only_with_renamed_fields_and_a_card(owner, tmp_path):
    run = make_run(owner, topics=2, status=Run.COMPLETED)
    recs = list(Record.objects.filter(run=run).order_by("seq"))
    Record.objects.filter(pk__in=[recs[1].pk, recs[2].pk]).update(review=Record.ACCEPTED)
    out, card = tmp_path / "qa.jsonl", tmp_path / "README.md"
    res = exportrun(
        run.code,
        "--output",
        out,
        "--accepted-only",
        "--fields",
        "question:prompt,answer",
        "--no-meta",
        "--card",
        card,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"prompt": recs[1].data["question"], "answer": recs[1].data["answer"]},
        {"prompt": recs[2].data["question"], "answer": recs[2].data["answer"]},
    ]
    assert "Wrote 2 row(s)" in res.stderr
    text = card.read_text()
    assert "`qa.jsonl`: 2 rows" in text and "Accepted: 2, rejected: 0" in text
    assert "`question` as `prompt`" in text


def test_chat_parquet_and_preference_csv(owner, tmp_path):
    run = make_run(owner, topics=1, status=Run.COMPLETED)
    out = tmp_path / "sft.parquet"
    res = exportrun(run.code, "--output", out, "--format", "chat", "--no-meta")
    assert res.returncode == 0, res.stderr
    rows = pq.read_table(out).to_pylist()
    assert rows[0]["messages"] == [
        {"role": "user", "content": "What is Topic 0 sub 0?"},
        {"role": "assistant", "content": "It is Topic 0 sub 0."},
    ]

    pairs = make_pairs_run(owner, topics=2)
    out = tmp_path / "pairs.csv"
    res = exportrun(pairs.code, "--output", out, "--format", "preference", "--choose", "first")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("Q0?", "A0.0", "A0.1"),
        ("Q1?", "A1.0", "A1.1"),
    ]
    assert rows[0]["_meta_chosen_record"]


def test_wrong_arguments_say_what_to_fix(owner, tmp_path):
    run = make_run(owner, topics=1)
    res = exportrun("not-a-code", "--output", tmp_path / "x.jsonl")
    assert res.returncode == 2 and "no run has the code 'not-a-code'" in res.stderr
    res = exportrun(run.code, "--output", tmp_path / "x.txt")
    assert (
        res.returncode == 2 and "--output must end in one of .jsonl, .csv, .parquet" in res.stderr
    )
    res = exportrun(run.code, "--output", tmp_path / "x.jsonl", "--fields", "nope")
    assert res.returncode == 2 and "the records have no field 'nope'" in res.stderr
    assert not (tmp_path / "x.jsonl").exists()
