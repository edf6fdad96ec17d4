"""Review of a run's records: a paged table, a one-record view made for the keyboard,
accept/reject/rate/edit one record, restore one that was set aside, and bulk accept or
reject of a filtered selection (a confirm page with the count first).

The filters and sort order are query parameters read by `selection.select`, shared by
every view here, so a selection made in the table is the one the one-record view walks
and the one a bulk action changes. By default only kept records show (the run's
dataset); filtered-out records and duplicates are one choice away, with the reason,
the step and what they repeat (`quality`). Editing stores `Record.edited` and keeps
the original in `Record.data`. Records appear as the run makes them: the one-record
view moves by position relative to a record ("the next record after this one"),
never by a list computed up front.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods, require_POST

from runner.events import quality as run_quality
from runner.export import in_order, record_keys
from runner.models import Record
from runner.models.workspaces import REVIEW, REVIEWER
from runner.spec import tables

from .access import run_for
from .assignments import (
    assigned_elsewhere,
    own_verdict,
    own_verdicts,
    plan_of,
    render_guidelines,
)
from .history import note, of_record
from .quality import aside_notes, made_from, verdicts
from .runs import PAGE_SIZE, ancestors, lineage_path, pretty, step_names
from .selection import (
    LENGTH,
    NUMBER,
    RATINGS,
    SHOW,
    SORTS,
    STATUSES,
    beyond,
    ordered,
    querystring,
    select,
)

ACTIONS = {"accept": Record.ACCEPTED, "reject": Record.REJECTED, "unreview": Record.UNREVIEWED}
VERBS = {"accept": "Accept", "reject": "Reject", "unreview": "Mark unreviewed"}
DONE = {"accept": "Accepted", "reject": "Rejected", "unreview": "Marked unreviewed"}
RECORD_FIELDS = ["id", "run", "key", "seq", "data", "edited", "review", "rating", "task"]
RECORD_FIELDS += ["flag", "flag_reason", "duplicate_of", "step", "restored"]


def filters_from(request):
    """Filters posted back by a form (a `filters` field holding the query string)."""
    return QueryDict(request.POST.get("filters", ""))


def counter(run):
    """The run's kept records, how many are reviewed, and what was set aside: one query."""
    return Record.objects.filter(run=run).counts()


def with_lineage(qs, run):
    """Load each record's task and its parents up to the seed input in the same query."""
    depth = max(0, len(run.spec_obj.steps) - 1)
    paths = [lineage_path("task", i) for i in range(depth + 1)]
    only = RECORD_FIELDS + [f"{p}__{f}" for p in paths for f in ("step", "parent")]
    return qs.select_related(paths[-1]).only(*only)


def lineage_of(record, run, names):
    chain = ancestors(record.task, len(names)) if record.task_id else []
    return [
        {"id": t.pk, "step": t.step, "name": names[t.step]} for t in chain if t.step < len(names)
    ]


def number_fields(run, fields):
    """The fields offered for 'number': a judge's scores first, then every other field."""
    scores = []
    for step in run.spec_obj.steps:
        judge = step.judge
        for c in judge.criteria if judge is not None else []:
            if c.scale == "1-5":
                scores += [f"{c.key}_a", f"{c.key}_b"] if judge.pair else [c.key]
    return list(dict.fromkeys([k for k in scores if k in fields] + fields))


def text_field(run, fields):
    """The field offered first for 'length': the last output that is not a judge's."""
    outputs = [s.output_key for s in run.spec_obj.steps if s.judge is None]
    made = [k for k in reversed(outputs) if k in fields]
    return made[0] if made else (fields[-1] if fields else "")


def filter_context(run, sel):
    fields = sel.fields(run)
    numbers = number_fields(run, fields)
    return {
        "filters": sel.filters,
        "filter_query": sel.query,
        "filter_items": [(k, v) for k, v in sel.filters.items() if v],
        "filter_problems": sel.problems,
        "steps": list(enumerate(step_names(run))),
        "statuses": STATUSES,
        "ratings": RATINGS,
        "shows": [(k, words) for k, (words, _) in SHOW.items()],
        "sorts": list(SORTS.items()),
        "number_fields": numbers,
        "length_fields": fields,
        "number_field": sel.filters.get(NUMBER.field) or (numbers[0] if numbers else ""),
        "length_field": sel.filters.get(LENGTH.field) or text_field(run, fields),
    }


