"""Unit tests for runner.parsing: turning a model's reply into a step's output."""

import json
import time

import pytest

from runner.spec import OutputFormat
from runner.spec.parsing import MAX_STARTS, ParseError, parse_output

LIST, OBJECT, TEXT = "json_list", "json_object", "text"


def reason_of(text, fmt, schema=None):
    with pytest.raises(ParseError) as info:
        parse_output(text, fmt, schema)
    return info.value.reason


# -- the error type ----------------------------------------------------------------


def test_parse_error_str_is_the_reason():
    err = ParseError("reply was empty")
    assert err.reason == "reply was empty"
    assert str(err) == "reply was empty"
    assert isinstance(err, ValueError)
    assert err.retryable is True


def test_unknown_format_is_a_programming_error_not_a_parse_error():
    with pytest.raises(ValueError) as info:
        parse_output("x", "yaml")
    assert not isinstance(info.value, ParseError)


# -- text --------------------------------------------------------------------------


def test_text_is_stripped():
    assert parse_output("  hello world \n\n", TEXT) == "hello world"


def test_text_keeps_inner_newlines_and_brackets():
    assert parse_output("\nline 1\n[not json]\nline 3\n", TEXT) == "line 1\n[not json]\nline 3"


@pytest.mark.parametrize("fmt", [TEXT, LIST, OBJECT])
@pytest.mark.parametrize("reply", ["", "   ", "\n\t \n", None])
def test_empty_reply(reply, fmt):
    assert reason_of(reply, fmt) == "reply was empty"


def test_output_format_enum_values_are_accepted():
    assert parse_output(" hi ", OutputFormat.TEXT) == "hi"
    assert parse_output("[1]", OutputFormat.JSON_LIST) == [1]
    assert parse_output('{"a": 1}', OutputFormat.JSON_OBJECT) == {"a": 1}


def test_unicode_text():
    assert parse_output("  Grüße, 世界 🌍  ", TEXT) == "Grüße, 世界 🌍"


# -- plain JSON --------------------------------------------------------------------


def test_plain_json_list():
    assert parse_output('["a", "b", "c"]', LIST) == ["a", "b", "c"]


def test_plain_json_object():
    assert parse_output('{"q": "why?", "n": 2, "ok": true, "x": null}', OBJECT) == {
        "q": "why?",
        "n": 2,
        "ok": True,
        "x": None,
    }


def test_whitespace_around_json():
    assert parse_output("\n\n  [1, 2]  \n", LIST) == [1, 2]


def test_empty_list_and_object():
    assert parse_output("[]", LIST) == []
    assert parse_output("{}", OBJECT) == {}


def test_list_of_objects():
    reply = '[{"q": "a"}, {"q": "b"}]'
    assert parse_output(reply, LIST) == [{"q": "a"}, {"q": "b"}]


def test_unicode_json():
    reply = '["Grüße", "世界", "\\u00e9t\\u00e9", "🌍"]'
    assert parse_output(reply, LIST) == ["Grüße", "世界", "été", "🌍"]


def test_unicode_in_prose_and_python_literal():
    assert parse_output("Voilà : ['café', 'naïve']", LIST) == ["café", "naïve"]


def test_nan_and_infinity_are_not_json():
    assert reason_of("[NaN, 1]", LIST) == "reply was not a JSON list"
    assert reason_of('{"a": Infinity}', OBJECT) == "reply was not a JSON object"


# -- code fences -------------------------------------------------------------------


def test_json_fence():
    reply = 'Here are the questions:\n```json\n["q1", "q2"]\n```\nHope this helps!'
    assert parse_output(reply, LIST) == ["q1", "q2"]


def test_bare_fence():
    reply = '```\n{"title": "x"}\n```'
    assert parse_output(reply, OBJECT) == {"title": "x"}


def test_fence_with_other_language_tag():
    reply = "```python\n['a', 'b']\n```"
    assert parse_output(reply, LIST) == ["a", "b"]


def test_unclosed_fence():
    reply = 'Sure:\n```json\n["a", "b"]\n'
    assert parse_output(reply, LIST) == ["a", "b"]


def test_fence_wins_over_bracket_in_prose_before_it():
    reply = 'Step [1] of the answer:\n```json\n["x", "y"]\n```'
    assert parse_output(reply, LIST) == ["x", "y"]


def test_second_fence_when_first_is_not_the_wanted_type():
    reply = (
        'Example format:\n```json\n{"example": true}\n```\n'
        'Answer:\n```json\n["real", "answer"]\n```'
    )
    assert parse_output(reply, LIST) == ["real", "answer"]


