"""How a run's review goes: per reviewer of its plan, records assigned, reviewed, speed."""

from django.db.models import Count, Max, Min

from runner.models import Member, Record, Review, ReviewPlan


def plan_of(run):
    """The run's review plan, or None (read once per run object)."""
    if not hasattr(run, "_review_plan"):
        run._review_plan = ReviewPlan.objects.filter(run_id=run.pk).first()
    return run._review_plan


def reviewer_progress(run, plan=None):
    """Per reviewer: assigned, reviewed, and speed (records a minute while they reviewed)."""
    plan = plan or plan_of(run)
    if plan is None:
        return []
    names = dict(
        Member.objects.filter(
            workspace_id=run.workspace_id, user_id__in=plan.reviewers
        ).values_list("user_id", "user__username")
    )
    records = Record.objects.filter(run_id=run.pk).kept()
    done = dict.fromkeys(plan.reviewers, None)
    rows = (
        Review.objects.filter(record__run_id=run.pk)
        .exclude(decision=Record.UNREVIEWED)
        .values("reviewer_id")
        .annotate(n=Count("id"), first=Min("created"), last=Max("updated"))
    )
    for row in rows:
        done[row["reviewer_id"]] = row
    out = []
    for user_id in plan.reviewers:
        row = done.get(user_id) or {}
        n = row.get("n", 0)
        minutes = (row["last"] - row["first"]).total_seconds() / 60 if n > 1 else 0
        out.append(
            {
                "user_id": user_id,
                "name": names.get(user_id, f"user {user_id} (no longer a member)"),
                "assigned": plan.assigned(records, user_id).count(),
                "reviewed": n,
                "per_minute": round(n / minutes, 1) if minutes > 0 else None,
            }
        )
    return out
