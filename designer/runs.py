"""Run pages: the runs list, one run live, cancel/resume/retry/budget, and the task inspector.

Every view checks access through `run_for` (a run of a workspace one is not in is a
404; an action one's role may not take, a 403). Pages
stay a few aggregate queries whatever the size of the run: the run page renders
`runner.events.stats.run_state` (the same state the websocket sends after), and tables
are paged 50 rows at a time.
"""

import json
import re
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Substr
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from runner import engine
from runner.events import stats
from runner.models import Run, Task
from runner.models.workspaces import CONTROL
from runner.spec import money

from . import actions, history
from .access import run_for, visible_runs
from .history import note
from .launch import RUN_NAME_CHARS
from .models import Pipeline

PAGE_SIZE = 50


def step_names(run):
    return [s.name for s in run.spec_obj.steps]


def pipeline_label(run):
    """'Name v3' for the saved pipeline a run executed, or the spec's name."""
    name = None
    if run.pipeline_code:
        name = (
            Pipeline.objects.filter(code=run.pipeline_code).values_list("name", flat=True).first()
        )
    name = name or run.spec_obj.name
    return f"{name} v{run.pipeline_version}" if run.pipeline_version else name


def pretty(value):
    """JSON as people read it (escaped by the template like any other text)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def duration(start, end=None):
    """'1h 05m', '3m 20s', '12s' from start to end (or now); None before the start."""
    if not start:
        return None
    total = max(0, int(((end or timezone.now()) - start).total_seconds()))
    h, m, s = total // 3600, total % 3600 // 60, total % 60
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def ancestors(task, depth):
    """The task's chain from the seed input down to it; `task` was loaded with its parents."""
    chain = []
    while task is not None and len(chain) <= depth:
        chain.append(task)
        if task.parent_id is None:
            break
        task = task.parent
    return list(reversed(chain))


def lineage_path(prefix, depth):
    """'task__parent__parent': select_related along it loads a lineage in the same query."""
    return "__".join(([prefix] if prefix else []) + ["parent"] * depth)


# -- runs list ---------------------------------------------------------------------


def tally_totals(tally):
    """What the runs list shows of a run, from its tasks' counts by step and status."""
    return {
        "total": sum(row["n"] for row in tally),
        "finished": sum(row["n"] for row in tally if row["status"] in Task.TERMINAL),
        "failed": sum(row["n"] for row in tally if row["status"] == Task.FAILED),
        "calls": sum(row["calls"] for row in tally),
        "tokens": sum(row["tin"] + row["tout"] for row in tally),
        "cost": sum(row["cost"] for row in tally),
    }


@login_required
def run_list(request):
    runs = (
        visible_runs(request)
        .order_by("-created")
        .only(
            "code",
            "name",
            "status",
            "error",
            "created",
            "started",
            "finished",
            "pipeline_code",
            "pipeline_version",
            "tally",
        )
        .annotate(spec_name=KT("spec__name"))
    )
    page = Paginator(runs, PAGE_SIZE).get_page(request.GET.get("page"))
    # An ended run's tasks are counted already (`Run.tally`); the others' are counted the
    # same way, in one grouped query for all of them.
    tallies = {r.pk: r.tally for r in page if r.tally is not None and not r.is_active}
    counting = [r.pk for r in page if r.pk not in tallies]
    for row in Task.objects.filter(run_id__in=counting).tally(by_run=True):
        tallies.setdefault(row["run_id"], []).append(row)
    counts = {pk: tally_totals(tally) for pk, tally in tallies.items()}
    codes = {r.pipeline_code for r in page if r.pipeline_code}
    names = dict(Pipeline.objects.filter(code__in=codes).values_list("code", "name"))
    rows = []
    for r in page:
        c = counts.get(r.pk, {})
        total, finished = c.get("total", 0), c.get("finished", 0)
        rows.append(
            {
                "run": r,
                "pipeline": names.get(r.pipeline_code) or r.spec_name or "",
                "version": r.pipeline_version,
                "total": total,
                "finished": finished,
                "failed": c.get("failed", 0),
                "calls": c.get("calls") or 0,
                "tokens": c.get("tokens") or 0,
                "duration": duration(r.started, r.finished),
                "cost": money.fmt_dollars(c["cost"]) if c.get("cost") else None,
            }
        )
    return render(request, "runs/list.html", {"page": page, "rows": rows})


# -- one run, live --------------------------------------------------------------------


MIN_BUDGET = Decimal("0.01")
MAX_BUDGET = Decimal("99999999")


def parse_budget(text):
    """(dollars as a Decimal, None) or (None, the problem in plain words)."""
    text = (text or "").strip().replace("$", "").replace(",", "")
    if not text:
        return None, "Give the new budget in dollars, like 5 or 12.50."
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None, f"“{text[:40]}” is not an amount of dollars; write it like 5 or 12.50."
    if not amount.is_finite():
        return None, "Give the new budget in dollars, like 5 or 12.50."
    if amount < MIN_BUDGET:
        return None, "The budget must be at least $0.01."
    if amount > MAX_BUDGET:
        return None, "That budget is too large."
    if amount != amount.quantize(Decimal("0.0001")):
        return None, "Give the budget in dollars and cents, like 12.50."
    return amount, None


