"""`manage.py runpipeline` from a terminal while a worker runs, as a user would type it."""

import csv
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from runner.spec.quality import distinct_n, normalized

from ..conftest import ROOT, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def runpipeline(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "manage.py", "runpipeline", *map(str, args)],
        cwd=ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_template_with_one_input_writes_jsonl(worker, fake_llm, tmp_path):
    out = tmp_path / "qa.jsonl"
    res = runpipeline(
        "qa-from-topics",
        "--input",
        "topic=Solar energy",
        "--base-url",
        fake_llm.url,
        "--model",
        "fake-model",
        "--api-key",
        "sk-abc",
        "--output",
        out,
        "--summary",
        tmp_path / "summary.json",
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "status: completed"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["error"] == ""
    assert summary["records"] == 5
    assert summary["tasks"] == {"done": 11, "failed": 0, "cancelled": 0}
    assert summary["calls"] == {"made": 11, "from_cache": 0, "retried": 0, "lost": 0}
    assert fake_llm.stats()["total"] == 11
    assert summary["tokens"]["in"] > 0 and summary["tokens"]["out"] > 0
    assert summary["failures"] == [] and summary["wall_s"] > 0
    assert set(summary) == {
        "run",
        "status",
        "error",
        "records",
        "tasks",
        "calls",
        "tokens",
        "cost",
        "failures",
        "wall_s",
        "quality",
    }
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5
    # The quality block measures each field a record has of its own (the topic is shared).
    fields = summary["quality"]["fields"]
    assert set(fields) == {"subtopic", "question", "answer"}
    for key, measured in fields.items():
        texts = [row[key] for row in rows]
        assert measured["records"] == 5
        assert measured["distinct_1"] == distinct_n(texts, 1)
        assert measured["distinct_2"] == distinct_n(texts, 2)
        assert measured["duplicates"] == 5 - len({normalized(t) for t in texts})
        assert measured["near_duplicates"] >= 0
    assert summary["quality"]["judges"] == {} and summary["quality"]["dedup"] == []
    for row in rows:
        assert row["topic"] == "Solar energy"
        assert row["subtopic"] and row["question"] and row["answer"]
        assert set(row) == {"topic", "subtopic", "question", "answer", "_meta"}
    assert "Wrote 5 record(s)" in res.stderr
    assert "answer" in res.stderr  # a progress bar per step


def test_inputs_file_csv_and_parquet_outputs(worker, fake_llm, tmp_path):
    topics = tmp_path / "topics.csv"
    topics.write_text("topic,level\nTea,beginner\nRain,expert\n")
    out = tmp_path / "qa.csv"
    res = runpipeline(
        "qa-from-topics",
        "--inputs",
        topics,
        "--base-url",
        fake_llm.url,
        "--model",
        "m",
        "--output",
        out,
        "--concurrency",
        "5",
    )
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10
    assert {r["topic"] for r in rows} == {"Tea", "Rain"}
    assert {r["level"] for r in rows} == {"beginner", "expert"}  # extra input keys ride along

    spec = tmp_path / "spec.json"
    from runner.spec import library

    spec.write_text(library.get("instruction-variations").spec.to_json())
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"instruction": "Write a haiku"}\n')
    out = tmp_path / "out.parquet"
    res = runpipeline(
        spec, "--inputs", jsonl, "--base-url", fake_llm.url, "--model", "m", "--output", out
    )
    assert res.returncode == 0, res.stderr
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert {"instruction", "variation", "output"} <= set(table.column_names)


def test_some_tasks_failing_exits_1_with_reasons_and_records(worker, fake_llm, tmp_path):
    fake_llm.configure(never_json_for=["Volcanoes"])
    out = tmp_path / "qa.jsonl"
    inputs = tmp_path / "t.jsonl"
    inputs.write_text('{"topic": "Tea"}\n{"topic": "Volcanoes"}\n')
    res = runpipeline(
        "qa-from-topics",
        "--inputs",
        inputs,
        "--base-url",
        fake_llm.url,
        "--model",
        "m",
        "--output",
        out,
        "--summary",
        tmp_path / "summary.json",
    )
    assert res.returncode == 1, res.stderr
    assert "1 task(s) failed" in res.stderr
    assert "1 x reply was not a JSON list" in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "status: completed_with_failures"
    assert len(out.read_text().splitlines()) == 5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed_with_failures"
    assert "1 of 12 tasks failed" in summary["error"]
    assert summary["tasks"] == {"done": 11, "failed": 1, "cancelled": 0}
    assert summary["calls"]["made"] == fake_llm.stats()["total"]  # every call the provider saw
    assert summary["failures"] == [{"reason": "reply was not a JSON list", "count": 1}]


def test_a_run_where_every_task_fails_ends_failed_with_its_reason(worker, fake_llm, tmp_path):
    fake_llm.configure(fail_for={"Tea": 401})  # the key is refused: nothing can be made
    res = runpipeline(
        "qa-from-topics",
        "--input",
        "topic=Tea",
        "--base-url",
        fake_llm.url,
        "--model",
        "m",
        "--output",
        tmp_path / "qa.jsonl",
    )
    assert res.returncode == 1, res.stderr
    assert "No record could be made: 1 of 1 task failed" in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "status: failed"


def test_bad_arguments_and_invalid_spec_exit_2(tmp_path):
    res = runpipeline("no-such-template", "--input", "topic=x")
    assert res.returncode == 2 and "neither a spec file nor a template" in res.stderr
    res = runpipeline("qa-from-topics", "--input", "novalue")
    assert res.returncode == 2 and "KEY=VALUE" in res.stderr
    res = runpipeline(
        "qa-from-topics",
        "--input",
        "subject=x",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
    )
    assert res.returncode == 2 and "input 1 has no value for topic" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "steps": [
                    {
                        "name": "a",
                        "prompt": "List {{topic}}",
                        "output_key": "x",
                        "callback": {"type": "scatter"},
                    },
                    {
                        "name": "a",
                        "prompt": "{{missing}}",
                        "output_key": "y",
                        "callback": {"type": "explode"},
                    },
                ]
            }
        )
    )
    res = runpipeline(bad, "--input", "topic=x")
    assert res.returncode == 2
    assert "step 2 ('a'): callback.type unknown callback 'explode'" in res.stderr
    bad.write_text(
        json.dumps(
            {
                "steps": [
                    {
                        "name": "a",
                        "prompt": "List {{topic}}",
                        "output_key": "x",
                        "callback": {"type": "scatter"},
                    },
                    {"name": "a", "prompt": "{{missing}}", "output_key": "y"},
                ]
            }
        )
    )
    res = runpipeline(bad, "--input", "topic=x")
    assert res.returncode == 2
    assert "step 1 ('a'): scatter needs the step's output format to be a JSON list" in res.stderr
    assert "step 2 ('a'): the name is already used by step 1" in res.stderr
    assert "{{missing}}, which is not made by any step before this one" in res.stderr
    res = runpipeline(tmp_path / "nope.json")
    assert res.returncode == 2 and "does not exist" in res.stderr
    (tmp_path / "in.csv").write_bytes(b"\xff\xfe\x00bad")
    res = runpipeline("qa-from-topics", "--inputs", tmp_path / "in.csv")
    assert res.returncode == 2 and "not UTF-8" in res.stderr
