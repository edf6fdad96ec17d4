"""Writing results: finished calls saved in bulk, children made at once, waiting callbacks settled.

Shared by drivers and tests. Every statement here is batched: one UPDATE per
chunk of finished calls, one INSERT per chunk of children, and (only when the
calls cost something) one UPDATE of the run's spend.

These three statements are SQL run with `executemany`, not the ORM: measured on
SQLite (the benchmark's 2,200-task run, chunks of 20 to 200 rows), `bulk_create`
spends 150-265 us per task row against 40-60 us here, nearly all of it compiling
each value of its 25 columns; and `bulk_update` cannot keep the per-row guard
(`WHERE status = 'running'`) that makes finishing a task twice harmless. The
INSERTs are built from the models' own fields (`_Insert`): only the columns a new
row sets are named here, every other column takes its field's default. The same
code runs on PostgreSQL in the tests (`make test`, TEST_POSTGRES).
"""

import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from runner.models import Record, Run, Task
from runner.models.runs import CLAIMED_FIELDS
from runner.spec import WAITING_CALLBACKS
from runner.spec.callbacks import CallbackError, Output, children_of, gather

from .dedup import screen
from .ports import announce

log = logging.getLogger("runner.engine")


class _Insert:
    """INSERT ... ON CONFLICT DO NOTHING for rows of `model` that set the `given` fields.

    Every other concrete field takes its model default, adapted for the database in
    use; `json` names the given fields that hold JSON. SQLite runs one prepared
    statement per row (`executemany` loops in C). PostgreSQL gets all the rows in one
    JSON parameter unpacked by `jsonb_to_recordset`: psycopg sends an `executemany`
    statement by statement (1,100 tasks took 0.22 s, holding back a run's first calls)."""

    def __init__(self, model, given, json=(), conflict=("run_id", "key")):
        fields = {f.attname: f for f in model._meta.concrete_fields if not f.primary_key}
        self.given = [fields[name] for name in given]
        self.rest = [f for name, f in fields.items() if name not in given]
        self.json = [given.index(name) for name in json]
        self.names = [f.column for f in self.given]  # the keys of a row in PostgreSQL's JSON
        columns = self.names + [f.column for f in self.rest]
        self.head = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "
        self.tail = f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"
        self.sql = f"{self.head}VALUES ({', '.join(['%s'] * len(columns))}){self.tail}"
        self.pg_sql = None

    def _pg(self):
        """The statement for PostgreSQL (column types read once a connection exists)."""
        if self.pg_sql is None:
            record = ", ".join(f"{f.column} {f.db_type(connection)}" for f in self.given)
            select = [f"x.{c}" for c in self.names]
            select += [f"%s::{f.db_type(connection)}" for f in self.rest]
            self.pg_sql = (
                f"{self.head}SELECT {', '.join(select)} "
                f"FROM jsonb_to_recordset(%s::jsonb) AS x({record}){self.tail}"
            )
        return self.pg_sql

    def run(self, cur, rows):
        defaults = tuple(f.get_db_prep_save(f.get_default(), connection) for f in self.rest)
        if connection.vendor == "postgresql":
            if not rows:
                return
            payload = _pg_json([dict(zip(self.names, row, strict=True)) for row in rows])
            cur.execute(self._pg(), [*defaults, payload])
            return
        adapt = connection.ops.adapt_json_value
        params = []
        for row in rows:
            row = list(row)
            for i in self.json:
                row[i] = adapt(row[i], None)
            params.append((*row, *defaults))
        cur.executemany(self.sql, params)


def _pg_json(rows):
    """`rows` as one JSON document for PostgreSQL, which keeps no NUL character in text or
    jsonb: a reply holding one (a model's stray \\0) is saved with U+FFFD in its place
    instead of failing its chunk, and with it the run, at every try."""
    payload = json.dumps(rows, default=_json_value)
    if "\\u0000" in payload:
        payload = json.dumps(_without_nul(rows), default=_json_value)
    return payload


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