# -- the table -----------------------------------------------------------------------


def _rows(run, page, columns):
    names = step_names(run)
    notes = aside_notes(run, page)
    return [
        {
            "record": rec,
            "cells": [pretty(rec.current.get(k)) for k in columns],
            "lineage": lineage_of(rec, run, names),
            "note": notes.get(rec.pk),
        }
        for rec in page
    ]


@login_required
def records_table(request, code):
    run = run_for(request.user, code)
    sel = select(run, request.GET)
    qs = with_lineage(ordered(sel.records, sel.order), run)
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    seen = set()
    for rec in page:
        seen.update(rec.current)
    columns = list(in_order(dict.fromkeys(seen), record_keys(run)))
    rows = _rows(run, page, columns)
    return render(
        request,
        "runs/records.html",
        {
            "run": run,
            "page": page,
            "columns": columns,
            "rows": rows,
            "show_notes": any(row["note"] for row in rows),
            "count": counter(run),
            "ws_path": f"/ws/runs/{run.code}/",
            **filter_context(run, sel),
        },
    )


# -- bulk: a confirm page with the count, then the change, recounted on the server -------


def _records_url(run, sel):
    url = reverse("designer:run-records", kwargs={"code": run.code})
    return f"{url}?{sel.query}" if sel.query else url


@login_required
@require_http_methods(["GET", "POST"])
def records_bulk(request, code):
    """GET: how many records the filter selects, and a button to change them all. POST: do it."""
    run = run_for(request.user, code, REVIEW)
    if request.method == "POST":
        return _bulk_apply(request, run)
    sel = select(run, request.GET)
    return _bulk_confirm(request, run, sel, request.GET.get("action", ""))


def _bulk_confirm(request, run, sel, action, changed=False):
    if action not in ACTIONS:
        messages.error(request, "Choose accept, reject or unreview for the selected records.")
        return redirect(_records_url(run, sel))
    return render(
        request,
        "runs/bulk_confirm.html",
        {
            "run": run,
            "action": action,
            "verb": VERBS[action],
            "matching": sel.records.count(),
            "words": sel.words,
            "changed": changed,
            "back_url": _records_url(run, sel),
            "filter_query": sel.query,
            "filter_problems": sel.problems,
        },
    )


def _bulk_apply(request, run):
    sel = select(run, filters_from(request))
    action = request.POST.get("action", "")
    if sel.problems:
        messages.error(request, "Nothing was changed: fix the filter first. " + sel.problems[0])
        return redirect(_records_url(run, sel))
    if action not in ACTIONS:
        return _bulk_confirm(request, run, sel, action)
    expected = request.POST.get("expected", "")
    if expected and expected != str(sel.records.count()):  # the run made or moved records since
        return _bulk_confirm(request, run, sel, action, changed=True)
    n = own_verdicts(run, sel.records, request.user, ACTIONS[action])
    if n is None:  # not one of the plan's reviewers: an editor's decision on them all
        decision = ACTIONS[action]
        n = Record.objects.filter(pk__in=sel.records.values("pk")).update(
            review=decision, settled=decision != Record.UNREVIEWED
        )
    note(
        request.user,
        run.workspace_id,
        f"{DONE[action].lower()} {n:,} record(s) at once ({', '.join(sel.words) or 'all'})",
        run=run,
    )
    messages.success(request, f"{DONE[action]} {n} record(s).")
    return redirect(_records_url(run, sel))


# -- one record at a time ---------------------------------------------------------------


@login_required
def review_one(request, code):
    run = run_for(request.user, code)
    return _review_page(request, run)


def _shown_record(request, run, sel, base):
    """The record the query names (by id, or after / before one), else the first; and the anchor id."""
    for key in ("record", "after", "before"):
        value = request.GET.get(key, "")
        if value.isdigit():
            anchor = get_object_or_404(Record.objects.filter(run=run).only("seq"), pk=value)
            if key == "record":
                return base.filter(pk=anchor.pk).first(), anchor.pk
            ids = beyond(sel, anchor, forward=key == "after").values("id")[:1]
            return base.filter(pk__in=ids).first(), anchor.pk
    ids = ordered(sel.records, sel.order).values("id")[:1]
    return base.filter(pk__in=ids).first(), None