def spend(run, state):
    """What the run has spent in micro-dollars: live from the state when it has a cost."""
    if state.get("cost_micro") is not None:
        return state["cost_micro"]
    return run.spent


@login_required
def run_detail(request, code):
    run = run_for(request.user, code)
    state = stats.run_state(run)
    spent = spend(run, state)
    budget = run.budget_micro
    return render(
        request,
        "runs/detail.html",
        {
            "run": run,
            "spec": run.spec_obj,
            "state": state,
            "pipeline": pipeline_label(run),
            "percent": round(100 * state["progress"], 1),
            "elapsed": duration(run.started, run.finished) or "-",
            "ws_path": f"/ws/runs/{run.code}/",
            "spent": money.fmt_dollars(spent),
            "budget": "" if budget is None else money.fmt_dollars(budget),
            "budget_dollars": None if budget is None else money.dollars(budget),
            "paused": run.status == Run.PAUSED,
            "history": history.of_run(run),
            "can_control": run.member.can(CONTROL),
            "name_chars": RUN_NAME_CHARS,
        },
    )


@login_required
@require_POST
def run_cancel(request, code):
    run = run_for(request.user, code, CONTROL)
    if not run.is_active:
        messages.error(request, f"The run is {run.status}, so there is nothing to cancel.")
    else:
        engine.cancel_run(run)
        note(request.user, run.workspace_id, "cancelled the run", run=run)
        messages.success(request, "Cancelled: calls in flight finish; resume picks up the rest.")
    return redirect("designer:run-detail", code=run.code)


@login_required
@require_POST
def run_resume(request, code):
    run = run_for(request.user, code, CONTROL)
    if run.is_active:
        messages.error(request, "The run is still going: cancel it first to resume it later.")
    elif run.status in (Run.COMPLETED, Run.COMPLETED_WITH_FAILURES):
        messages.error(request, "The run has completed; to run failed tasks again, retry them.")
    else:
        engine.resume_run(run, failed=False)
        note(request.user, run.workspace_id, "resumed the run", run=run)
        messages.success(request, "Resumed: tasks not yet done are queued again.")
    return redirect("designer:run-detail", code=run.code)


@login_required
@require_POST
def run_retry_failed(request, code):
    run = run_for(request.user, code, CONTROL)
    failed = Task.objects.filter(run=run, status=Task.FAILED).count()
    if not failed:
        messages.error(request, "No task has failed, so there is nothing to retry.")
    else:
        engine.retry_failed(run)
        note(request.user, run.workspace_id, f"retried {failed:,} failed task(s)", run=run)
        messages.success(request, f"Retrying {failed} failed task(s) with fresh calls.")
    return redirect("designer:run-detail", code=run.code)


@login_required
@require_POST
def run_rename(request, code):
    run = run_for(request.user, code, CONTROL)
    name = " ".join(request.POST.get("name", "").split())
    if not name:
        messages.error(request, "The run was not renamed: give it a name.")
    elif len(name) > RUN_NAME_CHARS:
        messages.error(
            request, f"The run was not renamed: a name holds at most {RUN_NAME_CHARS} characters."
        )
    else:
        old = run.name
        actions.rename_run(run, name)
        note(request.user, run.workspace_id, f"renamed the run from “{old}” to “{name}”", run=run)
        messages.success(request, f"Renamed the run “{name}”.")
    return redirect("designer:run-detail", code=run.code)


@login_required
@require_POST
def run_budget(request, code):
    """Set a new budget (dollars); a run paused on its budget goes on when the new one allows."""
    run = run_for(request.user, code, CONTROL)
    amount, problem = parse_budget(request.POST.get("budget"))
    if problem:
        messages.error(request, f"The budget was not changed: {problem}")
        return redirect("designer:run-detail", code=run.code)
    was_paused = run.status == Run.PAUSED
    run = engine.set_budget(run, amount)
    shown = money.fmt_dollars(run.budget_micro)
    if run.status == Run.PAUSED:
        messages.error(
            request,
            f"The budget is now {shown}, but the run has already spent "
            f"{money.fmt_dollars(run.spent)}: it stays paused. Raise it further to go on.",
        )
    elif was_paused:
        note(request.user, run.workspace_id, f"set the budget to {shown}", run=run)
        messages.success(request, f"The budget is now {shown}: the run goes on.")
    else:
        note(request.user, run.workspace_id, f"set the budget to {shown}", run=run)
        messages.success(request, f"The budget is now {shown}.")
    return redirect("designer:run-detail", code=run.code)


# -- task inspector ---------------------------------------------------------------------