def _json_value(value):
    """Datetimes (and anything else JSON has no word for) as PostgreSQL reads them back."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


_TASKS = _Insert(
    Task,
    ["run_id", "step", "key", "seq", "parent_id", "variant", "status", "lease_until", "claim",
     "context", "created"],
    json=["context"],
)  # fmt: skip
_RECORDS = _Insert(
    Record, ["run_id", "task_id", "key", "seq", "data", "review", "created"], json=["data"]
)
_ASIDE = _Insert(
    Record,
    ["run_id", "task_id", "key", "seq", "data", "review", "created", "flag", "flag_reason",
     "duplicate_of", "step"],
    json=["data"],
)  # fmt: skip
# The columns a finished task sets, in the order of `finish`'s rows ("attempts" is added to).
_FINISHED = ["status", "messages", "raw_output", "parsed", "error", "model", "attempts",
             "attempt_log", "tokens_in", "tokens_out", "latency_ms", "cost", "cached", "trace",
             "warning"]  # fmt: skip
_FINISH = (
    f"UPDATE {Task._meta.db_table} SET "
    + ", ".join("attempts=attempts+%s" if c == "attempts" else f"{c}=%s" for c in _FINISHED)
    + ", finished=%s, lease_until=NULL WHERE id=%s AND status=%s"
)
_finish_pg = None


def _finish_statement_pg():
    """On PostgreSQL one UPDATE for the whole chunk, its rows one JSON parameter unpacked
    by `jsonb_to_recordset` (as `_Insert` does): psycopg's `executemany` sends a statement
    per row, a quarter of a busy driver's time."""
    global _finish_pg
    if _finish_pg is None:
        fields = {f.attname: f for f in Task._meta.concrete_fields}
        record = ", ".join(
            ["id bigint", *(f"{c} {fields[c].db_type(connection)}" for c in _FINISHED)]
        )
        sets = ", ".join(
            "attempts=t.attempts+x.attempts" if c == "attempts" else f"{c}=x.{c}" for c in _FINISHED
        )
        _finish_pg = (
            f"UPDATE {Task._meta.db_table} AS t SET {sets}, finished=%s, lease_until=NULL "
            f"FROM jsonb_to_recordset(%s::jsonb) AS x({record}) "
            "WHERE t.id = x.id AND t.status = %s"
        )
    return _finish_pg


