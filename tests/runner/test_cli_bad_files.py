"""`runpipeline` with bad files: exit 2 and one clear line, the same words as the web's."""

import io
import json

import pytest
from django.core.management import call_command

from runner.models import Run

pytestmark = pytest.mark.django_db

DEEP_LIST = b"[" * 10_000 + b"]" * 10_000


def runpipeline(*args):
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("runpipeline", *map(str, args), stderr=err, stdout=io.StringIO())
    return exc.value.code, err.getvalue().strip()


def test_a_deeply_nested_spec_file_exits_2_with_one_line(tmp_path):
    spec = tmp_path / "deep.json"
    for data in (DEEP_LIST, b'{"name": "x", "steps": ' + DEEP_LIST + b"}"):
        spec.write_bytes(data)
        code, err = runpipeline(spec, "--input", "topic=x")
        assert code == 2
        assert len(err.splitlines()) == 1
        assert err.startswith("Cannot start the run: the file cannot be read: it is nested more")
        assert "JSON_MAX_DEPTH" in err
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "in.csv",
            b'topic,notes\nBees,x\nAnts,"open quote\nWasps,y\n',
            'Line 3 opens a quote (") that is never closed',
        ),
        ("in.csv", b"topic\nBees\nAnts,extra\n", "Line 3 has 2 values but the header names 1"),
        ("in.csv", b"topic\nBees\nCaf\xe9\n", "Line 3 is not UTF-8 text"),
        ("in.jsonl", b'{"topic": "x"}\n{"topic": ' + DEEP_LIST + b"}\n", "Line 2 is nested"),
        ("in.json", DEEP_LIST, "nested more than 64 levels deep"),
        ("in.csv", b"topic\n", "The file has no rows under its header."),
    ],
)
def test_a_bad_inputs_file_exits_2_naming_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    code, err = runpipeline("qa-from-topics", "--inputs", path)
    assert code == 2
    assert err == f"Cannot start the run: {path}: " + err.split(f"{path}: ", 1)[1]
    assert message in err and len(err.splitlines()) == 1
    assert not Run.objects.exists()


def test_the_input_limits_are_the_settings_and_are_named(tmp_path, settings):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"topic": str(i)}) + "\n" for i in range(5)))
    settings.INPUT_MAX_ROWS = 4
    code, err = runpipeline("qa-from-topics", "--inputs", path)
    assert (
        code == 2 and "more than 4 rows; up to 4 are accepted (the INPUT_MAX_ROWS setting)" in err
    )
    settings.INPUT_MAX_ROWS, settings.INPUT_MAX_BYTES = 100, 10
    code, err = runpipeline("qa-from-topics", "--inputs", path)
    assert code == 2 and "(the INPUT_MAX_BYTES setting)" in err
    assert not Run.objects.exists()
