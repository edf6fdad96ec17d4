"""Reading the files people give us: tables of inputs and JSON documents, within limits.

One reader for the web (the launch page's upload) and the command line (`runpipeline
--inputs`): a CSV (or TSV), JSON Lines or JSON file becomes a `Table`, or `TableError`
says what is wrong in one sentence that names the line and what to do. The limits
(bytes, rows, JSON nesting depth) come from the settings through `Limits.from_settings`;
each error names the setting that raises it.

`load_json` parses JSON with a bound on nesting (a file of 10,000 `[` would otherwise
exhaust Python's stack); `PipelineSpec.load` and the designer's JSON fields use it too.
Pure: no database, no Django.
"""

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
MAX_DEPTH = 64


class TableError(ValueError):
    pass


class TooDeep(ValueError):
    """JSON nested deeper than allowed; `line` is where it went too deep (or None)."""

    def __init__(self, max_depth, line=None):
        self.max_depth, self.line = max_depth, line
        where = f" (line {line})" if line else ""
        super().__init__(
            f"it is nested more than {max_depth} levels deep{where}; up to {max_depth} "
            "levels are accepted (the JSON_MAX_DEPTH setting)"
        )


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_rows: int = MAX_ROWS
    max_depth: int = MAX_DEPTH

    @classmethod
    def from_settings(cls, settings):
        """The limits from Django's settings (INPUT_MAX_BYTES, INPUT_MAX_ROWS, JSON_MAX_DEPTH)."""
        return cls(
            max_bytes=getattr(settings, "INPUT_MAX_BYTES", MAX_BYTES),
            max_rows=getattr(settings, "INPUT_MAX_ROWS", MAX_ROWS),
            max_depth=getattr(settings, "JSON_MAX_DEPTH", MAX_DEPTH),
        )


@dataclass
class Table:
    columns: list
    rows: list  # dicts, column -> value
    kind: str  # "CSV", "JSON Lines", "JSON"


# -- JSON with a bound on nesting ---------------------------------------------------


def depth(data, stop=None):
    """How deeply lists and objects nest in `data` (a scalar is 0); stops counting past `stop`."""
    deepest = 0
    stack = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        if stop is not None and deepest > stop:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def _deep_line(text, max_depth):
    """The line on which `text` first opens its (max_depth + 1)th level, or None."""
    level = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            level += 1
            if level > max_depth:
                return text.count("\n", 0, m.start()) + 1
        elif token in "]}":
            level -= 1
    return None


def load_json(text, max_depth=MAX_DEPTH):
    """json.loads, refusing documents nested deeper than `max_depth` with `TooDeep`.

    Raises ValueError (json.JSONDecodeError, UnicodeDecodeError or TooDeep)."""
    try:
        data = json.loads(text)
    except RecursionError:
        data = None
    else:
        if depth(data, max_depth) <= max_depth:
            return data
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    raise TooDeep(max_depth, _deep_line(text, max_depth))


# What Python's JSON reader says, in words a person reads, with what to check.
JSON_MISTAKES = {
    "Expecting property name enclosed in double quotes": (
        "a field name in double quotes was expected (is there a comma too many, "
        "or single quotes instead of double quotes?)"
    ),
    "Expecting value": "a value was expected (is one missing, or is there a comma too many?)",
    "Expecting ',' delimiter": "a comma was expected between two items",
    "Expecting ':' delimiter": "a colon was expected after a field name",
    "Unterminated string starting at": "a text in quotes is not closed with a double quote",
    "Invalid control character at": "a line break inside quotes must be written as \\n",
    "Extra data": "there is more after the end (only one JSON value is allowed)",
}


def json_mistake(exc):
    """Where a JSON text is wrong and what to check, from the reader's exception."""
    if isinstance(exc, json.JSONDecodeError):
        words = JSON_MISTAKES.get(exc.msg, "this is not valid JSON")
        return f"line {exc.lineno}, character {exc.colno}: {words}"
    if isinstance(exc, UnicodeDecodeError):
        return "the text is not UTF-8; save the file as UTF-8 and try again"
    return str(exc)


# -- tables -------------------------------------------------------------------------


def check_size(size, limits=Limits()):
    """Refuse a file of `size` bytes before reading it, when it is over the limit."""
    if size > limits.max_bytes:
        raise TableError(
            f"The file is {_mb(size)}; files up to {_mb(limits.max_bytes)} are accepted "
            "(the INPUT_MAX_BYTES setting). Split it into smaller files."
        )


def _mb(size):
    if size < 1024 * 1024:
        return f"{size:,} bytes"
    mb = size / 1024 / 1024
    return f"{mb:.0f} MB" if mb == int(mb) else f"{mb:.1f} MB"


