"""Turning a model's reply into a step's output.

`parse_output(text, output_format, schema)` returns the stripped text, or the JSON
list / object the reply holds, or raises `ParseError` with a short reason in plain
words (shown to the person reviewing the run, and used to ask the model again).

Models rarely answer with bare JSON, so the value is looked for, in this order:

1. the whole reply, when it starts with ``[`` or ``{``;
2. the body of each code fence (```json ... ``` or ``` ... ```);
3. the first balanced ``[...]`` or ``{...}`` in the prose around it (brackets
   inside strings do not count), trying later ones when one does not parse.

Each candidate is read as JSON, then as JSON with trailing commas removed, then
as a Python literal (single quotes, True/False/None) with `ast.literal_eval`,
which only accepts literals. Nothing is ever evaluated.

When a list is wanted, a list found at a level wins over an object at the same
level; an object with exactly one list value (``{"questions": [...]}``) gives that
list when no plain list is there. Work is bounded: at most `MAX_STARTS` bracket
positions are tried, and every position is scanned at most once, so a 1 MB reply
costs a few linear passes, not a quadratic search.
"""

import ast
import json
import math
import re
from functools import lru_cache

MAX_STARTS = 50  # bracket positions tried in the prose scan
MAX_DEPTH = 256  # deeper nesting is not a model's answer (and json would recurse)
LITERAL_EVAL_BUDGET = 1_500_000  # characters handed to ast.literal_eval per reply
DETAIL_LIMIT = 200  # characters of a schema error kept in the reason

TEXT, JSON_LIST, JSON_OBJECT = "text", "json_list", "json_object"


class ParseError(ValueError):
    """A reply that does not give the step's output. `reason` is for people.

    `retryable` is False when asking the model again cannot help (the step's own
    schema is broken).
    """

    def __init__(self, reason, retryable=True):
        self.reason = reason
        self.retryable = retryable
        super().__init__(reason)


def parse_output(text, output_format, schema=None):
    """The step's output from the reply `text`, or raise ParseError."""
    fmt = str(output_format)
    if fmt not in (TEXT, JSON_LIST, JSON_OBJECT):
        raise ValueError(f"unknown output format {output_format!r}")
    text = (text or "").strip()
    if not text:
        raise ParseError("reply was empty")
    if fmt == TEXT:
        value = text
    else:
        value = _find_json(text, want_list=fmt == JSON_LIST)
    if schema is not None:
        value = _coerce(value, schema)
        _validate(value, schema)
    return value


# -- finding the value ------------------------------------------------------------

_FAIL = object()
_FENCE_RE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.S)
_OPEN_RE = re.compile(r"[\[{]")
_STRUCT_RE = re.compile(r"[\[\]{}\"']")
# Unrolled-loop string patterns: linear even when the closing quote is missing.
_STRING_RES = {
    '"': re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S),
    "'": re.compile(r"'[^'\\]*(?:\\.[^'\\]*)*'", re.S),
}
_CLOSER = {"[": "]", "{": "}"}
_TRAILING_COMMA_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|,(\s*[\]}])', re.S)
_PY_TOKEN_RE = re.compile(
    r'"[^"\\]*(?:\\.[^"\\]*)*"|\'[^\'\\]*(?:\\.[^\'\\]*)*\'|\b(true|false|null)\b', re.S
)
# Where JSON stops on a Python literal: a single quote, True/False/None, a tuple.
_PY_START_RE = re.compile(r"'|True\b|False\b|None\b|\(")
_JSON_WORD_RE = re.compile(r"\b(?:true|false|null)\b")
_PY_WORDS = {"true": "True", "false": "False", "null": "None"}


def _find_json(text, want_list):
    state = _State(text)
    levels = []
    if text[0] in "[{":
        levels.append(lambda: _one(state, text))
    levels.append(lambda: _fence_values(state, text))
    levels.append(lambda: _scan_values(state, text))
    for level in levels:
        chosen = _choose(level(), want_list)
        if chosen is not _FAIL:
            return chosen
    raise ParseError("reply was not a JSON list" if want_list else "reply was not a JSON object")


def _choose(values, want_list):
    """The wanted value among one level's candidates, or _FAIL."""
    wrapped = _FAIL
    for value in values:
        if want_list:
            if isinstance(value, list):
                return value
            if wrapped is _FAIL and isinstance(value, dict):
                lists = [v for v in value.values() if isinstance(v, list)]
                if len(lists) == 1:
                    wrapped = lists[0]
        elif isinstance(value, dict):
            return value
    return wrapped


class _State:
    def __init__(self, text):
        self.text = text
        self.ends = {}  # opener position -> index past its closer, or None
        self.eval_budget = LITERAL_EVAL_BUDGET


def _one(state, source):
    value = _decode(state, source)
    if value is not _FAIL:
        yield value


def _fence_values(state, text):
    for match in _FENCE_RE.finditer(text):
        body = match.group(1).strip()
        if body and body[0] in "[{":
            value = _decode(state, body)
            if value is not _FAIL:
                yield value


