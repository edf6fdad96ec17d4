"""Writing a run's records as a dataset file, streamed in batches.

Each row holds every context key of its record at top level; metadata (run,
record key, review state, lineage) goes under one `_meta` key (JSONL) or
`_meta_*` columns (CSV, Parquet).
"""

import csv
import json
from pathlib import Path

from .models import Record

FORMATS = (".jsonl", ".csv", ".parquet")
BATCH = 2000


def iter_rows(run, accepted_only=False):
    qs = Record.objects.filter(run_id=run.pk)
    if accepted_only:
        qs = qs.filter(review=Record.ACCEPTED)
    last_seq = None
    while True:
        page = qs.order_by("seq")
        if last_seq is not None:
            page = page.filter(seq__gt=last_seq)
        batch = list(
            page.values("key", "seq", "data", "edited", "review", "rating", "task_id")[:BATCH]
        )
        if not batch:
            return
        for r in batch:
            data = r["edited"] if r["edited"] is not None else r["data"]
            yield (
                data,
                {
                    "run": str(run.code),
                    "record": r["key"],
                    "task": r["task_id"],
                    "review": r["review"],
                    "rating": r["rating"],
                    "edited": r["edited"] is not None,
                },
            )
        last_seq = batch[-1]["seq"]


def _cell(value):
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False)


def write_records(run, path, accepted_only=False):
    """Write the records to `path` (format from its suffix); return the number of rows."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unknown output format '{suffix}': use one of {', '.join(FORMATS)}")
    rows = iter_rows(run, accepted_only)
    if suffix == ".jsonl":
        n = 0
        with path.open("w", encoding="utf-8") as fh:
            for data, meta in rows:
                fh.write(json.dumps({**data, "_meta": meta}, ensure_ascii=False) + "\n")
                n += 1
        return n
    # CSV and Parquet need the columns up front: one pass for the keys, one to write.
    columns = []
    for data, _ in iter_rows(run, accepted_only):
        for k in data:
            if k not in columns:
                columns.append(k)
    meta_cols = ["_meta_run", "_meta_record", "_meta_task", "_meta_review", "_meta_rating"]
    if suffix == ".csv":
        n = 0
        with path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(columns + meta_cols)
            for data, meta in rows:
                w.writerow(
                    [_cell(data.get(c)) for c in columns]
                    + [meta["run"], meta["record"], meta["task"], meta["review"], meta["rating"]]
                )
                n += 1
        return n
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field(c, pa.string()) for c in columns + meta_cols])
    n = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        chunk = []
        for data, meta in rows:
            values = [_cell(data.get(c)) for c in columns]
            values = [
                None if v is None else str(v) if not isinstance(v, str) else v for v in values
            ]
            chunk.append(
                values
                + [
                    meta["run"],
                    meta["record"],
                    str(meta["task"]),
                    meta["review"],
                    None if meta["rating"] is None else str(meta["rating"]),
                ]
            )
            if len(chunk) >= BATCH:
                writer.write_table(
                    pa.Table.from_pylist(
                        [dict(zip(schema.names, r, strict=True)) for r in chunk], schema
                    )
                )
                n += len(chunk)
                chunk = []
        if chunk:
            writer.write_table(
                pa.Table.from_pylist(
                    [dict(zip(schema.names, r, strict=True)) for r in chunk], schema
                )
            )
            n += len(chunk)
    return n