def decode(raw):
    """The text of a UTF-8 file (with or without a BOM); TableError names the first bad line."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise TableError(
            "The file is saved as UTF-16 (“Unicode text”), not UTF-8 text. "
            "Save it as “CSV UTF-8” or JSON Lines and try again."
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TableError(
            f"Line {line} is not UTF-8 text (the file may be saved as Latin-1 or Windows-1252). "
            "Save it as “CSV UTF-8” or JSON Lines and try again."
        ) from None


def read_table(raw, name="", limits=Limits()):
    """The columns and rows of a CSV, TSV, JSON Lines or JSON file's bytes; TableError says why not.

    The kind comes from the name's suffix (.csv, .tsv, .jsonl/.ndjson, .json), else from
    the first character."""
    check_size(len(raw), limits)
    if not raw.strip():
        raise TableError("The file is empty.")
    text = decode(raw)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise TableError(
            f"Line {line} holds a NUL character: this is not a text file. "
            "Save it as CSV UTF-8 or JSON Lines."
        )
    name = (name or "").lower()
    head = text.lstrip()[:1]
    if name.endswith((".jsonl", ".ndjson")) or (not name.endswith(".csv") and head == "{"):
        table = _read_jsonl(text, limits)
    elif name.endswith(".json") or head == "[":
        table = _read_json(text, limits)
    else:
        table = _read_csv(text, limits, tab=name.endswith(".tsv"))
    if not table.rows:
        raise TableError("The file has no rows under its header.")
    return table


def _too_many(limits):
    return TableError(
        f"The file has more than {limits.max_rows:,} rows; up to {limits.max_rows:,} are "
        "accepted (the INPUT_MAX_ROWS setting). Split it into smaller files."
    )


def _read_csv(text, limits, tab=False):
    if tab:
        dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    # strict: an unterminated quote is an error, not the rest of the file in one value.
    reader = csv.reader(io.StringIO(text, newline=""), dialect, strict=True)
    start = 1  # the line the row being read starts on
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise TableError("The first line of the file should name the columns.")
        columns = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise TableError(f"Two columns are named “{dup}”: give each column its own name.")
        rows = []
        start = reader.line_num + 1
        for values in reader:
            here, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= limits.max_rows:
                raise _too_many(limits)
            extra = [v for v in values[len(columns) :] if v.strip()]
            if extra:
                raise TableError(
                    f"Line {here} has {len(values)} values but the header names "
                    f"{len(columns)} column{'s' if len(columns) > 1 else ''}. "
                    "Check the separators and quotes on that line."
                )
            values = values + [""] * (len(columns) - len(values))
            rows.append(dict(zip(columns, values, strict=False)))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise TableError(
                f'Line {start} opens a quote (") that is never closed, so the rest of the '
                "file would be one value. Close the quote on that line."
            ) from None
        raise TableError(
            f"Line {start} could not be read as CSV ({exc}). "
            "Check the separators and quotes on that line."
        ) from None
    return Table(columns, rows, "CSV")


def _columns_of(rows):
    columns = {}
    for row in rows[:1000]:
        for key in row:
            columns.setdefault(str(key), None)
    return list(columns)


def _read_jsonl(text, limits):
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) >= limits.max_rows:
            raise _too_many(limits)
        try:
            row = load_json(line, limits.max_depth)
        except TooDeep as exc:
            raise TableError(
                f"Line {lineno} is nested more than {exc.max_depth} levels deep; up to "
                f"{exc.max_depth} levels are accepted (the JSON_MAX_DEPTH setting)."
            ) from None
        except ValueError:
            raise TableError(
                f"Line {lineno} is not valid JSON. In a JSON Lines file every line is one "
                'object, like {"topic": "Volcanoes"}.'
            ) from None
        if not isinstance(row, dict):
            raise TableError(
                f'Line {lineno} is not a JSON object; write each line like {{"topic": "Volcanoes"}}.'
            )
        rows.append(row)
    return Table(_columns_of(rows), rows, "JSON Lines")


def _read_json(text, limits):
    try:
        data = load_json(text, limits.max_depth)
    except TooDeep as exc:
        raise TableError(f"The file cannot be read: {exc}.") from None
    except json.JSONDecodeError as exc:
        raise TableError(f"The file is not valid JSON: {json_mistake(exc)}.") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TableError(
            'A JSON file should hold a list of objects, like [{"topic": "Volcanoes"}].'
        )
    if len(data) > limits.max_rows:
        raise _too_many(limits)
    return Table(_columns_of(data), data, "JSON")
