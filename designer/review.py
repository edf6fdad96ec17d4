"""Review of a run's records: a paged table, a one-record view made for the keyboard,
accept/reject/rate/edit one record, and bulk accept or reject of a filtered selection.

Filters (review status, rating, step and text) are query parameters shared by every
view here, so a selection made in the table is the one the one-record view walks
and the one a bulk action changes. Editing stores `Record.edited` and keeps the
original in `Record.data`. Records appear as the run makes them: the one-record
view moves by position in seq order ("the next record after this one"), never by
a list computed up front.
"""

import json
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.db.models.fields.json import KT
from django.http import QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from runner.export import in_order, record_keys
from runner.models import Record
from runner.spec import tables

from .access import run_for
from .runs import PAGE_SIZE, ancestors, lineage_path, pretty, step_names

STATUSES = (Record.UNREVIEWED, Record.ACCEPTED, Record.REJECTED, "edited")
ACTIONS = {"accept": Record.ACCEPTED, "reject": Record.REJECTED, "unreview": Record.UNREVIEWED}
FILTER_KEYS = ("status", "rating", "step", "q")


# -- filters ------------------------------------------------------------------------


def step_keys(run, index):
    """The record fields a step's output lands in (its output key, or its callback's)."""
    steps = run.spec_obj.steps
    return steps[index].result_keys() if 0 <= index < len(steps) else []


def record_filters(run, params):
    """The run's records narrowed by the filters in `params`, and the filters that applied."""
    qs = Record.objects.filter(run=run)
    f = {}
    status = params.get("status", "")
    if status == "edited":
        qs = qs.filter(edited__isnull=False)
    elif status in STATUSES:
        qs = qs.filter(review=status)
    f["status"] = status if status in STATUSES else ""
    rating = params.get("rating", "")
    if rating in ("1", "2", "3", "4", "5"):
        qs = qs.filter(rating=int(rating))
    elif rating in ("rated", "unrated"):
        qs = qs.filter(rating__isnull=rating == "unrated")
    else:
        rating = ""
    f["rating"] = rating
    step = params.get("step", "")
    n_steps = len(run.spec_obj.steps)
    f["step"] = step = step if step.isdigit() and int(step) < n_steps else ""
    q = " ".join(params.get("q", "").split())[:200]
    f["q"] = q
    if q:
        # the current version of each record: its edit when it was edited
        plain, edited = Q(pk__in=[]), Q(pk__in=[])
        if step:
            names = {}
            for i, k in enumerate(k for k in step_keys(run, int(step)) if k):
                names[f"_d{i}"], names[f"_e{i}"] = KT(f"data__{k}"), KT(f"edited__{k}")
                plain |= Q(**{f"_d{i}__icontains": q})
                edited |= Q(**{f"_e{i}__icontains": q})
            qs = qs.alias(**names)
        else:
            escaped = json.dumps(q)[1:-1]  # JSON may be stored with \\u escapes
            for text in {q, escaped}:
                plain |= Q(data__icontains=text)
                edited |= Q(edited__icontains=text)
        cond = (Q(edited__isnull=True) & plain) | (Q(edited__isnull=False) & edited)
        qs = qs.filter(cond)
    return qs, f


def filters_from(request):
    """Filters posted back by a form (a `filters` field holding the query string)."""
    return QueryDict(request.POST.get("filters", ""))


def querystring(filters, **extra):
    items = {k: v for k, v in filters.items() if v}
    items.update({k: v for k, v in extra.items() if v not in (None, "")})
    return urlencode(items)


def counter(run):
    """How much of the run is reviewed: one aggregate query."""
    return Record.objects.filter(run=run).aggregate(
        total=Count("id"),
        reviewed=Count("id", filter=~Q(review=Record.UNREVIEWED)),
    )


def with_lineage(qs, run):
    """Load each record's task and its parents up to the seed input in the same query."""
    depth = max(0, len(run.spec_obj.steps) - 1)
    paths = [lineage_path("task", i) for i in range(depth + 1)]
    only = ["id", "run", "key", "seq", "data", "edited", "review", "rating", "task"]
    only += [f"{p}__{f}" for p in paths for f in ("step", "parent")]
    return qs.select_related(paths[-1]).only(*only)


def lineage_of(record, run, names):
    chain = ancestors(record.task, len(names)) if record.task_id else []
    return [
        {"id": t.pk, "step": t.step, "name": names[t.step]} for t in chain if t.step < len(names)
    ]


def filter_context(run, filters):
    return {
        "filters": filters,
        "filter_query": querystring(filters),
        "steps": list(enumerate(step_names(run))),
        "statuses": STATUSES,
        "ratings": ("1", "2", "3", "4", "5", "rated", "unrated"),
    }


# -- the table -----------------------------------------------------------------------


@login_required
def records_table(request, code):
    run = run_for(request.user, code)
    names = step_names(run)
    qs, filters = record_filters(run, request.GET)
    qs = with_lineage(qs, run).order_by("seq", "id")
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    seen = set()
    for rec in page:
        seen.update(rec.current)
    columns = list(in_order(dict.fromkeys(seen), record_keys(run)))
    rows = []
    for rec in page:
        current = rec.current
        rows.append(
            {
                "record": rec,
                "cells": [pretty(current.get(k)) for k in columns],
                "lineage": lineage_of(rec, run, names),
            }
        )
    return render(
        request,
        "runs/records.html",
        {
            "run": run,
            "page": page,
            "columns": columns,
            "rows": rows,
            "count": counter(run),
            "ws_path": f"/ws/runs/{run.code}/",
            **filter_context(run, filters),
        },
    )


