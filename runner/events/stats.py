"""What a run looks like now: counts per step, rates, tokens, failures by reason.

The run page, the websocket and the command line all read the state from here;
the database is the truth. `run_state` stays a handful of aggregate queries
whatever the size of the run (no per-task loops), because drivers announce it a
few times a second and the run page renders it on every load.
"""

import collections
import json
from datetime import timedelta

from django.db.models import Avg, Count, F, Q, Sum
from django.utils import timezone

from runner.engine import keys, limits
from runner.models import Provider, Record, Task
from runner.spec import estimate
from runner.spec.money import fmt_dollars

from .quality import cached_quality, final_quality
from .reviews import reviewer_progress

WINDOW_SECONDS = 10  # calls per second are counted over this many recent seconds
FAILURE_REASONS = 20  # the most common reasons the state carries
REASON_CHARS = 300
WAITING = {"aggregate", "flatten", "python"}  # callbacks that make children when their step ends


def priced(run, spent=0):
    """Whether the run's cost means anything: it has spent, or one of its providers has prices."""
    if spent:
        return True
    ids = [v for v in (run.providers or {}).values() if v]
    return bool(ids) and Provider.objects.filter(pk__in=ids).exclude(prices={}).exists()


def task_tally(run):
    """The run's tasks counted by step and status: kept on an ended run, counted otherwise."""
    if run.tally is not None and not run.is_active:
        return run.tally
    return Task.objects.filter(run_id=run.pk).tally()


def run_state(run, now=None):
    """The current state of a run, as the run page and the command line show it."""
    now = now or timezone.now()
    spec_steps = run.spec_obj.steps
    steps = [
        {
            "index": i,
            "name": s.name,
            "callback": s.callback.type,
            "callback_words": s.callback.words,
            "counts": {k: 0 for k, _ in Task.STATUSES},
            "tokens_in": 0,
            "tokens_out": 0,
            "calls": 0,
            "calls_per_second": 0.0,
        }
        for i, s in enumerate(spec_steps)
    ]
    step_costs = [0] * len(steps)  # micro-dollars
    rows = task_tally(run)
    for row in rows:
        if row["step"] < len(steps):
            st = steps[row["step"]]
            st["counts"][row["status"]] = row["n"]
            st["tokens_in"] += row["tin"] or 0
            st["tokens_out"] += row["tout"] or 0
            st["calls"] += row["calls"] or 0
            step_costs[row["step"]] += row["cost"] or 0

    elapsed = _elapsed(run, now)
    active = run.is_active
    if active:  # a task held for a slot is waiting, not running, as far as a person can tell
        for i, n in held(run).items():
            if i < len(steps):
                counts = steps[i]["counts"]
                moved = min(n, counts[Task.RUNNING])
                counts[Task.RUNNING] -= moved
                counts[Task.PENDING] += moved
    window = min(WINDOW_SECONDS, max(1.0, elapsed)) if active else WINDOW_SECONDS
    if active:
        recent = (
            Task.objects.filter(run_id=run.pk, finished__gte=now - timedelta(seconds=window))
            .values("step")
            .annotate(n=Count("id"))
            .order_by()
        )
        for row in recent:
            if row["step"] < len(steps):
                steps[row["step"]]["calls_per_second"] = round(row["n"] / window, 2)

    _project(steps, spec_steps, run)
    finished = sum(s["finished"] for s in steps)
    expected = sum(s["expected"] for s in steps)
    rate = sum(s["calls_per_second"] for s in steps)
    average = finished / elapsed if elapsed > 0 else 0.0
    remaining = max(0, expected - finished)
    speed = rate or average
    eta = round(remaining / speed) if active and remaining and speed > 0 else None

    records = Record.objects.filter(run_id=run.pk).counts()
    _made(steps, records["total"])
    failed = sum(s["counts"][Task.FAILED] for s in steps)
    failures = failure_summary(run, limit=FAILURE_REASONS) if failed else []
    state = {
        "run": str(run.code),
        "retrying": retrying(run) if active else 0,
        "status": run.status,
        "status_label": run.get_status_display(),
        "active": active,
        "error": run.error,
        "steps": steps,
        "records": records["total"],
        "reviewed": records["reviewed"],
        "accepted": records["accepted"],
        "rejected": records["rejected"],
        "set_aside": {
            "filtered": records["filtered"],
            "duplicates": records["duplicates"],
            "near_duplicates": records["near_duplicates"],
        },
        "tokens_in": sum(s["tokens_in"] for s in steps),
        "tokens_out": sum(s["tokens_out"] for s in steps),
        "calls": sum(s["calls"] for s in steps),
        "finished_tasks": finished,
        "expected_tasks": expected,
        "progress": round(finished / expected, 4) if expected else 0.0,
        "calls_per_second": round(rate, 2),
        "average_calls_per_second": round(average, 2),
        "elapsed_seconds": round(elapsed, 1),
        "eta_seconds": eta,
        "failed": failed,
        "failures": [
            {"n": n, "reason": reason[:REASON_CHARS], "cut": len(reason) > REASON_CHARS}
            for n, reason in failures
        ],
        "now": now.isoformat(),
        "started": run.started.isoformat() if run.started else None,
        "finished": run.finished.isoformat() if run.finished else None,
        "quality": cached_quality(run),
        "reviewers": reviewer_progress(run),
    }
    state["chain"] = live_chain(state)
    spent = sum(step_costs)
    if priced(run, spent):  # micro-dollars, and in words for the page (its script shows the text)
        state["cost_micro"], state["cost_text"] = spent, fmt_dollars(spent)
        for st, micro in zip(steps, step_costs, strict=True):
            st["cost_micro"], st["cost_text"] = micro, fmt_dollars(micro)
    return state