def _scan_values(state, text):
    """Values of the top-level balanced spans of `text` that decode, in order."""
    pos = 0
    for _ in range(MAX_STARTS):
        match = _OPEN_RE.search(text, pos)
        if match is None:
            return
        start = match.start()
        value, end = _raw_json(text, start)
        if value is not _FAIL:  # the common case, read at C speed
            yield value
            pos = end
            continue
        end = _span_end(state, start)
        if end is None:
            pos = start + 1
            continue
        value = _decode(state, text[start:end])
        if value is _FAIL:
            pos = start + 1  # a bracket inside may still hold the value
        else:
            yield value
            pos = end


def _span_end(state, start):
    """The index just past the bracket that closes text[start], or None.

    Every opener met on the way is remembered: from a position outside any string
    the scan always goes the same way, so no position is scanned twice.
    """
    ends, text = state.ends, state.text
    if start in ends:
        return ends[start]
    stack = []  # (closer, position of the opener)
    pos = start
    result = None
    while True:
        match = _STRUCT_RE.search(text, pos)
        if match is None:
            break
        ch, at = match.group(), match.start()
        if ch in "\"'":
            string = _STRING_RES[ch].match(text, at)
            if string is None:
                break  # a quote that never closes
            pos = string.end()
            continue
        pos = match.end()
        if ch in _CLOSER:
            if at in ends:  # met before: jump over it, or stop where it stopped
                if ends[at] is None:
                    break
                pos = ends[at]
                if not stack:
                    result = pos
                    break
                continue
            if len(stack) >= MAX_DEPTH:
                break
            stack.append((_CLOSER[ch], at))
            continue
        if not stack or stack[-1][0] != ch:
            break  # a closer that does not match
        _, opened = stack.pop()
        ends[opened] = pos
        if not stack:
            result = pos
            break
    for _, opened in stack:
        ends[opened] = None
    ends.setdefault(start, result)
    return result


# -- reading one candidate --------------------------------------------------------


def _decode(state, source):
    """The list or dict `source` holds, or _FAIL.

    JSON stops at its first error, so the slower readings are only tried when that
    error is one they can fix: a trailing comma, or a quote or word of Python.
    """
    read = source
    value, pos = _json(read)
    if value is _FAIL and pos is not None and _trailing_comma_at(read, pos):
        read = _TRAILING_COMMA_RE.sub(lambda m: m.group(1) or m.group(0), source)
        value, pos = _json(read)
    if (
        value is _FAIL
        and pos is not None
        and _PY_START_RE.match(read, pos)
        and len(source) <= state.eval_budget
    ):
        state.eval_budget -= len(source)
        value = _literal(source)
    if isinstance(value, list | dict):
        return value
    return _FAIL


def _trailing_comma_at(source, pos):
    return pos < len(source) and source[pos] in "]}" and source[:pos].rstrip().endswith(",")


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Python-only extensions


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"{text} is too large")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _raw_json(text, start):
    """(list or dict, end) when plain JSON starts at text[start], else (_FAIL, None)."""
    try:
        value, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        return _FAIL, None
    return value, end


def _json(source):
    """(value, None), or (_FAIL, position of the first error or None)."""
    try:
        return _DECODER.decode(source), None
    except json.JSONDecodeError as exc:
        return _FAIL, exc.pos
    except (ValueError, RecursionError):
        return _FAIL, None


def _literal(source):
    # Lower-case JSON words next to single quotes: {'a': true} reads as Python.
    if _JSON_WORD_RE.search(source):
        source = _PY_TOKEN_RE.sub(lambda m: _PY_WORDS.get(m.group(1)) or m.group(0), source)
    try:
        value = ast.literal_eval(source)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _FAIL
    try:
        return _plain(value)
    except (TypeError, RecursionError):
        return _FAIL


def _plain(value):
    """`value` as JSON data (tuples become lists); TypeError for anything else."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError("not a finite number")
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("keys must be strings")
        return {k: _plain(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON data")


# -- the schema -------------------------------------------------------------------

_NUMBER_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*$")


def _coerce(value, schema, depth=0):
    """What a model meant, where the schema says it plainly: "4" or "4/5" for an integer,
    "Pass" for the enum value "pass". Everything else is left for the validator."""
    if depth > 20 or not isinstance(schema, dict):
        return value
    kind = schema.get("type")
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        return {k: _coerce(v, props[k], depth + 1) if k in props else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"], depth + 1) for v in value]
    if isinstance(value, str) and kind in ("integer", "number"):
        m = _NUMBER_RE.match(value)
        if m:
            number = float(m.group(1))
            return int(number) if kind == "integer" and number.is_integer() else number
    if isinstance(value, float) and kind == "integer" and value.is_integer():
        return int(value)
    enum = schema.get("enum")
    if isinstance(value, str) and isinstance(enum, list) and value not in enum:
        folded = {e.lower(): e for e in enum if isinstance(e, str)}
        return folded.get(value.strip().lower(), value)
    return value


def _validate(value, schema):
    validator = _validator(json.dumps(schema, sort_keys=True))
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return
    path = ".".join(str(p) for p in error.absolute_path)
    detail = f"{path}: {error.message}" if path else error.message
    if len(detail) > DETAIL_LIMIT:
        detail = detail[: DETAIL_LIMIT - 3] + "..."
    raise ParseError(f"reply did not match the schema: {detail}")


@lru_cache(maxsize=256)
def _validator(schema_json):
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    schema = json.loads(schema_json)
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ParseError(
            f"the step's output schema is not valid: {exc.message[:DETAIL_LIMIT]}", retryable=False
        ) from None
    return cls(schema)
