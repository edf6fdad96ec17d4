"""Quality as review shows it: why a record was set aside, what a duplicate repeats, and
what the run's judges said about a record.

A duplicate's `duplicate_of` is the key of the item it repeats, which went on: a
record's key when the duplicate check ran after the last step, else a task's key (the
next step's task made from it). A task's records are those whose seq starts with the
task's seq and a dot (`callbacks.child_seq`); `selection`'s `from` filter lists them.
"""

from django.urls import reverse

from runner.models import Record, Task

from .runs import pretty, step_names
from .selection import querystring

MADE_FROM_SHOWN = 5


def _field_checked(run, rec):
    """The field the duplicate check compared at the step that set `rec` aside."""
    steps = run.spec_obj.steps
    step = steps[rec.step] if rec.step is not None and 0 <= rec.step < len(steps) else None
    return step.dedup.field if step is not None and step.dedup is not None else ""


def _originals(run, keys):
    """({key: Record}, {key: Task}) for the keys duplicates repeat (two queries at most)."""
    records = {
        r.key: r
        for r in Record.objects.filter(run=run, key__in=keys).only(
            "id", "key", "data", "edited", "flag"
        )
    }
    rest = [k for k in keys if k not in records]
    tasks = {}
    if rest:
        tasks = {
            t.key: t
            for t in Task.objects.filter(run=run, key__in=rest).only("id", "key", "seq", "context")
        }
    return records, tasks


def _url(name, run, **query):
    return reverse(name, kwargs={"code": run.code}) + "?" + querystring(query)


def _repeats(run, rec, records, tasks):
    """What a duplicate repeats, as the page links to it."""
    key = rec.duplicate_of
    checked = _field_checked(run, rec)
    if key in records:
        original = records[key]
        return {
            "key": key,
            "text": pretty(original.current.get(checked)) if checked else "",
            "url": _url("designer:run-review", run, record=original.pk, flag="all"),
            "label": "record",
        }
    if key in tasks:
        task = tasks[key]
        return {
            "key": key,
            "text": pretty(task.context.get(checked)) if checked else "",
            "task_url": reverse("designer:task-detail", args=[run.code, task.pk]),
            "url": _url("designer:run-records", run, flag="all", **{"from": key}),
            "label": "task",
            "task": task,
        }
    return {"key": key, "text": "", "url": "", "label": "", "missing": True}


def aside_notes(run, recs):
    """{record id: note} for the records set aside (or restored): why, where, what it repeats."""
    shown = [r for r in recs if r.flag or r.restored]
    if not shown:
        return {}
    names = step_names(run)
    keys = sorted({r.duplicate_of for r in shown if r.duplicate_of})
    records, tasks = _originals(run, keys) if keys else ({}, {})
    notes = {}
    for r in shown:
        notes[r.pk] = {
            "flag": r.get_flag_display() if r.flag else "",
            "restored": r.restored,
            "reason": r.flag_reason,
            "step": names[r.step] if r.step is not None and r.step < len(names) else "",
            "repeats": _repeats(run, r, records, tasks) if r.duplicate_of else None,
        }
    return notes


def made_from(run, task, limit=MADE_FROM_SHOWN):
    """The first records made from a task (kept or not), and whether there are more."""
    rows = list(
        Record.objects.filter(run=run, seq__startswith=task.seq + ".")
        .order_by("seq", "id")
        .only("id", "key", "flag", "review")[: limit + 1]
    )
    return rows[:limit], len(rows) > limit


# -- a judge's verdict --------------------------------------------------------------------


def _score(criterion, value):
    if value is None:
        return "-"
    text = pretty(value)
    return f"{text} / 5" if criterion.scale == "1-5" else text


def verdicts(run, current):
    """What each judge step said about a record: its scores, and for a pair, the winner."""
    out = []
    for step in run.spec_obj.steps:
        judge = step.judge
        if judge is None or not any(k in current for k in judge.result_keys()):
            continue
        rows = []
        for c in judge.criteria:
            row = {"key": c.key, "description": c.description}
            if judge.pair:
                row["a"] = _score(c, current.get(f"{c.key}_a"))
                row["b"] = _score(c, current.get(f"{c.key}_b"))
            else:
                row["score"] = _score(c, current.get(c.key))
            rows.append(row)
        out.append(
            {
                "step": step.name,
                "pair": judge.pair,
                "rows": rows,
                "preferred": pretty(current.get(judge.preferred_key)) if judge.pair else "",
                "rationale": pretty(current.get(judge.rationale_key)),
            }
        )
    return out
