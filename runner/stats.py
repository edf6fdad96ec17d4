"""What a run looks like now: counts per step, tokens, failures by reason.

The run page, the websocket and the command line all read the state from here;
the database is the truth.
"""

from django.db.models import Count, Sum

from .models import Record, Task


def run_state(run):
    """The current state of a run, as the run page and the command line show it."""
    spec = run.spec
    steps = [
        {
            "index": i,
            "name": s["name"],
            "counts": {k: 0 for k, _ in Task.STATUSES},
            "tokens_in": 0,
            "tokens_out": 0,
        }
        for i, s in enumerate(spec.get("steps", []))
    ]
    rows = (
        Task.objects.filter(run_id=run.pk)
        .values("step", "status")
        .annotate(n=Count("id"), tin=Sum("tokens_in"), tout=Sum("tokens_out"))
    )
    for row in rows:
        if row["step"] < len(steps):
            st = steps[row["step"]]
            st["counts"][row["status"]] = row["n"]
            st["tokens_in"] += row["tin"] or 0
            st["tokens_out"] += row["tout"] or 0
    return {
        "run": str(run.code),
        "retrying": retrying(run),
        "status": run.status,
        "error": run.error,
        "steps": steps,
        "records": Record.objects.filter(run_id=run.pk).count(),
        "started": run.started.isoformat() if run.started else None,
        "finished": run.finished.isoformat() if run.finished else None,
    }


def failure_summary(run):
    """Failed tasks counted by reason, most common first."""
    rows = (
        Task.objects.filter(run_id=run.pk, status=Task.FAILED)
        .values("error")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
    return [(r["n"], r["error"]) for r in rows]


def retrying(run):
    """Calls of this run waiting to try again after a transient error (kept in Redis by drivers)."""
    from . import limits

    try:
        return sum(int(v) for v in limits.client().hvals(f"pd:retrying:{run.pk}"))
    except Exception:
        return 0