def test_single_line_fence():
    assert parse_output('```["a"]```', LIST) == ["a"]


# -- prose around the value ----------------------------------------------------------


def test_prose_before():
    assert parse_output('Sure! Here is the list: ["a", "b"]', LIST) == ["a", "b"]


def test_prose_after():
    assert parse_output('["a", "b"]\n\nLet me know if you need more.', LIST) == ["a", "b"]


def test_prose_before_and_after_object():
    reply = 'The result is {"name": "Ada", "born": 1815} as requested.'
    assert parse_output(reply, OBJECT) == {"name": "Ada", "born": 1815}


def test_bracketed_prose_that_is_not_json_is_skipped():
    reply = 'Here are [my three questions]: ["a", "b", "c"]'
    assert parse_output(reply, LIST) == ["a", "b", "c"]


def test_apostrophe_in_bracketed_prose_does_not_hide_the_value():
    reply = '[Note: it\'s below] ["a", "b"]'
    assert parse_output(reply, LIST) == ["a", "b"]


def test_apostrophe_in_prose_before_value():
    reply = "Here's what I came up with, it's short: [\"don't\", \"can't\"]"
    assert parse_output(reply, LIST) == ["don't", "can't"]


def test_first_list_wins_among_several_candidates():
    reply = 'An example object {"a": 1}, then the answer ["x"] and another ["y"]'
    assert parse_output(reply, LIST) == ["x"]


def test_first_object_wins_among_several_candidates():
    reply = 'First {"a": 1} then {"b": 2}'
    assert parse_output(reply, OBJECT) == {"a": 1}


def test_object_found_after_a_list():
    reply = 'Ignore [1, 2]; the answer is {"a": 1}'
    assert parse_output(reply, OBJECT) == {"a": 1}


# -- nested brackets and brackets inside strings -------------------------------------


def test_nested_brackets():
    reply = 'x {"a": {"b": [1, [2, [3]]], "c": {"d": {}}}} y'
    assert parse_output(reply, OBJECT) == {"a": {"b": [1, [2, [3]]], "c": {"d": {}}}}


def test_brackets_inside_strings():
    reply = 'Result: ["a ] b", "c [ d", "{ e", "f }", "g\\" ]"] done'
    assert parse_output(reply, LIST) == ["a ] b", "c [ d", "{ e", "f }", 'g" ]']


def test_brackets_inside_strings_with_trailing_comma():
    # Not plain JSON, so the balanced-bracket scan has to skip the strings itself.
    reply = 'Result: ["a ] b", "c [ d", "{ e",] done'
    assert parse_output(reply, LIST) == ["a ] b", "c [ d", "{ e"]


def test_brackets_inside_single_quoted_strings():
    reply = "Result: ['a ] b', 'c [ d', \"it's {\"] done"
    assert parse_output(reply, LIST) == ["a ] b", "c [ d", "it's {"]


def test_escaped_quotes_inside_strings():
    reply = r'{"say": "he said \"[hi]\"", "path": "C:\\dir\\"}'
    assert parse_output(reply, OBJECT) == {"say": 'he said "[hi]"', "path": "C:\\dir\\"}


def test_inner_list_of_unparsable_outer_bracket_is_used():
    reply = '{questions: ["a", "b"]}'  # keys without quotes: not JSON, not Python
    assert parse_output(reply, LIST) == ["a", "b"]


# -- Python literals ---------------------------------------------------------------


def test_python_list_with_single_quotes():
    assert parse_output("['a', 'b', \"c\"]", LIST) == ["a", "b", "c"]


def test_python_dict_with_true_false_none():
    reply = "{'ok': True, 'bad': False, 'nothing': None, 'n': 1.5}"
    assert parse_output(reply, OBJECT) == {"ok": True, "bad": False, "nothing": None, "n": 1.5}


def test_single_quotes_with_json_words():
    assert parse_output("{'a': true, 'b': null, 'c': false}", OBJECT) == {
        "a": True,
        "b": None,
        "c": False,
    }


def test_json_words_inside_python_strings_are_untouched():
    assert parse_output("['true', 'null', \"false\"]", LIST) == ["true", "null", "false"]


def test_python_literal_in_prose():
    reply = "Sure, here you go: ['what is x?', 'why is y?']. Enjoy."
    assert parse_output(reply, LIST) == ["what is x?", "why is y?"]


def test_python_tuples_become_lists():
    assert parse_output("[(1, 2), ('a',)]", LIST) == [[1, 2], ["a"]]


