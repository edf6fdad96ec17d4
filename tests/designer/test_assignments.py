"""Review by several people: assigning records, each reviewer's queue, their own
verdicts and the run's decision, agreement and conflicts, settling, guidelines, export."""

import pytest
from django.test import Client
from django.urls import reverse

from runner import export
from runner.models import Member, Record, Review, ReviewPlan, Run, Workspace
from runner.spec import agreement

from .test_runs import make_run

pytestmark = pytest.mark.django_db

A, R = Record.ACCEPTED, Record.REJECTED


@pytest.fixture
def team(django_user_model):
    lead = django_user_model.objects.create_user("lead", password="pw-lead-12")
    workspace = Workspace.personal(lead)
    people = {"lead": lead}
    for name in ("ria", "sol", "tom"):
        people[name] = django_user_model.objects.create_user(name, password=f"pw-{name}-12")
        Member.objects.create(workspace=workspace, user=people[name], role="reviewer")
    run = make_run(lead, topics=4, status=Run.COMPLETED, workspace=workspace)  # 8 records
    return {"people": people, "run": run, "workspace": workspace}


def client_for(user):
    c = Client()
    c.force_login(user)
    return c


def assign(team, names, overlap, guidelines=""):
    lead = client_for(team["people"]["lead"])
    response = lead.post(
        reverse("designer:run-assign", args=[team["run"].code]),
        {
            "reviewers": [str(team["people"][n].pk) for n in names],
            "overlap": str(overlap),
            "guidelines": guidelines,
        },
    )
    assert response.status_code == 302, response.content.decode()[-3000:]
    return ReviewPlan.objects.get(run=team["run"])


def review(user, run, record, action):
    response = client_for(user).post(
        reverse("designer:record-review", args=[run.code, record.pk]), {"action": action}
    )
    return response.status_code


def test_split_gives_every_record_to_exactly_one_reviewer(team):
    plan = assign(team, ["ria", "sol"], overlap=1)
    records = Record.objects.filter(run=team["run"])
    mine = {n: set(plan.assigned(records, team["people"][n].pk).values_list("pk", flat=True))
            for n in ("ria", "sol")}  # fmt: skip
    assert mine["ria"].isdisjoint(mine["sol"])
    assert mine["ria"] | mine["sol"] == set(records.values_list("pk", flat=True))
    assert abs(len(mine["ria"]) - len(mine["sol"])) <= 1
    # Records made later are assigned as they come.
    later = make_run(team["people"]["lead"], topics=1, workspace=team["workspace"])
    moved = Record.objects.filter(run=later).update(run=team["run"])
    assert (
        plan.assigned(Record.objects.filter(run=team["run"]), team["people"]["ria"].pk).count()
        + plan.assigned(Record.objects.filter(run=team["run"]), team["people"]["sol"].pk).count()
        == records.count()
    )
    assert moved == 2


def test_a_reviewer_sees_and_reviews_only_their_records(team):
    plan = assign(team, ["ria", "sol"], overlap=1)
    ria, run = team["people"]["ria"], team["run"]
    records = Record.objects.filter(run=run)
    theirs = plan.assigned(records, ria.pk).order_by("id")
    others = records.exclude(pk__in=theirs.values("pk")).first()
    page = client_for(ria).get(reverse("designer:run-records", args=[run.code])).content.decode()
    assert page.count('<tr data-record="') == theirs.count()
    assert review(ria, run, others, "accept") == 403
    # The queue opens at the next record assigned to them that they have not reviewed.
    queue = client_for(ria).get(reverse("designer:run-queue", args=[run.code]), follow=True)
    first = theirs.first()
    assert f'data-record="{first.pk}"' in queue.content.decode()
    assert review(ria, run, first, "accept") == 302
    assert Review.objects.get(record=first, reviewer=ria).decision == A
    first.refresh_from_db()
    assert first.review == A and not first.settled  # one review: the majority
    queue = client_for(ria).get(reverse("designer:run-queue", args=[run.code]), follow=True)
    assert f'data-record="{first.pk}"' not in queue.content.decode()


