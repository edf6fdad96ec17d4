"""Writing a run's records as a dataset file, streamed in batches (the card: `card.py`).

Three shapes of row:

- plain: every field of a record (its edited version when it was edited), or the
  chosen fields renamed; metadata (run, record key, review state) under one
  `_meta` key (JSONL) or `_meta_*` columns (CSV, Parquet);
- chat: `{"messages": [system?, user, assistant]}` for supervised fine-tuning;
- preference: `{"prompt", "chosen", "rejected"}`, the DPO layout: from a pairwise
  judge step (one row per judged record, with `score_chosen` and `score_rejected`,
  the default when the pipeline has one), or from pipelines that make two answers per
  prompt (a broadcast step): chosen by rating, by review, or first/second.

Records that filters and the duplicate check set aside are left out unless asked for
(`set_aside`); then `_meta` says why each was set aside.

Everything streams: records are read in keyset-paged batches and written as they
come, so an export never holds a whole run in memory. The web page and
`manage.py exportrun` share this module.
"""

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.db.models import Count, F, Q

from runner.models import Record

from .card import dataset_card

FORMATS = (".jsonl", ".csv", ".parquet")
SHAPES = ("plain", "chat", "preference")
CHOICES = ("judge", "rating", "review", "first", "second")
BATCH = 2000
CHUNK_BYTES = 64 * 1024
META_KEYS = ("run", "record", "task", "review", "rating", "edited")
ASIDE_META_KEYS = ("set_aside", "set_aside_because")
PAIR_META_KEYS = ("run", "chosen_record", "rejected_record", "chosen_rating", "rejected_rating")
JUDGE_META_KEYS = ("run", "record", "preferred", "rationale")
JUDGE_COLUMNS = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected")


class ExportError(ValueError):
    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def parse_fields(text):
    """'a,b:renamed' -> [("a", "a"), ("b", "renamed")]; ExportError names a bad entry."""
    fields, names, problems = [], set(), []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        source, _, name = part.partition(":")
        source, name = source.strip(), (name.strip() or source.strip())
        if not source:
            problems.append(f"'{part}' names no field: write FIELD or FIELD:NEW_NAME")
            continue
        if name in names:
            problems.append(f"two fields would both be called '{name}': rename one of them")
        names.add(name)
        fields.append((source, name))
    if problems:
        raise ExportError(problems)
    return fields


@dataclass
class Options:
    shape: str = "plain"
    accepted_only: bool = False
    fields: list | None = None  # [(source, name)]; None: every field
    meta: bool = True
    prompt_field: str = ""
    answer_field: str = ""
    system: str = ""
    choose: str = "rating"  # "judge": a pairwise judge step's verdict
    set_aside: bool = False  # also export what filters and the duplicate check set aside
    # with several reviewers: "decided" (an editor's settled decision, else the majority)
    # or "majority" (the reviewers' majority only, whatever was settled)
    decision: str = "decided"

    def problems(self, keys=None):
        out = []
        if self.shape not in SHAPES:
            out.append(f"format '{self.shape}' is unknown: use one of {', '.join(SHAPES)}")
        if self.shape in ("chat", "preference"):
            needed = [("prompt", self.prompt_field)]
            if not self.judged:
                needed.append(("answer", self.answer_field))
            for label, value in needed:
                if not value:
                    out.append(f"choose the {label} field for the {self.shape} format")
                elif keys is not None and value not in keys:
                    out.append(f"the records have no field '{value}' (they have {', '.join(keys)})")
        if self.shape == "preference" and self.choose not in CHOICES:
            out.append(f"choose pairs by one of {', '.join(CHOICES)}, not '{self.choose}'")
        if self.shape == "plain" and keys is not None:
            for source, _ in self.fields or []:
                if source not in keys:
                    out.append(
                        f"the records have no field '{source}' (they have {', '.join(keys)})"
                    )
        return out

    @property
    def judged(self):
        return self.shape == "preference" and self.choose == "judge"


def pair_judge(spec):
    """The last step's pairwise judge (`JudgeSpec` with `pair`) of a spec, or None."""
    for step in reversed(spec.steps):
        if step.judge is not None and step.judge.pair:
            return step.judge
    return None


