"""A run's state changes: one guarded update each, refused from a state it may not leave."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from runner import engine
from runner.models import Provider, Run, Task
from runner.spec.builder import PipelineBuilder, Step

pytestmark = pytest.mark.django_db


def make_run(owner, status=Run.QUEUED, topics=2):
    provider = Provider.objects.create(
        owner=owner, name=f"p{Provider.objects.count()}", base_url="http://127.0.0.1:9/v1"
    )
    p = PipelineBuilder("t") << Step("Say {{topic}}", name="say", output_key="said")
    spec = p.build()
    run = Run.objects.create(
        owner=owner, spec=spec.to_dict(), providers={"*": provider.pk}, status=status
    )
    Task.objects.bulk_create(
        [Task(run=run, step=0, key=f"in:{i}", seq=f"{i:08d}") for i in range(topics)]
    )
    return run


def status_of(run):
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


@pytest.mark.parametrize(
    ("method", "args", "allowed"),
    [
        ("start", (), {Run.QUEUED}),
        ("pause", ("spent",), {Run.RUNNING, Run.PAUSED}),
        ("complete", (), {Run.RUNNING}),
        ("complete_with_failures", ("2 of 9 tasks failed",), {Run.RUNNING}),
        ("fail", ("broken",), {Run.QUEUED, Run.RUNNING, Run.PAUSED}),
        ("cancel", (), {Run.QUEUED, Run.RUNNING, Run.PAUSED}),
        ("requeue", (), set(Run.STOPPED)),
    ],
)
def test_each_change_happens_only_from_the_states_it_may_leave(owner, method, args, allowed):
    targets = {
        "start": Run.RUNNING,
        "pause": Run.PAUSED,
        "complete": Run.COMPLETED,
        "complete_with_failures": Run.COMPLETED_WITH_FAILURES,
        "fail": Run.FAILED,
        "cancel": Run.CANCELLED,
        "requeue": Run.QUEUED,
    }
    for status, _ in Run.STATUSES:
        run = make_run(owner, status)
        changed = getattr(run, method)(*args)
        assert changed == (status in allowed), (method, status)
        assert status_of(run) == (targets[method] if changed else status), (method, status)
        # the instance follows the row when it changed, and keeps its state when not
        assert run.status == status_of(run)


def test_a_change_sees_the_row_not_a_stale_copy(owner):
    run = make_run(owner, Run.RUNNING)
    stale = Run.objects.get(pk=run.pk)
    assert run.cancel()
    assert not stale.complete()  # another worker's old copy cannot complete a cancelled run
    assert status_of(run) == Run.CANCELLED


def test_fields_move_with_the_state(owner):
    run = make_run(owner, Run.QUEUED)
    assert run.start() and run.started is not None
    assert run.pause("Paused: spent $1.00 of the $1.00 budget")
    run.refresh_from_db()
    assert run.error.startswith("Paused") and run.finished is None
    assert run.requeue()
    run.refresh_from_db()
    assert run.error == "" and run.status == Run.QUEUED
    assert run.start() and run.complete()
    run.refresh_from_db()
    assert run.finished is not None
    assert run.requeue()
    run.refresh_from_db()
    assert run.finished is None


def test_fail_says_why(owner):
    run = make_run(owner, Run.RUNNING)
    assert run.fail("the provider of step 1 no longer exists")
    run.refresh_from_db()
    assert run.status == Run.FAILED and "no longer exists" in run.error and run.finished


def test_resume_of_a_running_run_keeps_its_drivers_and_its_calls_in_flight(owner, started):
    run = make_run(owner, Run.RUNNING, topics=3)
    first, second, third = Task.objects.filter(run=run).order_by("id")
    Task.objects.filter(pk=first.pk).update(status=Task.RUNNING, claim="d1:1")
    Task.objects.filter(pk=second.pk).update(status=Task.FAILED, error="boom")
    engine.resume_run(run)
    first.refresh_from_db()
    second.refresh_from_db()
    assert status_of(run) == Run.RUNNING  # not sent back to the queue under its driver
    assert first.status == Task.RUNNING and first.claim == "d1:1"  # its call is still in flight
    assert second.status == Task.PENDING and second.round == 1  # the driver picks it up
    assert started == []  # the run's own drivers are still going


def test_resume_of_a_cancelled_run_queues_it_and_starts_drivers(owner, started):
    run = make_run(owner, Run.CANCELLED, topics=2)
    first = Task.objects.filter(run=run).order_by("id").first()
    Task.objects.filter(pk=first.pk).update(status=Task.RUNNING, claim="gone:1")
    engine.resume_run(run, failed=False)
    first.refresh_from_db()
    assert status_of(run) == Run.QUEUED and started == [run.pk]
    assert first.status == Task.PENDING and first.claim == ""


def test_a_new_budget_requeues_only_a_paused_run(owner, started):
    run = make_run(owner, Run.CANCELLED)
    engine.set_budget(run, "5")
    assert status_of(run) == Run.CANCELLED and started == []
    run = make_run(owner, Run.PAUSED)
    engine.set_budget(run, "5")
    assert status_of(run) == Run.QUEUED and started == [run.pk]


def test_tasks_are_claimed_once_renewed_and_released(owner):
    run = make_run(owner, Run.RUNNING, topics=5)
    lease = timezone.now() + timedelta(seconds=60)
    mine = Task.objects.claim(run.pk, 3, "a:1", lease)
    theirs = Task.objects.claim(run.pk, 10, "b:1", lease)
    assert len(mine) == 3 and len(theirs) == 2
    assert not {r["id"] for r in mine} & {r["id"] for r in theirs}
    assert Task.objects.claim(run.pk, 10, "c:1", lease) == []
    later = lease + timedelta(seconds=60)
    ids = [r["id"] for r in mine]
    assert Task.objects.filter(id__in=ids).renew(later) == 3
    assert set(Task.objects.filter(id__in=ids).values_list("lease_until", flat=True)) == {later}
    Task.objects.filter(id__in=ids[:1]).update(status=Task.DONE)
    assert Task.objects.filter(id__in=ids).renew(later) == 2  # a finished task keeps no lease
    assert Task.objects.filter(claim="b:1").release() == 2
    assert Task.objects.filter(run=run, status=Task.PENDING).count() == 2


def test_a_claim_takes_the_earliest_step_first_then_input_order(owner):
    run = make_run(owner, Run.RUNNING, topics=3)
    Task.objects.bulk_create(
        [Task(run=run, step=1, key=f"in:{i}:0", seq=f"{i:08d}.0") for i in (2, 0)]
    )
    lease = timezone.now() + timedelta(seconds=60)
    rows = Task.objects.claim(run.pk, 4, "a:1", lease)
    assert [(r["step"], r["key"]) for r in rows] == [
        (0, "in:0"),
        (0, "in:1"),
        (0, "in:2"),
        (1, "in:2:0"),
    ]
    assert set(rows[0]) >= {"id", "step", "key", "seq", "variant", "context", "round"}


def test_tasks_beyond_the_free_slots_are_claimed_only_from_a_long_queue(owner):
    run = make_run(owner, Run.RUNNING, topics=7)
    lease = timezone.now() + timedelta(seconds=60)
    # 7 pending: 2 for the free slots and 2 ahead would leave 3, fewer than the claim
    assert len(Task.objects.claim(run.pk, 2, "a:1", lease, ahead=2)) == 2
    Task.objects.filter(run=run).release()
    Task.objects.bulk_create(
        [Task(run=run, step=0, key=f"more:{i}", seq=f"{i + 7:08d}") for i in range(1)]
    )
    # 8 pending: as many stay for the other drivers as this one takes
    assert len(Task.objects.claim(run.pk, 2, "b:1", lease, ahead=2)) == 4
    assert len(Task.objects.claim(run.pk, 2, "c:1", lease, ahead=2)) == 2


def test_an_ended_run_keeps_its_tasks_counts_until_it_is_queued_again(owner):
    from runner.engine.writer import settle
    from runner.events.stats import run_state

    run = make_run(owner, Run.RUNNING, topics=3)
    Task.objects.filter(run=run).update(status=Task.DONE, tokens_in=10, attempts=1)
    Task.objects.filter(run=run, key="in:2").update(status=Task.FAILED, error="no")
    live = run_state(run)
    assert settle(run, run.spec_obj)
    run.refresh_from_db()
    assert run.status == Run.FAILED  # no record was made (none is, here)
    assert sorted((r["status"], r["n"]) for r in run.tally) == [("done", 2), ("failed", 1)]
    # What the pages show of the ended run is read from the tally, and is what was counted.
    Task.objects.filter(run=run).update(tokens_in=99)  # (no task changes once a run ended)
    ended = run_state(run)
    assert ended["steps"][0]["counts"] == live["steps"][0]["counts"]
    assert ended["tokens_in"] == live["tokens_in"] == 30
    assert run.requeue()
    run.refresh_from_db()
    assert run.tally is None
    run.start()
    assert run_state(run)["tokens_in"] == 297


def test_a_run_driven_by_several_workers_is_announced_by_one_of_them_at_a_time(
    owner, redis_client, monkeypatch
):
    from runner.engine import keys
    from runner.events import progress

    made = []  # the states made (what costs: counting the run's tasks)
    monkeypatch.setattr(progress, "run_state", lambda run: made.append(run.status) or {})
    run = make_run(owner, Run.RUNNING, topics=3)
    for _ in range(4):  # four workers, each with news of the run and nothing sent lately
        monkeypatch.setitem(progress._quiet_until, run.pk, (0.0, Run.RUNNING))
        progress.announce(run, progress=True)
    assert made == [Run.RUNNING]
    key = keys.announced(run.code)
    deadline = time.monotonic() + 10
    while redis_client.exists(key) and time.monotonic() < deadline:  # a moment later
        time.sleep(0.02)
    progress.announce(run, progress=True)
    assert made == [Run.RUNNING] * 2
    run.pause("the budget is spent")  # a change of status is sent at once, every time
    progress.announce(run, progress=True)
    assert made == [Run.RUNNING] * 2 + [Run.PAUSED]