@pytest.mark.parametrize(
    "reply",
    [
        "[{1, 2}]",  # a set
        "[b'bytes']",  # bytes
        "[1+2j]",  # complex
        "{1: 'a'}",  # a key that is not a string
        "[1e999]",  # infinity
    ],
)
def test_python_values_that_are_not_json_data(reply):
    fmt = OBJECT if reply.startswith("{") else LIST
    with pytest.raises(ParseError):
        parse_output(reply, fmt)


@pytest.mark.parametrize(
    "reply",
    [
        "[__import__('os').system('echo hacked')]",
        "['a'] + ['b']",
        "[print('x')]",
        "[open('/etc/passwd').read()]",
        "{'a': (lambda: 1)()}",
    ],
)
def test_code_is_never_run(reply, capsys):
    fmt = OBJECT if reply.startswith("{") else LIST
    try:
        value = parse_output(reply, fmt)
    except ParseError:
        value = None
    # "['a'] + ['b']" may give the first literal list; nothing may give a result of code.
    assert value in (None, ["a"])
    assert "hacked" not in capsys.readouterr().out


# -- trailing commas ---------------------------------------------------------------


def test_trailing_comma_in_list():
    assert parse_output('["a", "b",]', LIST) == ["a", "b"]


def test_trailing_comma_in_object_with_whitespace():
    assert parse_output('{"a": 1,\n  "b": [1, 2, ],\n}', OBJECT) == {"a": 1, "b": [1, 2]}


def test_comma_bracket_inside_string_is_kept():
    assert parse_output('["a,]", "b",]', LIST) == ["a,]", "b"]


def test_trailing_comma_then_python_quotes():
    assert parse_output("{\"a\": [1,], 'b': 2}", OBJECT) == {"a": [1], "b": 2}


# -- the wanted type ---------------------------------------------------------------


def test_object_wrapped_list():
    assert parse_output('{"questions": ["a", "b"]}', LIST) == ["a", "b"]


def test_object_wrapped_list_with_other_scalar_values():
    assert parse_output('{"questions": ["a", "b"], "count": 2}', LIST) == ["a", "b"]


def test_object_wrapped_list_in_fence_and_prose():
    reply = "Sure!\n```json\n{'subtopics': ['x', 'y']}\n```"
    assert parse_output(reply, LIST) == ["x", "y"]


def test_object_with_two_lists_is_not_a_list():
    assert reason_of('{"a": [1], "b": [2]}', LIST) == "reply was not a JSON list"


def test_object_without_list_is_not_a_list():
    assert reason_of('{"a": 1}', LIST) == "reply was not a JSON list"


def test_plain_list_preferred_over_earlier_wrapped_list():
    reply = 'Format: {"items": ["example"]}\nAnswer: ["real"]'
    assert parse_output(reply, LIST) == ["real"]


def test_object_asked_list_given():
    assert reason_of('["a", "b"]', OBJECT) == "reply was not a JSON object"


def test_object_asked_list_of_one_object_given():
    assert reason_of('[{"a": 1}]', OBJECT) == "reply was not a JSON object"


def test_numbered_list_in_prose_is_not_json():
    reply = "Here are some questions:\n1. What is AI?\n2. Why is the sky blue?\n3. How?"
    assert reason_of(reply, LIST) == "reply was not a JSON list"


def test_bulleted_list_is_not_json():
    assert reason_of("- a\n- b\n- c", LIST) == "reply was not a JSON list"


def test_prose_only_object_wanted():
    assert reason_of("I cannot help with that.", OBJECT) == "reply was not a JSON object"


@pytest.mark.parametrize("reply", ['"just a string"', "42", "true", "null"])
def test_json_scalars_are_neither(reply):
    assert reason_of(reply, LIST) == "reply was not a JSON list"
    assert reason_of(reply, OBJECT) == "reply was not a JSON object"


def test_unbalanced_json():
    assert reason_of('["a", "b"', LIST) == "reply was not a JSON list"
    assert reason_of('{"a": 1', OBJECT) == "reply was not a JSON object"


def test_mismatched_brackets():
    assert reason_of('["a", "b"}', LIST) == "reply was not a JSON list"


def test_citation_brackets_are_not_json():
    reply = "The sky is blue [citation needed] because of scattering [1]."
    # [1] is a real JSON list: the first candidate that parses as a list wins.
    assert parse_output(reply, LIST) == [1]
    assert reason_of("See [citation needed].", LIST) == "reply was not a JSON list"


