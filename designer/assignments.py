"""Review by several people: assign a run's records, each reviewer's queue, their
progress, agreement between them, conflicts an editor settles, and guidelines.

- **Assign review** (editors): the reviewers (members who may review) and how many
  review each record (1: the records are split among them; k: every record goes to k
  of them). Records are assigned as they are made (`runner.models.reviews`).
- **My queue**: the reviewer's next assigned record they have not reviewed yet.
- A plan reviewer's accept / reject / rating is their own `Review`; the record's
  decision is the majority, unless an editor settled it. An editor or admin who is not
  in the plan settles the decision directly (as review did before plans).
- **Agreement**: percent agreement, Cohen's kappa (two reviewers) or Fleiss' kappa
  (more), the spread of ratings, and the records where the reviewers disagree.
"""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST
from markdown_it import MarkdownIt

from runner.events import progress
from runner.events.reviews import plan_of, reviewer_progress
from runner.models import Member, Record, Review, ReviewPlan
from runner.models.reviews import decide
from runner.models.workspaces import CONTROL, REVIEW, REVIEWER
from runner.spec import agreement

from .access import run_for
from .history import note
from .models import Pipeline

GUIDELINES_CHARS = 20_000
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_guidelines(text):
    """Markdown as HTML, safely: raw HTML in it is shown as text, links only http(s)/mailto."""
    if not text.strip():
        return ""
    try:
        return mark_safe(_markdown.render(text))  # html=False: every tag arrives escaped
    except Exception:  # a renderer bug must not hide the text
        return mark_safe(f"<pre>{escape(text)}</pre>")


# -- each reviewer's verdict --------------------------------------------------------------


def own_verdict(run, record, user, *, decision=None, rating=False):
    """Record a plan reviewer's decision and/or rating; True when the user is in the plan."""
    plan = plan_of(run)
    if plan is None or user.pk not in plan.reviewers_of(record.pk):
        return False
    with transaction.atomic():
        review, _ = Review.objects.get_or_create(record=record, reviewer=user)
        if decision is not None:
            review.decision = decision
        if rating is not False:
            review.rating = rating
        review.save()
        ratings = [r for r in record.reviews.values_list("rating", flat=True) if r]
        record.rating = round(sum(ratings) / len(ratings)) if ratings else None
        record.save(update_fields=["rating"])
        decide(record)
    progress.announce(run)  # the run page's reviewer progress moves
    return True


def own_verdicts(run, records, user, decision):
    """A plan reviewer's decision on every record of `records` assigned to them (their own
    reviews); None when the user is not in the plan."""
    plan = plan_of(run)
    if plan is None or plan.index_of(user.pk) is None:
        return None
    n = 0
    for record in plan.assigned(records, user.pk).order_by("id").iterator():
        with transaction.atomic():
            Review.objects.update_or_create(
                record=record, reviewer=user, defaults={"decision": decision}
            )
            decide(record)
        n += 1
    progress.announce(run)
    return n


def assigned_elsewhere(run, record, user):
    """True when the run has a plan and this reviewer is not one of the record's."""
    plan = plan_of(run)
    return plan is not None and user.pk not in plan.reviewers_of(record.pk)


def narrow_to_mine(sel, run, params):
    """A selection narrowed to the user's assigned records (`mine=1`; always for a
    reviewer), and to those they have not reviewed (`todo=1`)."""
    member = getattr(run, "member", None)
    plan = plan_of(run) if member is not None else None
    if plan is None:
        return
    forced = member.role == REVIEWER
    if params.get("mine") != "1" and not forced:
        return
    sel.records = plan.assigned(sel.records, member.user_id)
    sel.filters["mine"] = "1"
    sel.words.append("assigned to you")
    if params.get("todo") == "1":
        done = Review.objects.filter(reviewer_id=member.user_id).exclude(decision=Record.UNREVIEWED)
        sel.records = sel.records.exclude(pk__in=done.values("record_id"))
        sel.filters["todo"] = "1"
        sel.words.append("not reviewed by you yet")


# -- agreement -----------------------------------------------------------------------------


def verdicts_by_record(run):
    """{record id: {reviewer id: (decision, rating)}} of the run's reviews."""
    out = {}
    rows = Review.objects.filter(record__run_id=run.pk).values_list(
        "record_id", "reviewer_id", "decision", "rating"
    )
    for record_id, reviewer_id, decision, rating in rows:
        out.setdefault(record_id, {})[reviewer_id] = (decision, rating)
    return out


def agreement_of(run, plan):
    """The agreement numbers and the conflicting records of a run with a plan."""
    by_record = verdicts_by_record(run)
    decided = {
        rid: {u: d for u, (d, _) in votes.items() if d != Record.UNREVIEWED}
        for rid, votes in by_record.items()
    }
    items = [list(v.values()) for v in decided.values() if len(v) >= 2]
    mean, unanimous = agreement.percent_agreement(items)
    out = {"records": len(items), "percent": mean, "unanimous": unanimous, "kappa": None}
    if len(plan.reviewers) == 2:
        a, b = plan.reviewers
        both = [v for v in decided.values() if a in v and b in v]
        out["kappa_name"] = "Cohen's kappa"
        out["kappa"] = agreement.cohen_kappa([v[a] for v in both], [v[b] for v in both])
    elif items:
        k = max(set(map(len, items)), key=list(map(len, items)).count)
        out["kappa_name"] = f"Fleiss' kappa ({k} reviews a record)"
        out["kappa"] = agreement.fleiss_kappa([x for x in items if len(x) == k])
    ratings = [[r for _, r in votes.values() if r] for votes in by_record.values()]
    out["rating_range"], out["rating_stdev"] = agreement.rating_spread(ratings)
    out["conflicts"] = [rid for rid, v in decided.items() if len(set(v.values())) > 1]
    return out


