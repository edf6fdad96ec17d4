"""Many runs, many workers: runs start at once and share a provider fairly, a trial never
waits behind runs, and one run spreads over several worker processes."""

import time

import pytest

from runner import engine
from runner.engine import keys, trial
from runner.events import stats
from runner.models import Record, Run, Task
from runner.spec import library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QA = library.get("qa-from-topics").spec  # 1 topic -> 5 subtopics -> 5 questions -> 5 answers


def _launch(owner, provider, label, topics):
    return engine.launch_run(
        owner,
        QA,
        [{"topic": f"{label} topic {i}"} for i in range(topics)],
        providers={"*": provider.pk},
    )


def _wait_all(runs, until, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run in runs:
            run.refresh_from_db()
        if all(until(r) for r in runs):
            return
        time.sleep(0.05)
    raise AssertionError(f"runs are {[r.status for r in runs]} after {timeout}s")


def _done(run):
    return Task.objects.filter(run=run, status=Task.DONE).count()


def test_six_runs_on_one_worker_start_at_once_and_progress_together(owner, worker, fake_llm):
    fake_llm.configure(latency=0.3)
    provider = provider_for(owner, fake_llm, concurrency=12)
    runs = [_launch(owner, provider, f"Run {n}", topics=2) for n in range(6)]
    _wait_all(runs, lambda r: r.started is not None)
    first_launch = min(r.created for r in runs)
    assert max((r.started - first_launch).total_seconds() for r in runs) < 1.0
    # The first run to end finds every other run well under way (22 tasks each).
    _wait_all(runs, lambda r: True)
    while not any(r.status == Run.COMPLETED for r in runs):
        time.sleep(0.05)
        for r in runs:
            r.refresh_from_db()
    progress = {r.name + str(r.pk): _done(r) for r in runs}
    assert all(n >= 5 for n in progress.values()), progress
    for run in runs:
        wait_for(run, timeout=60)
        assert run.status == Run.COMPLETED
        assert Record.objects.filter(run=run).count() == 10
    assert fake_llm.stats()["max_in_flight"] <= 12


def test_a_small_run_is_not_starved_by_a_big_one_on_the_same_provider(owner, worker, fake_llm):
    fake_llm.configure(latency=0.1)
    provider = provider_for(owner, fake_llm, concurrency=8)
    big = _launch(owner, provider, "Big", topics=40)  # 440 calls: about 6 s at 8 in flight
    wait_for(big, timeout=30, until=lambda r: _done(r) >= 20)  # the big run holds the provider
    small = _launch(owner, provider, "Small", topics=1)  # 11 calls
    wait_for(small, timeout=60)
    assert small.status == Run.COMPLETED
    big.refresh_from_db()
    assert big.status == Run.RUNNING  # the small run did not wait for the big one
    small_times = list(
        Task.objects.filter(run=small).order_by("finished").values_list("finished", flat=True)
    )
    # The provider saw both runs' calls interleaved: the big run went on meanwhile.
    big_meanwhile = Task.objects.filter(
        run=big, finished__gte=small_times[0], finished__lte=small_times[-1]
    ).count()
    assert big_meanwhile > 0
    wait_for(big, timeout=120)
    assert big.status == Run.COMPLETED
    assert fake_llm.stats()["max_in_flight"] <= 8


def test_a_trial_answers_while_four_runs_hold_the_worker(owner, worker, fake_llm):
    fake_llm.configure(latency=0.2)
    provider = provider_for(owner, fake_llm, concurrency=8)
    runs = [_launch(owner, provider, f"Busy {n}", topics=6) for n in range(4)]  # 4 x 66 calls
    _wait_all(runs, lambda r: r.status == Run.RUNNING)
    step = QA.steps[0]
    trial_id = trial.start(owner.pk, step, {"topic": "Honey bees"}, provider.pk)
    deadline = time.monotonic() + 30
    while trial.get(trial_id)["status"] in trial.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    data = trial.get(trial_id)
    assert data["status"] == "done", (data.get("error"), worker.log_path.read_text()[-3000:])
    assert isinstance(data["parsed"], list) and data["parsed"]
    for run in runs:  # it answered while every run was still going
        run.refresh_from_db()
        assert run.status == Run.RUNNING
    for run in runs:
        wait_for(run, timeout=120)
        assert run.status == Run.COMPLETED


def test_one_run_is_driven_by_two_worker_processes_and_every_task_is_done_once(
    owner, worker_factory, fake_llm
):
    fake_llm.configure(latency=0.1)
    worker_factory(RUNNER_MAX_INFLIGHT="8")
    worker_factory(RUNNER_MAX_INFLIGHT="8")
    provider = provider_for(owner, fake_llm, concurrency=32)
    run = _launch(owner, provider, "Shared", topics=20)  # 220 calls
    wait_for(run, timeout=120)
    assert run.status == Run.COMPLETED
    assert Task.objects.filter(run=run, status=Task.DONE).count() == 220
    assert Record.objects.filter(run=run).count() == 100
    stats = fake_llm.stats()
    assert stats["total"] == 220  # no call made twice
    assert set(stats["per_prompt"].values()) == {1}
    drivers = {
        c.split(":")[0] for c in Task.objects.filter(run=run).values_list("claim", flat=True)
    }
    assert len(drivers - {""}) >= 2  # both workers drove it
    assert stats["max_in_flight"] > 8  # more than one worker's cap at once


def test_a_launch_wakes_every_worker_at_once(owner, worker_factory, fake_llm, redis_client):
    # The hosts look for open runs only once a minute here: what starts the run within a
    # second is the launch's message, heard by both workers.
    fake_llm.configure(latency=0.1)
    for _ in range(2):
        worker_factory(RUNNER_HOST_SECONDS="60", RUNNER_MAX_INFLIGHT="8")
    channel = keys.hosts_channel()
    deadline = time.monotonic() + 30
    while dict(redis_client.pubsub_numsub(channel)).get(channel.encode(), 0) < 2:
        assert time.monotonic() < deadline, "the workers' hosts never listened for launches"
        time.sleep(0.05)
    provider = provider_for(owner, fake_llm, concurrency=32)
    run = _launch(owner, provider, "Woken", topics=20)  # 220 calls
    wait_for(run, timeout=30, until=lambda r: r.started is not None)
    assert (run.started - run.created).total_seconds() < 1.0
    wait_for(run, timeout=60)
    assert run.status == Run.COMPLETED
    assert (run.finished - run.created).total_seconds() < 30  # nobody waited for a minute
    drivers = {
        c.split(":")[0] for c in Task.objects.filter(run=run).values_list("claim", flat=True)
    }
    assert len(drivers - {""}) >= 2  # both workers heard of it


def test_a_runs_first_steps_are_not_left_for_last(owner, worker, fake_llm):
    # 8 topics through 3 chained steps at 4 in flight: children of what finished get at
    # most half the free slots, the rest go to the earliest step still pending. (Deepest
    # first left topics 6-8 waiting until the first topics were answered, and the run's
    # last slots with too little to do.)
    fake_llm.configure(latency=0.05)
    provider = provider_for(owner, fake_llm, concurrency=4)
    run = _launch(owner, provider, "Chained", topics=8)  # 8 + 40 + 40 calls
    wait_for(run, timeout=120)
    assert run.status == Run.COMPLETED
    last_first_step = max(Task.objects.filter(run=run, step=0).values_list("finished", flat=True))
    answered_before = Task.objects.filter(run=run, step=2, finished__lt=last_first_step).count()
    assert answered_before < 10, f"{answered_before} of 40 answers came before the last topic"


def _eight_hanging_and_eight_held(owner, worker_factory, fake_llm):
    """A one-step run of 24 topics on a worker with 8 slots: the first 8 calls hang (an
    hour), and the worker holds 8 more (as many as its slots) for its next free slots (it
    took them ahead: the queue was twice as long as the claim). The other 8 stay pending."""
    fake_llm.configure(hang_for=["Hang topic"])
    first_step = QA.model_copy(update={"steps": QA.steps[:1]})
    provider = provider_for(owner, fake_llm, concurrency=64)
    worker_factory(RUNNER_MAX_INFLIGHT="8")
    topics = [f"Hang topic {i}" for i in range(8)] + [f"Quick topic {i}" for i in range(16)]
    run = engine.launch_run(
        owner, first_step, [{"topic": t} for t in topics], providers={"*": provider.pk}
    )
    wait_for(run, timeout=30, until=lambda r: fake_llm.stats()["in_flight"] == 8)
    wait_for(run, until=lambda r: Task.objects.filter(run=r, status=Task.RUNNING).count() == 16)
    return run


def test_tasks_a_busy_worker_holds_ahead_go_to_a_worker_with_room(
    owner, worker_factory, fake_llm, redis_client
):
    # A worker claims a few tasks beyond its free slots (they start the moment a slot
    # frees). Worker A's 8 slots hang on their calls and it holds 8 more; worker B comes
    # later with room to spare and takes the rest of the queue. Once the queue is dry, A
    # gives back what it holds, and B starts it: without that, those eight would wait for
    # A's calls (here: an hour).
    run = _eight_hanging_and_eight_held(owner, worker_factory, fake_llm)
    held = set(
        Task.objects.filter(run=run, status=Task.RUNNING, key__in=[f"in:{i}" for i in range(8, 16)])
    )
    assert len(held) == 8  # the first eight quick ones, not yet sent
    # The run's page tells the calls under way from the tasks waiting for a slot.
    counts = lambda: stats.run_state(run)["steps"][0]["counts"]  # noqa: E731
    wait_for(run, timeout=10, until=lambda r: counts()["running"] == 8)
    assert (counts()["running"], counts()["pending"]) == (8, 16)
    worker_factory(RUNNER_MAX_INFLIGHT="16")
    quick = Task.objects.filter(run=run, context__topic__startswith="Quick")
    wait_for(run, timeout=60, until=lambda r: quick.filter(status=Task.DONE).count() == 16)
    assert fake_llm.stats()["in_flight"] == 8  # A's calls still hang: B made the 16
    claims_of_a = {t.claim.split(":")[0] for t in held}
    assert not quick.filter(claim__startswith=next(iter(claims_of_a))).exists()
    engine.cancel_run(run)
    wait_for(run, timeout=30)
    assert run.status == Run.CANCELLED


def test_a_cancelled_run_puts_back_what_a_worker_held_without_counting_a_call(
    owner, worker_factory, fake_llm
):
    # The 8 calls under way when the run is cancelled may have been paid for: each counts
    # as one lost call. The 8 tasks held for the next free slots never went out: no call.
    run = _eight_hanging_and_eight_held(owner, worker_factory, fake_llm)
    engine.cancel_run(run)
    wait_for(
        run,
        timeout=30,
        until=lambda r: not Task.objects.filter(run=r, status=Task.RUNNING).exists(),
    )
    tasks = {t.key: t for t in Task.objects.filter(run=run)}
    assert all(t.status == Task.PENDING for t in tasks.values())
    assert [(tasks[f"in:{i}"].lost, tasks[f"in:{i}"].attempts) for i in range(8)] == [(1, 1)] * 8
    assert [(tasks[f"in:{i}"].lost, tasks[f"in:{i}"].attempts) for i in range(8, 16)] == [
        (0, 0)
    ] * 8
    run.refresh_from_db()
    assert run.status == Run.CANCELLED