def _elapsed(run, now):
    if not run.started:
        return 0.0
    end = run.finished or now
    return max(0.0, (end - run.started).total_seconds())


def _project(steps, spec_steps, run):
    """How many tasks each step will have in the end, from what its parents made so far.

    A parent that has finished counts the children it made; one still open counts
    the estimator's fan-out per task (`runner.spec.estimate.count`: the number its
    prompt asks for, n copies for broadcast, one for one-to-one). Waiting callbacks
    make at least one task.
    """
    # Fan-out per task does not depend on how many inputs there are: one stands for all
    # (reading the run's inputs on every announcement would cost more than the state).
    planned = estimate.count(run.spec_obj, [{}])
    aggregated = set(run.aggregated or [])
    for i, st in enumerate(steps):
        c = st["counts"]
        total = sum(c.values())
        st["total"] = total
        st["finished"] = c[Task.DONE] + c[Task.FAILED] + c[Task.CANCELLED]
        if i == 0:
            st["expected"] = total
            continue
        prev = steps[i - 1]
        cb = spec_steps[i - 1].callback
        kind = cb.type
        open_parents = max(0, prev["expected"] - prev["finished"])
        if kind in WAITING:
            st["expected"] = (
                total if (i - 1) in aggregated else max(total, 1 if prev["expected"] else 0)
            )
            continue
        if kind in ("default", "pick"):
            fan = 1.0
        elif kind == "broadcast":
            fan = float(cb.n or 1)
        else:
            fan = planned[i - 1].per_task if len(planned) >= i else 1.0
        st["expected"] = total + round((fan or 1.0) * open_parents)


def _made(steps, records):
    """What each step has passed on so far (the next step's tasks; the last step, records)
    and how far it is, in words: "12 of 50 done, 3 failed"."""
    for st, after in zip(steps, steps[1:] + [None], strict=True):
        st["made"] = after["total"] if after else records
        st["made_words"] = f"{st['made']:,} made"
        failed = st["counts"][Task.FAILED]
        st["words"] = f"{st['counts'][Task.DONE]:,} of {st['expected']:,} done" + (
            f", {failed:,} failed" if failed else ""
        )