def finish(run, spec, results, claim=None, claim_max=0, meta=None):
    """Save finished calls in bulk and make their children (or records, after the last step).

    Up to `claim_max` new children are written already claimed under `claim` (a
    driver's token), so the driver starts them at once without a round trip through
    the pending queue; the returned rows describe them. `meta`: the tasks' rows as
    claimed ({id: row with key, seq, context, variant, step}); read here when not given."""
    last = len(spec.steps) - 1
    if meta is None:
        meta = {
            row["id"]: row
            for row in Task.objects.filter(id__in=[r.task_id for r in results]).values(
                *CLAIMED_FIELDS
            )
        }
    made_by_step: dict[int, list] = {}
    for res in results:
        row = meta.get(res.task_id)
        if not res.ok or row is None:
            continue
        step = spec.steps[row["step"]]
        if step.callback.type in WAITING_CALLBACKS:
            continue
        out = Output(
            res.task_id,
            row["key"],
            row["seq"],
            row["context"],
            res.parsed,
            res.text,
            row["variant"],
        )
        try:
            made = children_of(step, out)
        except CallbackError as exc:
            res.ok, res.error = False, str(exc)
            continue
        made_by_step.setdefault(row["step"], []).extend(made)
    children, records, aside = [], [], []
    for index, made in made_by_step.items():
        made, set_aside = screen(run, index, spec.steps[index], made)
        aside.extend((index, a) for a in set_aside)
        if index == last:
            records.extend(made)
        else:
            children.extend((index + 1, c) for c in made)
    now = timezone.now()
    finished_at = connection.ops.adapt_datetimefield_value(now)
    postgres = connection.vendor == "postgresql"
    json_value = (lambda v, _: v) if postgres else connection.ops.adapt_json_value
    params = [
        (
            Task.DONE if r.ok else Task.FAILED,
            json_value(r.messages, None),
            r.text,
            json_value(r.parsed, None) if r.ok else None,
            "" if r.ok else r.error,
            r.model,
            _calls_made(r),
            json_value(r.attempts, None),
            int(r.tokens_in),
            int(r.tokens_out),
            int(r.latency_ms or _time_spent(r)),
            int(r.cost),
            bool(r.cached),
            json_value(r.trace, None) if r.trace is not None else None,
            r.warning,
            finished_at,
            r.task_id,
            Task.RUNNING,
        )
        for r in results
        if r.task_id in meta
    ]
    lease = now + timedelta(seconds=settings.RUNNER_LEASE_SECONDS)

    direct_n = min(claim_max, len(children)) if claim else 0
    cost = sum(int(r.cost) for r in results if r.task_id in meta)  # micro-dollars
    with transaction.atomic():
        with connection.cursor() as cur:
            if postgres:
                payload = _pg_json(
                    [
                        dict(zip(["id", *_FINISHED], (p[-2], *p[: len(_FINISHED)]), strict=True))
                        for p in params
                    ]
                )
                cur.execute(_finish_statement_pg(), [finished_at, payload, Task.RUNNING])
            else:
                cur.executemany(_FINISH, params)
            if cost:
                _add_spend(run, cost, exact=cur.rowcount == len(params))
            if children:
                # ON CONFLICT: children are made once, even when a task is finished twice
                # (its lease ran out while it was being saved).
                insert_tasks(
                    cur,
                    run.pk,
                    [
                        (
                            step_index,
                            c,
                            claim if n < direct_n else "",
                            lease if n < direct_n else None,
                        )
                        for n, (step_index, c) in enumerate(children)
                    ],
                    now,
                )
            if records:
                insert_records(cur, run.pk, records, now)
            if aside:
                insert_aside(cur, run.pk, aside, now)
    if not direct_n:
        return []
    # The children just written under the claim, described from memory: only their ids
    # are read back (a child whose key the run had already is not among them).
    ids = dict(
        Task.objects.filter(run_id=run.pk, claim=claim, status=Task.RUNNING).values_list(
            "key", "id"
        )
    )
    rows = []
    for step_index, c in children[:direct_n]:
        task_id = ids.get(c.key)
        if task_id is not None:
            rows.append(
                {"id": task_id, "step": step_index, "key": c.key, "seq": c.seq,
                 "variant": c.variant, "context": c.context, "round": 0}
            )  # fmt: skip
    return rows


def _time_spent(r):
    """A task that failed has no reply to time: the time of its calls, added up."""
    return sum(a.get("latency_ms") or 0 for a in r.attempts if isinstance(a, dict))


def _calls_made(r):
    if r.cached:
        return 0
    made = len([a for a in r.attempts if not a.get("parse") and not a.get("fallback")])
    return made if r.trace is not None else max(1, made)


def _add_spend(run, cost, exact):
    """Add a chunk's cost to the run's spend (or recount it when some rows were saved before)."""
    if exact:
        Run.objects.filter(pk=run.pk).update(spent=F("spent") + cost)
    else:  # a task was finished twice (its lease ran out): count from the tasks themselves
        total = Task.objects.filter(run_id=run.pk).aggregate(s=Sum("cost"))["s"] or 0
        Run.objects.filter(pk=run.pk).update(spent=total)
    run.spent = Run.objects.filter(pk=run.pk).values_list("spent", flat=True).first() or 0


def insert_tasks(cur, run_id, rows, now):
    """Insert tasks in one statement per batch, skipping keys the run already has.

    `rows` holds (step, Child, claim, lease_until); a task with a claim is written
    already running under that claim."""
    adapt = connection.ops.adapt_datetimefield_value
    created = adapt(now)
    _TASKS.run(
        cur,
        [
            (
                run_id,
                step,
                c.key,
                c.seq,
                c.parent_id,
                c.variant,
                Task.RUNNING if claim else Task.PENDING,
                adapt(lease) if lease else None,
                claim,
                c.context,
                created,
            )
            for step, c, claim, lease in rows
        ],
    )


def insert_records(cur, run_id, children, now):
    created = connection.ops.adapt_datetimefield_value(now)
    _RECORDS.run(
        cur,
        [
            (run_id, c.parent_id, c.key, c.seq, c.context, Record.UNREVIEWED, created)
            for c in children
        ],
    )


