"""Reading an uploaded file of inputs, and mapping its columns to a pipeline's variables.

`read_table` reads a CSV (or TSV), JSON Lines or JSON file into a `Table`, or raises
`UploadError` with a sentence that says what to fix; `default_mapping` picks the
column for each variable; `map_rows` turns the rows into a run's inputs.
"""

import csv
import io
import json
from dataclasses import dataclass

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
MAX_ROW_PROBLEMS = 5


class UploadError(ValueError):
    pass


# -- reading files ------------------------------------------------------------------


@dataclass
class Table:
    columns: list
    rows: list  # dicts, column -> value
    kind: str  # "CSV", "JSON Lines", "JSON"


def read_table(upload):
    """The columns and rows of an uploaded CSV, JSON Lines or JSON file; UploadError says why not."""
    if upload.size > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"The file is {upload.size / 1024 / 1024:.1f} MB; files up to "
            f"{MAX_UPLOAD_BYTES // 1024 // 1024} MB are accepted. Split it into smaller files."
        )
    raw = upload.read()
    if not raw.strip():
        raise UploadError("The file is empty.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadError(
            "The file is not UTF-8 text. Save it as “CSV UTF-8” or JSON Lines and try again."
        ) from None
    name = (upload.name or "").lower()
    head = text.lstrip()[:1]
    if name.endswith((".jsonl", ".ndjson")) or (not name.endswith(".csv") and head == "{"):
        table = _read_jsonl(text)
    elif name.endswith(".json") or head == "[":
        table = _read_json(text)
    else:
        table = _read_csv(text, tab=name.endswith(".tsv"))
    if not table.rows:
        raise UploadError("The file has no rows under its header.")
    return table


def _too_many():
    return UploadError(
        f"The file has more than {MAX_ROWS:,} rows; up to {MAX_ROWS:,} are accepted. "
        "Split it into smaller files."
    )


def _read_csv(text, tab=False):
    if tab:
        dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise UploadError("The first line of the file should name the columns.")
        columns = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise UploadError(f"Two columns are named “{dup}”: give each column its own name.")
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= MAX_ROWS:
                raise _too_many()
            extra = [v for v in values[len(columns) :] if v.strip()]
            if extra:
                raise UploadError(
                    f"Line {reader.line_num} has {len(values)} values but the header names "
                    f"{len(columns)} column{'s' if len(columns) > 1 else ''}. "
                    "Check the separators and quotes on that line."
                )
            values = values + [""] * (len(columns) - len(values))
            rows.append(dict(zip(columns, values, strict=False)))
    except csv.Error as exc:
        raise UploadError(
            f"The file could not be read as CSV (line {reader.line_num}): {exc}."
        ) from None
    return Table(columns, rows, "CSV")


def _columns_of(rows):
    columns = {}
    for row in rows[:1000]:
        for key in row:
            columns.setdefault(str(key), None)
    return list(columns)


def _read_jsonl(text):
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) >= MAX_ROWS:
            raise _too_many()
        try:
            row = json.loads(line)
        except ValueError:
            raise UploadError(
                f"Line {lineno} is not valid JSON. In a JSON Lines file every line is one "
                'object, like {"topic": "Volcanoes"}.'
            ) from None
        if not isinstance(row, dict):
            raise UploadError(
                f'Line {lineno} is not a JSON object; write each line like {{"topic": "Volcanoes"}}.'
            )
        rows.append(row)
    return Table(_columns_of(rows), rows, "JSON Lines")


def _read_json(text):
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UploadError(f"The file is not valid JSON: {exc}.") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UploadError(
            'A JSON file should hold a list of objects, like [{"topic": "Volcanoes"}].'
        )
    if len(data) > MAX_ROWS:
        raise _too_many()
    return Table(_columns_of(data), data, "JSON")


def default_mapping(columns, variables, chosen=None):
    """Variable -> column: what the person chose, else a column of the same name."""
    chosen = chosen or {}
    out = {}
    lower = {c.lower(): c for c in columns}
    for var in variables:
        col = chosen.get(var)
        if col in columns:
            out[var] = col
        elif var in columns:
            out[var] = var
        elif var.lower() in lower:
            out[var] = lower[var.lower()]
        elif len(columns) == 1 and len(variables) == 1:
            out[var] = columns[0]
    return out


def map_rows(table, mapping):
    """Inputs for a run, one per row, and the problems with them (empty values)."""
    inputs, problems, more = [], [], 0
    for n, row in enumerate(table.rows, 1):
        item = {}
        for var, col in mapping.items():
            value = row.get(col)
            if value is None or (isinstance(value, str) and not value.strip()):
                if len(problems) < MAX_ROW_PROBLEMS:
                    problems.append(
                        f"Row {n} has no value in the column “{col}” (used for {{{{{var}}}}})."
                    )
                else:
                    more += 1
            item[var] = value
        inputs.append(item)
    if more:
        problems.append(f"… and {more} more empty values.")
    return inputs, problems