@login_required
@require_POST
def records_bulk(request, code):
    run = run_for(request.user, code)
    filters = filters_from(request)
    qs, applied = record_filters(run, filters)
    action = request.POST.get("action", "")
    if action not in ACTIONS:
        messages.error(request, "Choose accept, reject or unreview for the selected records.")
    else:
        n = qs.update(review=ACTIONS[action])
        verb = {"accept": "Accepted", "reject": "Rejected", "unreview": "Marked unreviewed"}
        messages.success(request, f"{verb[action]} {n} record(s).")
    url = reverse("designer:run-records", kwargs={"code": run.code})
    return redirect(f"{url}?{querystring(applied)}")


# -- one record at a time ---------------------------------------------------------------


def _neighbour(qs, rec, after):
    if after:
        cond = Q(seq__gt=rec.seq) | Q(seq=rec.seq, id__gt=rec.id)
        return qs.filter(cond).order_by("seq", "id")
    cond = Q(seq__lt=rec.seq) | Q(seq=rec.seq, id__lt=rec.id)
    return qs.filter(cond).order_by("-seq", "-id")


@login_required
def review_one(request, code):
    run = run_for(request.user, code)
    return _review_page(request, run)


def _review_page(request, run, record=None, edit_errors=None, edit_values=None):
    names = step_names(run)
    params = request.GET if record is None else filters_from(request)
    qs, filters = record_filters(run, params)
    base = with_lineage(Record.objects.filter(run=run), run)
    anchor_id = None
    if record is None:
        for key in ("record", "after", "before"):
            value = request.GET.get(key, "")
            if value.isdigit():
                anchor_id = int(value)
                anchor = get_object_or_404(Record.objects.filter(run=run).only("seq"), pk=value)
                if key == "record":
                    record = base.filter(pk=anchor.pk).first()
                else:
                    ids = _neighbour(qs, anchor, key == "after").values("id")[:1]
                    record = base.filter(pk__in=ids).first()
                break
        else:
            record = base.filter(pk__in=qs.order_by("seq", "id").values("id")[:1]).first()
    position = None
    if record is not None:
        position = _neighbour(qs, record, after=False).count() + 1
    current = {}
    fields = []
    if record is not None:
        current = in_order(record.current, record_keys(run))
        for k, v in current.items():
            original = record.data.get(k)
            fields.append(
                {
                    "key": k,
                    "value": pretty(v),
                    "edit_value": (edit_values or {}).get(k, pretty(v)),
                    "original": pretty(original),
                    "changed": record.edited is not None and original != v,
                    "rows": min(12, max(2, len(pretty(v)) // 80 + pretty(v).count("\n") + 1)),
                }
            )
    url = reverse("designer:run-review", kwargs={"code": run.code})
    return render(
        request,
        "runs/review.html",
        {
            "run": run,
            "record": record,
            "fields": fields,
            "lineage": lineage_of(record, run, names) if record else [],
            "position": position,
            "matching": qs.count(),
            "count": counter(run),
            "next_url": f"{url}?{querystring(filters, after=record.pk)}" if record else None,
            "prev_url": f"{url}?{querystring(filters, before=record.pk)}" if record else None,
            "back_url": f"{url}?{querystring(filters, record=anchor_id)}" if anchor_id else None,
            "edit_errors": edit_errors or [],
            "ws_path": f"/ws/runs/{run.code}/",
            **filter_context(run, filters),
        },
        status=200,
    )


def _back(run, record, filters, advance):
    url = reverse("designer:run-review", kwargs={"code": run.code})
    key = "after" if advance else "record"
    return redirect(f"{url}?{querystring(filters, **{key: record.pk})}")


@login_required
@require_POST
def record_review(request, code, record_id):
    """Accept, reject, unreview (and move on to the next record), or rate (and stay)."""
    run = run_for(request.user, code)
    record = get_object_or_404(Record, run=run, pk=record_id)
    _, filters = record_filters(run, filters_from(request))
    action = request.POST.get("action", "")
    if action in ACTIONS:
        Record.objects.filter(pk=record.pk).update(review=ACTIONS[action])
        return _back(run, record, filters, advance=action != "unreview")
    if action == "rate":
        value = request.POST.get("rating", "")
        if value in ("1", "2", "3", "4", "5"):
            Record.objects.filter(pk=record.pk).update(rating=int(value))
        elif value in ("", "0"):
            Record.objects.filter(pk=record.pk).update(rating=None)
        else:
            messages.error(request, "A rating is a whole number from 1 to 5.")
        return _back(run, record, filters, advance=False)
    messages.error(request, "Unknown action: accept, reject, unreview or rate.")
    return _back(run, record, filters, advance=False)


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
            why = getattr(exc, "msg", str(exc))
            problems.append(f"'{key}' must stay valid JSON like its original ({why}); fix it")
            values[key] = raw
    return values, problems


@login_required
@require_POST
def record_edit(request, code, record_id):
    run = run_for(request.user, code)
    record = get_object_or_404(Record, run=run, pk=record_id)
    _, filters = record_filters(run, filters_from(request))
    if request.POST.get("action") == "restore":
        Record.objects.filter(pk=record.pk).update(edited=None)
        messages.success(request, "Restored the original record.")
        return _back(run, record, filters, advance=False)
    values, problems = apply_edit(record, request.POST)
    if problems:
        posted = {k: request.POST.get(f"field:{k}", "") for k in values}
        record = with_lineage(Record.objects.filter(pk=record.pk), run).first()
        return _review_page(request, run, record, edit_errors=problems, edit_values=posted)
    edited = None if values == record.data else values
    Record.objects.filter(pk=record.pk).update(edited=edited)
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
]
