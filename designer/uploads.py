"""Reading an uploaded file of inputs, and mapping its columns to a pipeline's variables.

`read_table` reads a CSV (or TSV), JSON Lines or JSON upload into a `Table` with the
reader the command line uses too (`runner/spec/tables.py`), or raises `UploadError`
with a sentence that says what to fix; `default_mapping` picks the column for each
variable; `map_rows` turns the rows into a run's inputs.
"""

from django.conf import settings

from runner.spec import tables

MAX_ROW_PROBLEMS = 5

UploadError = tables.TableError
Table = tables.Table


def limits():
    """The limits on files of inputs (INPUT_MAX_BYTES, INPUT_MAX_ROWS, JSON_MAX_DEPTH)."""
    return tables.Limits.from_settings(settings)


def read_table(upload):
    """The columns and rows of an uploaded CSV, JSON Lines or JSON file; UploadError says why not."""
    lim = limits()
    tables.check_size(upload.size, lim)  # before reading it into memory
    return tables.read_table(upload.read(), upload.name or "", lim)


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