def default_choose(run):
    """How pairs are picked unless said: by the pairwise judge when the pipeline has one."""
    return "judge" if pair_judge(run.spec_obj) else "rating"


def record_keys(run):
    """The fields of the run's records in the order they were made (seed input first).

    From the spec, not from a stored record: PostgreSQL's jsonb keeps no key order.
    Fields the spec cannot tell (a Python callback's) follow, sorted, from the first record."""
    keys = list(run.spec_obj.record_fields() or [])
    first = Record.objects.filter(run_id=run.pk).kept().order_by("seq").values("data").first()
    if first:
        keys += sorted(k for k in first["data"] if k not in keys)
    return keys


def in_order(data, keys):
    """`data` with its fields in the order of `keys`, any others after them, sorted."""
    out = {k: data[k] for k in keys if k in data}
    out.update((k, data[k]) for k in sorted(data) if k not in out)
    return out


def default_chat_fields(run):
    """A guess for (prompt, answer): the last two steps' outputs ("question", "answer").

    With a pairwise judge: the first field it reads and its chosen answer."""
    judge = pair_judge(run.spec_obj)
    if judge is not None:
        first = judge.fields[0] if judge.fields else record_keys(run)[0]
        return first, judge.chosen_key
    outs = [s.output_key for s in run.spec_obj.steps]
    if len(outs) >= 2:
        return outs[-2], outs[-1]
    keys = record_keys(run)
    return (keys[0] if keys else ""), (outs[-1] if outs else "")


def iter_records(run, accepted_only=False, set_aside=False, decision="decided"):
    """The run's records in seq order, in batches: dicts with the current data.

    Records set aside (filtered out, duplicates) only when `set_aside`. Accepted ones
    only: by the run's decision, or (`decision="majority"`) by the reviewers' majority."""
    qs = Record.objects.filter(run_id=run.pk)
    if not set_aside:
        qs = qs.kept()
    if accepted_only and decision == "majority":
        qs = qs.annotate(
            yes=Count("reviews", filter=Q(reviews__decision=Record.ACCEPTED)),
            no=Count("reviews", filter=Q(reviews__decision=Record.REJECTED)),
        ).filter(yes__gt=F("no"))
    elif accepted_only:
        qs = qs.filter(review=Record.ACCEPTED)
    last = None
    while True:
        page = qs.order_by("seq", "id")
        if last is not None:
            page = page.filter(Q(seq__gt=last[0]) | Q(seq=last[0], id__gt=last[1]))
        batch = list(
            page.values(
                "id",
                "key",
                "seq",
                "data",
                "edited",
                "review",
                "rating",
                "task_id",
                "flag",
                "flag_reason",
            )[:BATCH]
        )
        if not batch:
            return
        for r in batch:
            r["current"] = Record.current_of(r["data"], r["edited"])
            yield r
        last = (batch[-1]["seq"], batch[-1]["id"])


def _meta(run, r, set_aside=False):
    out = {
        "run": str(run.code),
        "record": r["key"],
        "task": r["task_id"],
        "review": r["review"],
        "rating": r["rating"],
        "edited": r["edited"] is not None,
    }
    if set_aside:
        out.update(_aside(r))
    return out


def _aside(r):
    return {"set_aside": r["flag"] or None, "set_aside_because": r["flag_reason"] or None}


def _side_score(judge, verdict, side):
    """The mean of a side's 1-5 scores (pass counts 5, fail 1); None without scores."""
    values = []
    for c in judge.criteria:
        v = verdict.get(f"{c.key}_{side}")
        if isinstance(v, int | float) and not isinstance(v, bool):
            values.append(v)
        elif v in ("pass", "fail"):
            values.append(5 if v == "pass" else 1)
    return round(sum(values) / len(values), 2) if values else None


def _text(value):
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


# Spreadsheets run a cell that starts with one of these as a formula (CSV injection):
# such a cell is written with a single quote in front, the OWASP rule. CSV only: JSONL
# and Parquet keep the exact text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    if value is None or isinstance(value, int | float | bool):
        return value
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    if value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