def _fields(record, run, edit_values):
    fields = []
    for k, v in in_order(record.current, record_keys(run)).items():
        original = record.data.get(k)
        shown = pretty(v)
        fields.append(
            {
                "key": k,
                "value": shown,
                "edit_value": (edit_values or {}).get(k, shown),
                "original": pretty(original),
                "changed": record.edited is not None and original != v,
                "rows": min(12, max(2, len(shown) // 80 + shown.count("\n") + 1)),
            }
        )
    return fields


def _card(run, record, edit_values):
    """What the one-record view shows of a record beside its fields."""
    note = aside_notes(run, [record]).get(record.pk)
    repeats = note and note["repeats"]
    if repeats and repeats.get("task"):
        repeats["made"], repeats["more"] = made_from(run, repeats["task"])
    return {
        "fields": _fields(record, run, edit_values),
        "lineage": lineage_of(record, run, step_names(run)),
        "note": note,
        "verdicts": verdicts(run, record.current),
        "history": of_record(record),
    }


def _review_page(request, run, record=None, edit_errors=None, edit_values=None):
    sel = select(run, request.GET if record is None else filters_from(request))
    base = with_lineage(Record.objects.filter(run=run), run)
    anchor_id = None
    if record is None:
        record, anchor_id = _shown_record(request, run, sel, base)
    url = reverse("designer:run-review", kwargs={"code": run.code})
    context = {
        "run": run,
        "record": record,
        "matching": sel.records.count(),
        "count": counter(run),
        "back_url": f"{url}?{querystring(sel.filters, record=anchor_id)}" if anchor_id else None,
        "edit_errors": edit_errors or [],
        "ws_path": f"/ws/runs/{run.code}/",
        **filter_context(run, sel),
        **_plan_context(run, request.user),
    }
    if record is not None:
        context.update(
            _card(run, record, edit_values),
            position=beyond(sel, record, forward=False).count() + 1,
            next_url=f"{url}?{querystring(sel.filters, after=record.pk)}",
            prev_url=f"{url}?{querystring(sel.filters, before=record.pk)}",
        )
    return render(request, "runs/review.html", context)


def _plan_context(run, user):
    plan = plan_of(run)
    if plan is None:
        return {}
    return {
        "in_plan": user.pk in plan.reviewers,
        "guidelines": render_guidelines(plan.guidelines),
        "queue_url": reverse("designer:run-queue", kwargs={"code": run.code}),
    }


def _back(run, record, filters, advance):
    url = reverse("designer:run-review", kwargs={"code": run.code})
    key = "after" if advance else "record"
    return redirect(f"{url}?{querystring(filters, **{key: record.pk})}")


@login_required
@require_POST
def record_review(request, code, record_id):
    """Accept, reject, unreview (and move on to the next record), or rate (and stay)."""
    run = run_for(request.user, code, REVIEW)
    record = get_object_or_404(Record, run=run, pk=record_id)
    filters = select(run, filters_from(request)).filters
    action = request.POST.get("action", "")
    if run.member.role == REVIEWER and assigned_elsewhere(run, record, request.user):
        raise PermissionDenied("As reviewer you can only review the records assigned to you")
    if action in ACTIONS:
        decision = ACTIONS[action]
        words = {"accept": "accepted", "reject": "rejected", "unreview": "unreviewed"}[action]
        note(request.user, run.workspace_id, f"{words} record {record.pk}", run=run, record=record)
        if not own_verdict(run, record, request.user, decision=decision):
            # not one of its plan's reviewers: an editor's decision, over any majority
            Record.objects.filter(pk=record.pk).update(
                review=decision, settled=decision != Record.UNREVIEWED
            )
        return _back(run, record, filters, advance=action != "unreview")
    if action == "rate":
        value = request.POST.get("rating", "")
        if value in ("1", "2", "3", "4", "5", "", "0"):
            rating = int(value) if value not in ("", "0") else None
            words = (
                f"rated record {record.pk} {rating}/5"
                if rating
                else f"cleared the rating of record {record.pk}"
            )
            note(request.user, run.workspace_id, words, run=run, record=record)
            if not own_verdict(run, record, request.user, rating=rating):
                Record.objects.filter(pk=record.pk).update(rating=rating)
        else:
            messages.error(request, "A rating is a whole number from 1 to 5.")
        return _back(run, record, filters, advance=False)
    messages.error(request, "Unknown action: accept, reject, unreview or rate.")
    return _back(run, record, filters, advance=False)


@login_required
@require_POST
def record_restore(request, code, record_id):
    """Put a set-aside record back among the run's records; back to the table or the record."""
    run = run_for(request.user, code, REVIEW)
    record = get_object_or_404(Record, run=run, pk=record_id)
    sel = select(run, filters_from(request))
    if record.flag:
        record.restore()
        run_quality.forget(run)  # the run's measure counts it now
        note(request.user, run.workspace_id, f"restored record {record.pk}", run=run, record=record)
        messages.success(
            request, f"Restored {record.key}: it counts among the run's records again."
        )
    else:
        messages.info(request, f"{record.key} was not set aside: nothing to restore.")
    if request.POST.get("back") == "records":
        return redirect(_records_url(run, sel))
    return _back(run, record, sel.filters, advance=False)


def apply_edit(record, posted):
    """The record's fields with the posted values; (values, problems). Shapes are kept:
    a field that held text stays text, any other value must be valid JSON."""
    current = record.current
    values, problems = {}, []
    for key, old in current.items():
        raw = posted.get(f"field:{key}")
        if raw is None:
            values[key] = old
            continue
        raw = raw.replace("\r\n", "\n")
        if isinstance(old, str) or old is None:
            values[key] = raw
            continue
        try:
            values[key] = tables.load_json(raw, settings.JSON_MAX_DEPTH)
        except ValueError as exc:
            problems.append(
                f"“{key}” must stay JSON like the original, and it is not: "
                f"{tables.json_mistake(exc)}. Correct it, or cancel the edit."
            )
            values[key] = raw
    return values, problems


@login_required
@require_POST
def record_edit(request, code, record_id):
    run = run_for(request.user, code, REVIEW)
    record = get_object_or_404(Record, run=run, pk=record_id)
    filters = select(run, filters_from(request)).filters
    if request.POST.get("action") == "restore":
        Record.objects.filter(pk=record.pk).update(edited=None)
        run_quality.forget(run)
        note(
            request.user,
            run.workspace_id,
            f"undid the edit of record {record.pk}",
            run=run,
            record=record,
        )
        messages.success(request, "Restored the original record.")
        return _back(run, record, filters, advance=False)
    values, problems = apply_edit(record, request.POST)
    if problems:
        posted = {k: request.POST.get(f"field:{k}", "") for k in values}
        record = with_lineage(Record.objects.filter(pk=record.pk), run).first()
        return _review_page(request, run, record, edit_errors=problems, edit_values=posted)
    edited = None if values == record.data else values
    Record.objects.filter(pk=record.pk).update(edited=edited)
    run_quality.forget(run)  # the measure reads the records as they are now
    if edited:
        note(request.user, run.workspace_id, f"edited record {record.pk}", run=run, record=record)
    messages.success(
        request,
        "Saved your edit; the original is kept." if edited else "No change from the original.",
    )
    return _back(run, record, filters, advance=False)


urlpatterns = [
    path("runs/<uuid:code>/records/", records_table, name="run-records"),
    path("runs/<uuid:code>/records/bulk/", records_bulk, name="records-bulk"),
    path("runs/<uuid:code>/review/", review_one, name="run-review"),
    path("runs/<uuid:code>/records/<int:record_id>/review/", record_review, name="record-review"),
    path("runs/<uuid:code>/records/<int:record_id>/edit/", record_edit, name="record-edit"),
    path(
        "runs/<uuid:code>/records/<int:record_id>/restore/",
        record_restore,
        name="record-restore",
    ),
]
