"""One reader of input tables for the web and the command line: bad files get one clear error."""

import pytest

from runner.spec import PipelineSpec, SpecError, tables
from runner.spec.tables import Limits, TableError, read_table

DEEP_LIST = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


def refused(raw, name="t.csv", limits=None):
    with pytest.raises(TableError) as exc:
        read_table(raw, name, limits or Limits())
    return str(exc.value)


def test_good_files_of_each_kind_read_the_same_rows():
    rows = [{"topic": "Bees", "notes": "a, b"}, {"topic": "Ants", "notes": 'say "hi"'}]
    csv_text = b'topic,notes\nBees,"a, b"\nAnts,"say ""hi"""\n'
    jsonl = b'{"topic": "Bees", "notes": "a, b"}\n\n{"topic": "Ants", "notes": "say \\"hi\\""}\n'
    json_text = b'[{"topic": "Bees", "notes": "a, b"}, {"topic": "Ants", "notes": "say \\"hi\\""}]'
    tsv = b'topic\tnotes\nBees\ta, b\nAnts\tsay "hi"\n'
    assert read_table(csv_text, "t.csv").rows == rows
    assert read_table(b"\xef\xbb\xbf" + csv_text, "t.csv").rows == rows  # Excel's BOM
    assert read_table(jsonl, "t.jsonl").rows == rows
    assert read_table(json_text, "t.json").rows == rows
    assert read_table(tsv, "t.tsv").rows == rows
    multiline = read_table(b'topic,notes\nBees,"two\nlines"\nAnts,x\n', "t.csv")
    assert multiline.rows[0]["notes"] == "two\nlines" and len(multiline.rows) == 2


def test_an_unterminated_quote_names_the_line_where_it_opens():
    message = refused(b'topic,notes\nBees,x\nAnts,"open quote\nWasps,y\nFlies,z\n')
    assert message.startswith("Line 3 opens a quote")
    assert "never closed" in message


def test_a_ragged_row_names_its_line():
    message = refused(b"topic,notes\nBees,x\nAnts,x,extra\n")
    assert message == (
        "Line 3 has 3 values but the header names 2 columns. "
        "Check the separators and quotes on that line."
    )
    # the line of a row after a quoted value that spans lines is still right
    message = refused(b'topic,notes\nBees,"two\nlines"\nAnts,x,extra\n')
    assert message.startswith("Line 4 has 3 values")


def test_wrong_encodings_say_which_line_and_what_to_do():
    message = refused(b"topic\nBees\nCaf\xe9\n")  # Latin-1
    assert message.startswith("Line 3 is not UTF-8 text")
    assert "CSV UTF-8" in message
    assert "not UTF-8" in refused("topic\nBees\n".encode("utf-16"))
    assert "NUL character" in refused(b"topic\nBe\x00es\n")


@pytest.mark.parametrize("raw", [DEEP_LIST, DEEP_OBJECT])
def test_deeply_nested_json_is_refused_with_the_limit_named(raw):
    message = refused(raw, "t.json")
    assert "nested more than 64 levels deep" in message and "line 1" in message.lower()
    assert "JSON_MAX_DEPTH" in message
    line = b'{"topic": "Bees"}\n' + b'{"topic": ' + DEEP_LIST + b"}\n"
    assert refused(line, "t.jsonl").startswith("Line 2 is nested more than 64 levels deep")
    # a document nested less deeply than Python's own limit but deeper than ours
    assert "more than 5 levels" in refused(b'[{"a": [[[[[1]]]]]}]', "t.json", Limits(max_depth=5))


def test_row_and_byte_limits_are_named():
    limits = Limits(max_rows=3, max_bytes=1000)
    for name, raw in [("t.csv", b"topic\na\nb\nc\nd\n"), ("t.jsonl", b'{"topic": "a"}\n' * 4)]:
        message = refused(raw, name, limits)
        assert "more than 3 rows; up to 3 are accepted (the INPUT_MAX_ROWS setting)" in message
    assert read_table(b"topic\na\nb\nc\n", "t.csv", limits).rows[-1] == {"topic": "c"}
    message = refused(b"topic\n" + b"x" * 2000, "t.csv", limits)
    assert "files up to 1000 B" not in message  # sizes are in MB
    assert "(the INPUT_MAX_BYTES setting)" in message


def test_limits_come_from_the_settings(settings):
    settings.INPUT_MAX_ROWS, settings.INPUT_MAX_BYTES, settings.JSON_MAX_DEPTH = 7, 1024, 9
    assert Limits.from_settings(settings) == Limits(max_bytes=1024, max_rows=7, max_depth=9)


@pytest.mark.parametrize("raw", [DEEP_LIST, DEEP_OBJECT, b'{"steps": ' + DEEP_LIST + b"}"])
def test_a_deeply_nested_pipeline_file_is_a_spec_error(raw):
    with pytest.raises(SpecError) as exc:
        PipelineSpec.load(raw)
    assert [p.code for p in exc.value.problems] == ["too_deep"]
    assert "nested more than 64 levels deep" in str(exc.value.problems[0])
    with pytest.raises(SpecError):
        PipelineSpec.load({"steps": [], "inputs": [{"a": [[[[1]]]]}]}, max_depth=4)


def test_load_json_keeps_shallow_documents_exact():
    assert tables.load_json('{"a": [1, {"b": "c"}]}', 3) == {"a": [1, {"b": "c"}]}
    with pytest.raises(tables.TooDeep):
        tables.load_json('{"a": [1, {"b": []}]}', 3)