# -- schemas -----------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "difficulty": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["question", "difficulty"],
}


def test_schema_match():
    reply = '{"question": "why?", "difficulty": 3, "tags": ["x"]}'
    assert parse_output(reply, OBJECT, SCHEMA) == {
        "question": "why?",
        "difficulty": 3,
        "tags": ["x"],
    }


def test_schema_missing_property():
    reason = reason_of('{"question": "why?"}', OBJECT, SCHEMA)
    assert reason.startswith("reply did not match the schema: ")
    assert "'difficulty' is a required property" in reason


def test_schema_wrong_type_names_the_field():
    reason = reason_of('{"question": "why?", "difficulty": "hard"}', OBJECT, SCHEMA)
    assert reason.startswith("reply did not match the schema: ")
    assert "difficulty" in reason
    assert "is not of type 'integer'" in reason


def test_schema_nested_path():
    reason = reason_of('{"question": "q", "difficulty": 1, "tags": ["a", 5]}', OBJECT, SCHEMA)
    assert reason.startswith("reply did not match the schema: tags.1: ")


def test_schema_out_of_range():
    reason = reason_of('{"question": "q", "difficulty": 9}', OBJECT, SCHEMA)
    assert reason.startswith("reply did not match the schema: difficulty: 9 is greater than")


def test_schema_detail_is_short():
    reply = json.dumps({"question": "x" * 100_000, "difficulty": "hard"})
    schema = {"type": "object", "properties": {"question": {"type": "integer"}}}
    reason = reason_of(reply, OBJECT, schema)
    assert reason.startswith("reply did not match the schema: ")
    assert len(reason) < 300


def test_schema_on_list():
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 2}
    assert parse_output('["a", "b"]', LIST, schema) == ["a", "b"]
    assert reason_of('["a"]', LIST, schema).startswith("reply did not match the schema: ")


def test_schema_after_python_literal():
    assert parse_output("{'question': 'q', 'difficulty': 2}", OBJECT, SCHEMA)["difficulty"] == 2


def test_invalid_schema_is_not_retryable():
    with pytest.raises(ParseError) as info:
        parse_output('{"a": 1}', OBJECT, {"type": "no-such-type"})
    assert info.value.retryable is False
    assert "schema is not valid" in info.value.reason


def test_schema_without_failure_for_empty_schema():
    assert parse_output('{"a": 1}', OBJECT, {}) == {"a": 1}


# -- huge and hostile replies --------------------------------------------------------


def _fast(text, fmt, limit=3.0):
    started = time.perf_counter()
    try:
        result = parse_output(text, fmt)
    except ParseError as exc:
        result = exc
    elapsed = time.perf_counter() - started
    assert elapsed < limit, f"took {elapsed:.2f}s"
    return result


def test_huge_json_in_prose_is_found():
    items = [{"k": f"v{i}", "n": i} for i in range(40_000)]
    result = _fast("Here you go: " + json.dumps(items) + " bye", LIST)
    assert result == items


def test_huge_python_literal_is_found():
    items = [{"k": f"v{i}", "n": i} for i in range(5_000)]
    assert _fast("Here: " + repr(items), LIST, limit=5.0) == items


@pytest.mark.parametrize(
    "text",
    [
        "[" * 1_000_000,
        "]" * 1_000_000,
        "{" * 1_000_000,
        "['" * 500_000,
        "[" * 100_000 + "]" * 100_000,
        "[" * 60 + "x " * 500_000 + "]" * 60,
        "[" * 60 + "'a' x, " * 150_000 + "]" * 60,
        "{a} " * 250_000,
        "see [it] " * 120_000,
        '"' * 1_000_000,
        '["' * 500_000,
        "x" * 1_000_000,
    ],
    ids=[
        "open",
        "close",
        "braces",
        "open-quote",
        "deep",
        "nested-prose",
        "nested-python",
        "many-spans",
        "bracketed-words",
        "quotes",
        "open-dquote",
        "no-brackets",
    ],
)
def test_hostile_megabyte_replies_fail_fast(text):
    result = _fast(text, LIST)
    assert isinstance(result, ParseError)
    assert result.reason == "reply was not a JSON list"


def test_only_a_bounded_number_of_starts_is_tried():
    reply = "[x] " * (MAX_STARTS + 5) + '["found"]'
    assert reason_of(reply, LIST) == "reply was not a JSON list"
    reply = "[x] " * (MAX_STARTS - 5) + '["found"]'
    assert parse_output(reply, LIST) == ["found"]