# -- pages ---------------------------------------------------------------------------------


class PlanForm(forms.Form):
    reviewers = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one reviewer."},
    )
    overlap = forms.IntegerField(
        label="Reviews per record",
        min_value=1,
        initial=1,
        help_text="1 splits the records among the reviewers; 2 or more gives every record "
        "to that many of them, so their agreement can be measured.",
    )
    guidelines = forms.CharField(
        label="Guidelines (Markdown, shown beside each record while reviewing)",
        required=False,
        max_length=GUIDELINES_CHARS,
        widget=forms.Textarea(attrs={"rows": 6}),
    )

    def __init__(self, *args, members, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reviewers"].choices = [
            (str(m.user_id), f"{m.user.username} ({m.get_role_display().lower()})") for m in members
        ]

    def clean(self):
        data = super().clean()
        chosen, overlap = data.get("reviewers") or [], data.get("overlap")
        if chosen and overlap and overlap > len(chosen):
            self.add_error(
                "overlap",
                f"With {len(chosen)} reviewer(s), a record can have at most {len(chosen)} "
                "reviews: choose more reviewers or fewer reviews per record.",
            )
        return data


def _reviewing_members(run):
    members = Member.objects.filter(workspace_id=run.workspace_id).select_related("user")
    return [m for m in members.order_by("pk") if m.can(REVIEW)]


@login_required
def assign(request, code):
    run = run_for(request.user, code, CONTROL)
    plan = plan_of(run)
    members = _reviewing_members(run)
    initial = (
        {"reviewers": [str(u) for u in plan.reviewers], "overlap": plan.overlap,
         "guidelines": plan.guidelines}
        if plan
        else {"guidelines": _pipeline_guidelines(run)}
    )  # fmt: skip
    form = PlanForm(request.POST or None, members=members, initial=initial)
    if request.method == "POST" and form.is_valid():
        order = [m.user_id for m in members]
        chosen = sorted((int(u) for u in form.cleaned_data["reviewers"]), key=order.index)
        ReviewPlan.objects.update_or_create(
            run=run,
            defaults={
                "reviewers": chosen,
                "overlap": form.cleaned_data["overlap"],
                "guidelines": form.cleaned_data["guidelines"],
            },
        )
        progress.announce(run)
        note(
            request.user,
            run.workspace_id,
            f"assigned the review to {len(chosen)} reviewer(s), "
            f"{form.cleaned_data['overlap']} review(s) a record",
            run=run,
        )
        messages.success(
            request,
            f"Review assigned to {len(chosen)} reviewer(s), "
            f"{form.cleaned_data['overlap']} review(s) a record.",
        )
        return redirect("designer:run-detail", code=run.code)
    return render(request, "runs/assign.html", {"run": run, "form": form, "plan": plan})


def _pipeline_guidelines(run):
    pipeline = Pipeline.objects.filter(code=run.pipeline_code).only("guidelines").first()
    return pipeline.guidelines if pipeline else ""


@login_required
def my_queue(request, code):
    """The reviewer's next record: assigned to them, not reviewed by them yet."""
    run = run_for(request.user, code, REVIEW)
    url = reverse("designer:run-review", kwargs={"code": run.code})
    return redirect(f"{url}?mine=1&todo=1")


@login_required
def agreement_page(request, code):
    run = run_for(request.user, code)
    plan = plan_of(run)
    context = {"run": run, "plan": plan, "can_settle": run.member.can(CONTROL)}
    if plan is not None:
        numbers = agreement_of(run, plan)
        conflicts = Record.objects.filter(run=run, pk__in=numbers["conflicts"][:200])
        by_record = verdicts_by_record(run)
        names = dict(
            Member.objects.filter(workspace_id=run.workspace_id).values_list(
                "user_id", "user__username"
            )
        )
        context.update(
            numbers=numbers,
            conflicts=[
                {
                    "record": r,
                    "votes": [
                        (names.get(u, f"user {u}"), d, rating)
                        for u, (d, rating) in sorted(by_record.get(r.pk, {}).items())
                    ],
                }
                for r in conflicts.order_by("id")
            ],
            progress=reviewer_progress(run, plan),
        )
    return render(request, "runs/agreement.html", context)


@require_POST
@login_required
def settle(request, code, record_id):
    """An editor's or admin's decision on a record, over its reviewers' majority."""
    run = run_for(request.user, code, CONTROL)
    record = get_object_or_404(Record, run=run, pk=record_id)
    decision = request.POST.get("decision")
    if decision == "majority":
        record.settled = False
        record.save(update_fields=["settled"])
        decide(record)
        note(
            request.user,
            run.workspace_id,
            f"sent record {record.pk} back to the majority",
            run=run,
            record=record,
        )
        messages.success(request, f"Record {record.pk} follows its reviewers' majority again.")
    elif decision in (Record.ACCEPTED, Record.REJECTED):
        record.review, record.settled = decision, True
        record.save(update_fields=["review", "settled"])
        note(
            request.user,
            run.workspace_id,
            f"settled record {record.pk}: {decision}",
            run=run,
            record=record,
        )
        messages.success(request, f"Record {record.pk} is settled: {decision}.")
    else:
        messages.error(request, "Settle a record as accepted or rejected.")
    return redirect("designer:run-agreement", code=run.code)


urlpatterns = [
    path("runs/<uuid:code>/assign/", assign, name="run-assign"),
    path("runs/<uuid:code>/queue/", my_queue, name="run-queue"),
    path("runs/<uuid:code>/agreement/", agreement_page, name="run-agreement"),
    path("runs/<uuid:code>/records/<int:record_id>/settle/", settle, name="record-settle"),
]