TYPED = ("messages", "score_chosen", "score_rejected")  # Parquet columns kept as they are


def _arrow_type(pa, column, message):
    if column == "messages":
        return pa.list_(message)
    return pa.float64() if column in TYPED else pa.string()


class _Sink(io.RawIOBase):
    """A write-only stream whose bytes are collected and drained by a generator."""

    def __init__(self):
        self.parts, self.pos, self.held = [], 0, 0

    def writable(self):
        return True

    def write(self, b):
        self.parts.append(bytes(b))
        self.pos += len(b)
        self.held += len(b)
        return len(b)

    def tell(self):
        return self.pos

    def drain(self):
        out, self.parts, self.held = b"".join(self.parts), [], 0
        return out


class Export:
    """One export of one run: rows in the chosen shape, written as JSONL, CSV or Parquet."""

    def __init__(self, run, options=None):
        self.run = run
        self.options = options or Options()
        self.rows_written = 0
        self.skipped = 0  # records left out (a missing field, no pair)

    # rows

    def rows(self):
        """Rows in the chosen shape; counts what it yields and what it skips."""
        self.rows_written = self.skipped = 0
        shape = self.options.shape
        source = {"plain": self._plain, "chat": self._chat, "preference": self._pairs}[shape]
        for row in source():
            self.rows_written += 1
            yield row

    def _plain(self):
        o = self.options
        order = record_keys(self.run) if o.fields is None else None
        for r in iter_records(self.run, o.accepted_only, o.set_aside, o.decision):
            data = r["current"]
            row = (
                in_order(data, order) if o.fields is None else {n: data.get(s) for s, n in o.fields}
            )
            if o.meta:
                row["_meta"] = _meta(self.run, r, o.set_aside)
            yield row

    def _chat(self):
        o = self.options
        for r in iter_records(self.run, o.accepted_only, o.set_aside, o.decision):
            data = r["current"]
            prompt, answer = data.get(o.prompt_field), data.get(o.answer_field)
            if prompt is None or answer is None:
                self.skipped += 1
                continue
            messages = [{"role": "system", "content": o.system}] if o.system else []
            messages += [
                {"role": "user", "content": _text(prompt)},
                {"role": "assistant", "content": _text(answer)},
            ]
            row = {"messages": messages}
            if o.meta:
                row["_meta"] = _meta(self.run, r, o.set_aside)
            yield row

    def _group_key(self):
        """How records of one prompt are told apart from the next (they are adjacent by seq)."""
        steps = self.run.spec_obj.steps
        last = len(steps) - 1
        for b in range(last, -1, -1):
            if steps[b].callback.type == "broadcast":
                cut = last - b + 1
                return lambda r: r["seq"].rsplit(".", cut)[0]
        field = self.options.prompt_field
        return lambda r: json.dumps(r["current"].get(field), sort_keys=True)

    def _pairs(self):
        if self.options.judged:
            yield from self._judged()
            return
        key = self._group_key()
        group, current = [], None
        for r in iter_records(self.run):
            k = key(r)
            if group and k != current:
                yield from self._pair(group)
                group = []
            current = k
            group.append(r)
        if group:
            yield from self._pair(group)

    def _judged(self):
        """One row per record a pairwise judge decided: its chosen and rejected texts."""
        o = self.options
        judge = pair_judge(self.run.spec_obj)
        if judge is None:
            return
        for r in iter_records(self.run, o.accepted_only, o.set_aside, o.decision):
            data = r["current"]
            chosen, rejected = data.get(judge.chosen_key), data.get(judge.rejected_key)
            preferred = data.get(judge.preferred_key)
            if chosen is None or rejected is None or preferred not in ("A", "B"):
                self.skipped += 1
                continue
            win, lose = ("a", "b") if preferred == "A" else ("b", "a")
            row = {
                "prompt": _text(data.get(o.prompt_field)),
                "chosen": _text(chosen),
                "rejected": _text(rejected),
                "score_chosen": _side_score(judge, data, win),
                "score_rejected": _side_score(judge, data, lose),
            }
            if o.meta:
                row["_meta"] = {
                    "run": str(self.run.code),
                    "record": r["key"],
                    "preferred": preferred,
                    "rationale": data.get(judge.rationale_key),
                }
                if o.set_aside:
                    row["_meta"].update(_aside(r))
            yield row

    def _pair(self, group):
        o = self.options
        group = [r for r in group if r["current"].get(o.answer_field) is not None]
        chosen = rejected = None
        if o.choose in ("first", "second") and len(group) >= 2:
            chosen, rejected = (group[0], group[1]) if o.choose == "first" else (group[1], group[0])
        elif o.choose == "rating":
            rated = sorted(
                (r for r in group if r["rating"] is not None), key=lambda r: -r["rating"]
            )
            if len(rated) >= 2 and rated[0]["rating"] > rated[-1]["rating"]:
                chosen, rejected = rated[0], rated[-1]
        elif o.choose == "review":
            good = [r for r in group if r["review"] == Record.ACCEPTED]
            bad = [r for r in group if r["review"] == Record.REJECTED]
            if good and bad:
                chosen, rejected = good[0], bad[0]
        if chosen is None or (o.accepted_only and chosen["review"] != Record.ACCEPTED):
            self.skipped += len(group)
            return
        prompt = chosen["current"].get(o.prompt_field)
        row = {
            "prompt": _text(prompt),
            "chosen": _text(chosen["current"].get(o.answer_field)),
            "rejected": _text(rejected["current"].get(o.answer_field)),
        }
        if o.meta:
            row["_meta"] = {
                "run": str(self.run.code),
                "chosen_record": chosen["key"],
                "rejected_record": rejected["key"],
                "chosen_rating": chosen["rating"],
                "rejected_rating": rejected["rating"],
            }
        yield row

    # columns (CSV and Parquet need them up front)

    def columns(self):
        o = self.options
        if o.shape == "chat":
            base = ["messages"]
        elif o.shape == "preference":
            base = list(JUDGE_COLUMNS) if o.judged else ["prompt", "chosen", "rejected"]
        elif o.fields is not None:
            base = [n for _, n in o.fields]
        else:  # one pass over the records for their keys, one to write
            base = record_keys(self.run)
            extra = set()
            for r in iter_records(self.run, o.accepted_only, o.set_aside, o.decision):
                extra.update(k for k in r["current"] if k not in base)
            base += sorted(extra)
        if o.meta:
            if o.judged:
                keys = JUDGE_META_KEYS
            else:
                keys = PAIR_META_KEYS if o.shape == "preference" else META_KEYS
            if o.set_aside and (o.shape != "preference" or o.judged):
                keys = (*keys, *ASIDE_META_KEYS)
            base += [f"_meta_{k}" for k in keys]
        return base

    @staticmethod
    def _flat(row):
        meta = row.pop("_meta", None) or {}
        for k, v in meta.items():
            row[f"_meta_{k}"] = v
        return row

    # writers: generators of bytes

    def chunks(self, suffix):
        suffix = suffix if suffix.startswith(".") else f".{suffix}"
        if suffix == ".jsonl":
            return self._jsonl()
        if suffix == ".csv":
            return self._csv()
        if suffix == ".parquet":
            return self._parquet(_Sink())
        raise ExportError([f"unknown output format '{suffix}': use one of {', '.join(FORMATS)}"])

    def _jsonl(self):
        buf = []
        size = 0
        for row in self.rows():
            line = json.dumps(row, ensure_ascii=False) + "\n"
            buf.append(line)
            size += len(line)
            if size >= CHUNK_BYTES:
                yield "".join(buf).encode()
                buf, size = [], 0
        if buf:
            yield "".join(buf).encode()

    def _csv(self):
        columns = self.columns()
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(columns)
        for row in self.rows():
            row = self._flat(row)
            w.writerow([_cell(row.get(c)) for c in columns])
            if text.tell() >= CHUNK_BYTES:
                yield text.getvalue().encode()
                text.seek(0)
                text.truncate()
        yield text.getvalue().encode()

    def _parquet(self, sink, drain=True):
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = self.columns()
        message = pa.struct([("role", pa.string()), ("content", pa.string())])
        schema = pa.schema([pa.field(c, _arrow_type(pa, c, message)) for c in columns])

        writer = pq.ParquetWriter(sink, schema)
        chunk = []
        for row in self.rows():
            row = self._flat(row)
            chunk.append({c: row.get(c) if c in TYPED else _text(row.get(c)) for c in columns})
            if len(chunk) >= BATCH:
                writer.write_table(pa.Table.from_pylist(chunk, schema))
                chunk = []
                yield sink.drain() if drain else b""  # one row group at a time
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema))
        writer.close()
        yield sink.drain() if drain else b""

    def zip_chunks(self, suffix, card_kwargs=None):
        """A .zip of the data file and its README.md (written after the data: counts are known)."""
        suffix = suffix if suffix.startswith(".") else f".{suffix}"
        sink = _Sink()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as zf:
            name = f"data{suffix}"
            with zf.open(name, "w") as fh:
                if suffix == ".parquet":
                    parts = self._parquet(fh, drain=False)  # writes into the zip itself
                else:
                    parts = (fh.write(part) for part in self.chunks(suffix))
                for _ in parts:
                    if sink.held >= CHUNK_BYTES:
                        yield sink.drain()
            zf.writestr("README.md", self.card(data_name=name, **(card_kwargs or {})))
        yield sink.drain()

    def write(self, path):
        """Write to `path` (format from its suffix); return the number of rows."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise ExportError(
                [f"unknown output format '{suffix}': use one of {', '.join(FORMATS)}"]
            )
        with path.open("wb") as fh:
            for part in self.chunks(suffix):
                fh.write(part)
        return self.rows_written

    def empty_reason(self):
        """Why this export has no rows, in a sentence; None when it has at least one.

        Stops at the first row, so it is cheap unless the export is empty."""
        if next(iter(self.rows()), None) is not None:
            return None
        o = self.options
        records = Record.objects.filter(run_id=self.run.pk)
        if not records.exists():
            return "This run has no records yet, so there is nothing to export."
        if o.accepted_only and not records.filter(review=Record.ACCEPTED).exists():
            return (
                "No record of this run is accepted yet: accept some in review, "
                "or export all records."
            )
        if o.shape == "chat":
            return (
                f"No record has both a '{o.prompt_field}' and an '{o.answer_field}' field, "
                "so the chat format has no rows: choose other prompt and answer fields."
            )
        if o.judged:
            if pair_judge(self.run.spec_obj) is None:
                return (
                    "This pipeline has no judge that compares two answers, so pairs cannot be "
                    "chosen by a judge: choose them by rating, by review or by first/second."
                )
            return (
                "No record has a judge's verdict with a chosen and a rejected answer yet, so "
                "the preference export would be an empty file."
            )
        if o.shape == "preference":
            why = {
                "rating": "two answers with different ratings: rate the answers in review, "
                "or choose pairs by first/second answer",
                "review": "one accepted and one rejected answer: review the answers, "
                "or choose pairs by rating or by first/second answer",
            }.get(
                o.choose,
                "two answers: the preference format needs a pipeline that makes two answers "
                "per prompt (a broadcast step)",
            )
            if o.accepted_only and o.choose != "review":
                why += "; with accepted records only, the chosen answer must also be accepted"
            return f"No prompt has {why}. The preference export would be an empty file."
        return "The export has no rows."

    def count(self):
        """How many rows the export makes (a pass over the records, nothing written)."""
        for _ in self.rows():
            pass
        return self.rows_written

    def card(self, data_name=None, pipeline_name=None, exported=None):
        return dataset_card(
            self.run,
            self.options,
            data_name=data_name,
            pipeline_name=pipeline_name,
            exported=self.rows_written if exported is None else exported,
            skipped=self.skipped,
        )


def write_records(run, path, accepted_only=False, options=None):
    """Write the records to `path` (format from its suffix); return the number of rows."""
    options = options or Options(accepted_only=accepted_only)
    try:
        return Export(run, options).write(path)
    except ExportError as exc:
        raise ValueError(str(exc)) from None