@login_required
def task_list(request, code):
    run = run_for(request.user, code)
    names = step_names(run)
    tasks = Task.objects.filter(run=run)
    step, status = request.GET.get("step", ""), request.GET.get("status", "")
    reason = request.GET.get("reason", "")
    if step.isdigit() and int(step) < len(names):
        tasks = tasks.filter(step=int(step))
    else:
        step = ""
    if status in dict(Task.STATUSES):
        tasks = tasks.filter(status=status)
    else:
        status = ""
    if reason:
        tasks = tasks.filter(error__startswith=reason)
    tasks = (
        tasks.order_by("step", "seq", "id")
        .only(
            "id",
            "step",
            "status",
            "key",
            "error",
            "model",
            "attempts",
            "tokens_in",
            "tokens_out",
            "latency_ms",
            "cached",
        )
        .annotate(
            input_excerpt=Substr(Cast("context", TextField()), 1, 160),
            output_excerpt=Substr("raw_output", 1, 160),
        )
    )
    page = Paginator(tasks, PAGE_SIZE).get_page(request.GET.get("page"))
    for t in page:
        t.step_name = names[t.step] if t.step < len(names) else t.step
    query = {k: v for k, v in (("step", step), ("status", status), ("reason", reason)) if v}
    return render(
        request,
        "runs/tasks.html",
        {
            "run": run,
            "page": page,
            "steps": list(enumerate(names)),
            "statuses": [s for s, _ in Task.STATUSES],
            "step": step,
            "status": status,
            "reason": reason,
            "query": urlencode(query),
        },
    )


SHOWN_CHARS = 20_000  # of a prompt or a reply on the task page, until "show all"


def _shown(text, everything):
    """(what the page shows of `text`, how many characters it leaves out)."""
    text = text or ""
    if everything or len(text) <= SHOWN_CHARS:
        return text, ""
    return text[:SHOWN_CHARS], f"{len(text) - SHOWN_CHARS:,}"


def _messages(messages, everything=False):
    """A prompt as sent, for the page: role and content of each message (cut when long)."""
    out = []
    for m in messages or []:
        if isinstance(m, dict):
            content, cut = _shown(pretty(m.get("content")), everything)
            out.append({"role": m.get("role", ""), "content": content, "cut": cut})
    return out


ITEM_KEY = re.compile(r"t(\d+)\.(\d+)")


def origin(key):
    """Where a task came from, in words: "input row 37", "result 2 of task 301"."""
    kind, _, rest = key.partition(":")
    if kind == "in" and rest.isdigit():
        return f"input row {int(rest) + 1}"
    item = ITEM_KEY.fullmatch(key)
    if item:
        return f"result {int(item[2]) + 1} of task {item[1]}"
    if kind.startswith("agg"):
        return "the results of the step before, gathered into one list"
    return "the step before"


@login_required
def task_detail(request, code, task_id):
    run = run_for(request.user, code)
    names = step_names(run)
    qs = Task.objects.filter(run=run)
    if len(names) > 1:
        qs = qs.select_related(lineage_path("", len(names) - 1))
    task = get_object_or_404(qs, pk=task_id)
    lineage = ancestors(task, len(names))
    children = list(
        task.children.order_by("seq", "id").only("id", "step", "status", "key", "variant")[:100]
    )
    n_children = task.children.count() if len(children) == 100 else len(children)
    records = list(task.records.order_by("seq").only("id", "key", "review", "rating")[:50])
    for t in lineage + children:
        t.step_name = names[t.step] if t.step < len(names) else t.step
    everything = request.GET.get("all") == "1"
    raw_output, raw_cut = _shown(task.raw_output, everything)
    return render(
        request,
        "runs/task.html",
        {
            "run": run,
            "task": task,
            "step_name": names[task.step] if task.step < len(names) else task.step,
            "origin": origin(task.key),
            "context": pretty(task.context),
            "parsed": pretty(task.parsed),
            "prompt": _messages(task.messages, everything),
            "raw_output": raw_output,
            "raw_cut": raw_cut,
            "attempts": [a for a in task.attempt_log or [] if isinstance(a, dict)],
            "trace": [
                {
                    **c,
                    "prompt": _messages(c.get("messages")),
                    "memory": pretty(c["memory"]) if c.get("memory") else "",
                }
                for c in task.trace or []
                if isinstance(c, dict)
            ],
            "lineage": lineage[:-1],
            "children": children,
            "n_children": n_children,
            "records": records,
            "review_url": reverse("designer:run-review", kwargs={"code": run.code}),
        },
    )


urlpatterns = [
    path("runs/", run_list, name="run-list"),
    path("runs/<uuid:code>/", run_detail, name="run-detail"),
    path("runs/<uuid:code>/cancel/", run_cancel, name="run-cancel"),
    path("runs/<uuid:code>/resume/", run_resume, name="run-resume"),
    path("runs/<uuid:code>/retry-failed/", run_retry_failed, name="run-retry-failed"),
    path("runs/<uuid:code>/budget/", run_budget, name="run-budget"),
    path("runs/<uuid:code>/rename/", run_rename, name="run-rename"),
    path("runs/<uuid:code>/tasks/", task_list, name="run-tasks"),
    path("runs/<uuid:code>/tasks/<int:task_id>/", task_detail, name="task-detail"),
]