def insert_aside(cur, run_id, aside, now):
    """Records of what a step's filters or duplicate check set aside: [(step, dedup.Aside)]."""
    created = connection.ops.adapt_datetimefield_value(now)
    _ASIDE.run(
        cur,
        [
            (run_id, a.child.parent_id, a.child.key, a.child.seq, a.child.context,
             Record.UNREVIEWED, created, a.flag, a.reason[:2000], a.duplicate_of, step)
            for step, a in aside
        ],
    )  # fmt: skip


def settle(run, spec):
    """Make the children of waiting callbacks whose step is complete; finish a run with nothing left.

    Returns True when the run is finished (or no longer running)."""
    open_steps = set(
        Task.objects.filter(run_id=run.pk, status__in=[Task.PENDING, Task.RUNNING])
        .values_list("step", flat=True)
        .distinct()
    )
    aggregated = set(
        Run.objects.filter(pk=run.pk).values_list("aggregated", flat=True).first() or []
    )
    last = len(spec.steps) - 1
    for i, step in enumerate(spec.steps):
        if any(s <= i for s in open_steps):
            return False
        if step.callback.type not in WAITING_CALLBACKS or i in aggregated:
            continue
        outputs = [
            Output(
                t["id"],
                t["key"],
                t["seq"],
                t["context"],
                t["parsed"],
                t["raw_output"],
                t["variant"],
            )
            for t in Task.objects.filter(run_id=run.pk, step=i, status=Task.DONE)
            .order_by("seq")
            .values("id", "key", "seq", "context", "parsed", "raw_output", "variant")
        ]
        try:
            made = gather(step, i, outputs)
            error = ""
        except Exception as exc:  # a Python callback's bug must not kill the driver
            made, error = (
                [],
                f"step {i + 1} ('{step.name}'): the {step.callback.type} callback failed: {exc}",
            )
            log.warning("waiting callback failed in run %s: %s", run.pk, error)
        if i == last:  # the records of an N -> 1 step point at the last task they gather
            task_id = outputs[-1].task_id if outputs else None
            made = [replace(c, parent_id=task_id) for c in made]
        made, set_aside = screen(run, i, step, made)
        now = timezone.now()
        with transaction.atomic():
            with connection.cursor() as cur:
                if i == last:
                    insert_records(cur, run.pk, made, now)
                else:
                    insert_tasks(cur, run.pk, [(i + 1, c, "", None) for c in made], now)
                if set_aside:
                    insert_aside(cur, run.pk, [(i, a) for a in set_aside], now)
            run_row = Run.objects.select_for_update().get(pk=run.pk)
            if i not in run_row.aggregated:
                run_row.aggregated = sorted(set(run_row.aggregated) | {i})
                fields = ["aggregated"]
                if error:
                    run_row.error = (run_row.error + "\n" + error).strip()
                    fields.append("error")
                run_row.save(update_fields=fields)
        if made and i != last:
            return False  # new tasks to run
    updated = _end(run)
    run.refresh_from_db()
    if updated:
        announce(run)
        log.info("run %s ended %s", run.pk, run.status)
    return run.status != Run.RUNNING


def _end(run):
    """Nothing is left to do: `completed` when every task succeeded, `failed` when no record
    could be made, else `completed_with_failures`; the reason says how many and why. The
    run keeps its tasks' counts (`Run.tally`): none of them changes any more."""
    tally = Task.objects.filter(run_id=run.pk).tally()
    n_failed = sum(row["n"] for row in tally if row["status"] == Task.FAILED)
    if not n_failed:
        return run.complete(tally=tally)
    total = sum(row["n"] for row in tally)
    top = Task.objects.filter(run_id=run.pk).failure_reasons().first()
    why = (top["error"] or "no reason given")[:300]
    tasks = "task" if total == 1 else "tasks"
    earlier = run.error.strip()
    if not Record.objects.filter(run_id=run.pk, flag="").exists():
        reason = (
            f"No record could be made: {n_failed} of {total} {tasks} failed (most often: {why})."
        )
        return run.fail("\n".join(filter(None, [reason, earlier])), tally=tally)
    reason = (
        f"{n_failed} of {total} {tasks} failed, so their records are missing "
        f"(most often: {why}). Retry the failed tasks to fill them in."
    )
    return run.complete_with_failures("\n".join(filter(None, [reason, earlier])), tally=tally)