def test_two_reviewers_agreement_conflicts_and_settling(team):
    assign(team, ["ria", "sol"], overlap=2, guidelines="Accept **correct** answers.")
    ria, sol, run = team["people"]["ria"], team["people"]["sol"], team["run"]
    records = list(Record.objects.filter(run=run).order_by("id"))
    ria_says = [A, A, R, R, A, A, R, A]
    sol_says = [A, R, R, R, A, A, A, A]
    for record, a, b in zip(records, ria_says, sol_says, strict=True):
        assert review(ria, run, record, "accept" if a == A else "reject") == 302
        assert review(sol, run, record, "accept" if b == A else "reject") == 302
    page = (
        client_for(team["people"]["lead"])
        .get(reverse("designer:run-agreement", args=[run.code]))
        .content.decode()
    )
    kappa = agreement.cohen_kappa(ria_says, sol_says)
    # by hand: 6 of 8 agree; ria accepts 5, sol 5 -> pe = (5*5 + 3*3) / 64
    assert kappa == pytest.approx((6 / 8 - 34 / 64) / (1 - 34 / 64))
    assert f'id="agreement-kappa">{kappa:.3f}<' in page
    assert 'id="agreement-percent">0.750<' in page
    conflicts = [r for r, a, b in zip(records, ria_says, sol_says, strict=True) if a != b]
    for r in conflicts:
        r.refresh_from_db()
        assert r.review == Record.UNREVIEWED  # a tie is no decision
        assert f'data-record="{r.pk}"' in page
    # The lead settles one; the export of accepted records follows the decision or,
    # if asked, the majority only.
    lead = client_for(team["people"]["lead"])
    lead.post(reverse("designer:record-settle", args=[run.code, conflicts[0].pk]), {"decision": A})
    conflicts[0].refresh_from_db()
    assert conflicts[0].review == A and conflicts[0].settled
    agreed = sum(a == b == A for a, b in zip(ria_says, sol_says, strict=True))
    decided = export.Export(run, export.Options(accepted_only=True)).count()
    majority = export.Export(run, export.Options(accepted_only=True, decision="majority")).count()
    assert (decided, majority) == (agreed + 1, agreed)
    # The guidelines show beside each record, rendered.
    review_page = (
        client_for(ria).get(reverse("designer:run-review", args=[run.code])).content.decode()
    )
    assert "Accept <strong>correct</strong> answers." in review_page


def test_the_run_state_carries_each_reviewers_progress(team):
    from runner.events.stats import run_state

    assign(team, ["ria", "sol"], overlap=1)
    run = team["run"]
    ria = team["people"]["ria"]
    plan = ReviewPlan.objects.get(run=run)
    for record in plan.assigned(Record.objects.filter(run=run), ria.pk)[:2]:
        review(ria, run, record, "accept")
    state = {p["name"]: p for p in run_state(run)["reviewers"]}
    assert state["ria"]["reviewed"] == 2 and state["sol"]["reviewed"] == 0
    assert state["ria"]["assigned"] + state["sol"]["assigned"] == 8
    page = client_for(team["people"]["lead"]).get(reverse("designer:run-detail", args=[run.code]))
    assert 'data-reviewer="ria"' in page.content.decode()


def test_guidelines_are_rendered_safely(team):
    evil = "<script>alert(1)</script> [click](javascript:alert(2)) <img src=x onerror=alert(3)>"
    assign(team, ["ria"], overlap=1, guidelines=evil)
    page = (
        client_for(team["people"]["ria"])
        .get(reverse("designer:run-review", args=[team["run"].code]))
        .content.decode()
    )
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert 'href="javascript:' not in page and "<img src=x" not in page


def test_assigning_asks_for_sensible_numbers(team):
    lead = client_for(team["people"]["lead"])
    response = lead.post(
        reverse("designer:run-assign", args=[team["run"].code]),
        {"reviewers": [str(team["people"]["ria"].pk)], "overlap": "2"},
    )
    assert response.status_code == 200
    assert "a record can have at most 1 reviews" in response.content.decode()
    assert not ReviewPlan.objects.exists()
    reviewer = client_for(team["people"]["ria"])
    assert reviewer.get(reverse("designer:run-assign", args=[team["run"].code])).status_code == 403


def test_the_export_page_offers_the_majority(team):
    page = (
        client_for(team["people"]["lead"])
        .get(reverse("designer:run-export", args=[team["run"].code]))
        .content.decode()
    )
    assert "the reviewers&#x27; majority only" in page or "the reviewers' majority only" in page
