"""Who may see and do what: an object of a workspace the user is not in is a 404 (no hint
it exists); one whose workspace's role does not allow the action is a 403.

`pipeline_for(user, code, need)`, `run_for(...)` and `provider_for(...)` return the
object; `need` is one of runner.models.workspaces' needs (see its `CAN` table).
`current(request)` is the member record of the workspace the user works in now (the
one chosen with the switcher, kept in the session, else their first).
"""

from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import Http404

from runner.models import Member, Provider, ReviewPlan, Run, Workspace
from runner.models.workspaces import PIPELINES, PROVIDERS, REVIEWER, RUNS

from .models import Pipeline

SESSION_KEY = "workspace"


def _in_workspace(model, user, code, need):
    """The object and the user's role in its workspace, in one query."""
    role = Member.objects.filter(user=user, workspace_id=OuterRef("workspace_id")).values("role")
    obj = model.objects.filter(code=code).annotate(my_role=Subquery(role[:1])).first()
    if obj is None or obj.my_role is None:
        raise Http404(f"no such {model._meta.verbose_name}")
    member = Member(workspace_id=obj.workspace_id, user=user, role=obj.my_role)
    _refuse_unless(member, need)
    obj.member = member
    return obj


def _refuse_unless(member, what):
    if not member.can(what):
        raise PermissionDenied(f"As {member.get_role_display().lower()} you cannot {what} here")


def pipeline_for(user, code, need=PIPELINES):
    return _in_workspace(Pipeline, user, code, need)


def run_for(user, code, need=RUNS):
    """A run of the user's workspace; a reviewer opens only the runs whose review names them."""
    run = _in_workspace(Run, user, code, need)
    if run.member.role == REVIEWER and not _in_plan(run, user):
        raise PermissionDenied("As reviewer you can only open the runs you review")
    return run


def _in_plan(run, user):
    plan = ReviewPlan.objects.filter(run_id=run.pk).only("reviewers").first()
    return plan is not None and user.pk in plan.reviewers


def visible_runs(request):
    """The runs of the current workspace the user may open (a reviewer: the ones they review)."""
    member = current(request)
    runs = Run.objects.filter(workspace=member.workspace)
    if member.role != REVIEWER:
        return runs
    plans = ReviewPlan.objects.filter(run__in=runs).values_list("run_id", "reviewers")
    return runs.filter(pk__in=[rid for rid, people in plans if member.user_id in people])


def provider_for(user, code, need=PROVIDERS):
    return _in_workspace(Provider, user, code, need)


def memberships(request):
    """The user's member records (with their workspaces), read once per request."""
    cached = getattr(request, "_memberships", None)
    if cached is None:
        query = Member.objects.filter(user=request.user).select_related("workspace")
        cached = list(query.order_by("pk"))
        if not cached:  # an account made outside the product (the admin): its own workspace
            Workspace.personal(request.user)
            cached = list(query.order_by("pk"))
        request._memberships = cached
    return cached


def current(request):
    """The user's member record of the workspace they work in now."""
    mine = memberships(request)
    chosen = request.session.get(SESSION_KEY)
    return next((m for m in mine if str(m.workspace.code) == chosen), mine[0])


def need(request, what):
    """The current member record, or 403 when their role may not do `what`."""
    member = current(request)
    _refuse_unless(member, what)
    return member