def live_chain(state):
    """The pipeline's counts so far, as its drawing says them: "50 → 250 → 250 → 250, 3 failed"."""
    steps = state["steps"]
    counts = [steps[0]["total"] if steps else 0] + [s["made"] for s in steps]
    extra = [f"{state[k]:,} {k}" for k in ("retrying", "failed") if state[k]]
    return ", ".join([" → ".join(f"{n:,}" for n in counts), *extra])


def failure_summary(run, limit=None):
    """Failed tasks counted by reason, most common first."""
    rows = Task.objects.filter(run_id=run.pk).failure_reasons()
    if limit:
        rows = rows[:limit]
    return [(r["n"], r["error"]) for r in rows]


def run_summary(run, wall_s=None):
    """What a finished run did, as the CLI's `--summary` JSON gives it."""
    tasks = Task.objects.filter(run_id=run.pk).aggregate(
        done=Count("id", filter=Q(status=Task.DONE)),
        failed=Count("id", filter=Q(status=Task.FAILED)),
        cancelled=Count("id", filter=Q(status=Task.CANCELLED)),
        from_cache=Count("id", filter=Q(cached=True)),
        made=Sum("attempts", filter=Q(cached=False)),
        again=Sum(F("attempts") - 1, filter=Q(cached=False, attempts__gt=1)),
        lost=Sum("lost"),
        t_in=Sum("tokens_in"),
        t_out=Sum("tokens_out"),
    )
    return {
        "run": str(run.code),
        "status": run.status,
        "error": run.error,
        "records": Record.objects.filter(run_id=run.pk).kept().count(),
        "tasks": {k: tasks[k] for k in ("done", "failed", "cancelled")},
        "calls": {
            "made": tasks["made"] or 0,
            "from_cache": tasks["from_cache"],
            "retried": tasks["again"] or 0,
            "lost": tasks["lost"] or 0,  # under way when a worker stopped: tokens unknown
        },
        "tokens": {"in": tasks["t_in"] or 0, "out": tasks["t_out"] or 0},
        "cost": run.spent / 1_000_000,
        "failures": [{"reason": r, "count": n} for n, r in failure_summary(run)],
        "wall_s": round(wall_s, 3) if wall_s is not None else None,
        "quality": final_quality(run),
    }


def retrying(run):
    """Calls of this run waiting to try again after a transient error (kept in Redis by drivers)."""
    try:
        return sum(int(v) for v in limits.client().hvals(keys.retrying(run.code)))
    except Exception:
        return 0


def held(run):
    """Tasks of this run that drivers hold for a slot, by step: running in the database
    since their claim, their call not sent yet (kept in Redis by drivers)."""
    by_step = collections.Counter()
    try:
        for raw in limits.client().hvals(keys.held(run.code)):
            by_step.update({int(step): int(n) for step, n in json.loads(raw).items()})
    except Exception:
        return {}
    return by_step


def review_stats(run):
    """Counts of the run's records by review state, edits and ratings (one query each)."""
    agg = (
        Record.objects.filter(run_id=run.pk)
        .kept()
        .aggregate(
            total=Count("id"),
            accepted=Count("id", filter=Q(review=Record.ACCEPTED)),
            rejected=Count("id", filter=Q(review=Record.REJECTED)),
            edited=Count("id", filter=Q(edited__isnull=False)),
            rated=Count("id", filter=Q(rating__isnull=False)),
            average=Avg("rating"),
        )
    )
    agg["unreviewed"] = agg["total"] - agg["accepted"] - agg["rejected"]
    ratings = (
        Record.objects.filter(run_id=run.pk, rating__isnull=False)
        .kept()
        .values("rating")
        .annotate(n=Count("id"))
        .order_by("rating")
    )
    agg["ratings"] = {r["rating"]: r["n"] for r in ratings}
    return agg


def models_used(run):
    """{step index: [(model, calls)]} for the tasks that finished."""
    out = {}
    rows = (
        Task.objects.filter(run_id=run.pk, status=Task.DONE)
        .exclude(model="")
        .values("step", "model")
        .annotate(n=Count("id"))
        .order_by("step", "-n")
    )
    for r in rows:
        out.setdefault(r["step"], []).append((r["model"], r["n"]))
    return out
