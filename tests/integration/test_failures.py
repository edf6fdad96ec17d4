"""What goes wrong: prose instead of JSON, provider errors, a worker killed mid-run, cancel and resume."""

import os
import signal
import time

import pytest
from django.db import transaction

from runner import engine
from runner.events import stats
from runner.models import Provider, Record, Run, Task
from runner.spec import library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TOPICS = ["Solar energy", "Ocean tides", "Volcanoes", "Honey bees"]


def test_scatter_step_answering_prose_is_asked_again_then_fails_alone(owner, worker, fake_llm):
    # Prose around the JSON is fine; prose with no JSON at all is not.
    fake_llm.configure(prose=True, never_json_for=["Volcanoes"], latency=0.01)
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": t} for t in TOPICS],
        providers={"*": provider.pk},
    )
    wait_for(run)
    # one topic is missing: the run says so, how many and why
    assert run.status == Run.COMPLETED_WITH_FAILURES
    assert run.error.startswith("1 of 34 tasks failed, so their records are missing")
    assert "(most often: reply was not a JSON list)" in run.error
    failed = Task.objects.get(run=run, status="failed")
    assert failed.context == {"topic": "Volcanoes"}
    assert failed.error == "reply was not a JSON list"
    assert failed.raw_output.startswith("I would rather not format")  # the raw reply is kept
    # the inspector numbers every attempt in order: three calls, each reply not parsing
    assert [a["n"] for a in failed.attempt_log] == [1, 2, 3, 4, 5, 6]
    assert [bool(a.get("parse")) for a in failed.attempt_log] == [False, True] * 3
    # its time is what its three calls took, not 0 ms
    calls = [a["latency_ms"] for a in failed.attempt_log if not a.get("parse")]
    assert failed.latency_ms == sum(calls) > 0
    # asked once, then at most 2 more times
    prompt = failed.messages[-1]["content"]
    assert fake_llm.stats()["per_prompt"][prompt] == 3
    # the other three topics went all the way
    assert Record.objects.filter(run=run).count() == 15
    assert {r.data["topic"] for r in Record.objects.filter(run=run)} == set(TOPICS) - {"Volcanoes"}
    assert stats.failure_summary(run) == [(1, "reply was not a JSON list")]


def test_transient_errors_are_retried_and_permanent_ones_fail_at_once(owner, worker, fake_llm):
    fake_llm.configure(
        fail_status=503,
        fail_first_n=1,
        fail_for={"Honey bees": 400},
        error_message="model 'fake-model' does not accept this prompt",
    )
    provider = provider_for(owner, fake_llm)
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": t} for t in TOPICS],
        providers={"*": provider.pk},
    )
    wait_for(run)
    assert run.status == Run.COMPLETED_WITH_FAILURES
    bad = Task.objects.get(run=run, status="failed")
    assert bad.context["topic"] == "Honey bees"
    assert "400" in bad.error and "does not accept this prompt" in bad.error
    assert bad.attempts == 1
    assert fake_llm.stats()["per_prompt"][bad.messages[-1]["content"]] == 1
    done = Task.objects.filter(run=run, status="done")
    assert done.count() == 3 + 15 + 15
    assert all(t.attempts == 2 for t in done)  # one 503, then success
    assert Record.objects.filter(run=run).count() == 15


def test_worker_killed_mid_run_resumes_without_repeating_finished_calls(
    owner, worker_factory, fake_llm
):
    fake_llm.configure(latency=0.3)
    provider = provider_for(owner, fake_llm, concurrency=8)
    topics = [f"Topic number {i}" for i in range(12)]
    first = worker_factory(RUNNER_HEARTBEAT_TTL=3)
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": t} for t in topics],
        providers={"*": provider.pk},
    )
    wait_for(run, until=lambda r: Task.objects.filter(run=r, status="done").count() >= 30)
    first.kill()
    done_before = {t.messages[-1]["content"] for t in Task.objects.filter(run=run, status="done")}
    assert Task.objects.filter(run=run, status="running").exists()  # killed in the middle
    worker_factory(RUNNER_HEARTBEAT_TTL=3)
    wait_for(run, timeout=90)
    assert run.status == Run.COMPLETED
    assert Record.objects.filter(run=run).count() == 60
    assert not Task.objects.filter(run=run).exclude(status="done").exists()
    per_prompt = fake_llm.stats()["per_prompt"]
    assert all(per_prompt[p] == 1 for p in done_before), "a finished call was made again"
    # calls answered before the kill but not yet saved came from the reply cache, not the provider
    assert sum(per_prompt.values()) <= 12 + 60 + 60 + 8
    # and every call the provider saw is counted: the ones under way at the kill as lost
    assert Task.objects.filter(run=run, lost__gt=0).exists()
    counted = sum(Task.objects.filter(run=run).values_list("attempts", flat=True))
    assert counted >= sum(per_prompt.values())


def test_cancel_stops_new_calls_and_resume_finishes_without_repeats(owner, worker, fake_llm):
    fake_llm.configure(latency=0.2)
    provider = provider_for(owner, fake_llm, concurrency=4)
    topics = [f"Subject {i}" for i in range(6)]
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": t} for t in topics],
        providers={"*": provider.pk},
    )
    wait_for(run, until=lambda r: Task.objects.filter(run=r, status="done").count() >= 8)
    engine.cancel_run(run)
    assert run.status == Run.CANCELLED
    import time

    time.sleep(3)  # in-flight calls finish and are saved; no new ones start
    calls_after_cancel = fake_llm.stats()["total"]
    time.sleep(1)
    assert fake_llm.stats()["total"] == calls_after_cancel
    assert not Task.objects.filter(run=run, status="running").exists()
    pending = Task.objects.filter(run=run, status="pending").count()
    assert pending > 0
    engine.resume_run(run)
    wait_for(run)
    assert run.status == Run.COMPLETED
    assert Record.objects.filter(run=run).count() == 30
    assert max(fake_llm.stats()["per_prompt"].values()) == 1


def test_a_run_whose_provider_was_deleted_fails_and_says_why(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm)
    spec = library.get("qa-from-topics").spec
    with transaction.atomic():  # deleted before any driver loads the run
        run = engine.launch_run(owner, spec, [{"topic": "Moss"}], providers={"*": provider.pk})
        Provider.objects.filter(pk=provider.pk).delete()
    wait_for(run)
    assert run.status == Run.FAILED
    assert "the provider chosen for this step no longer exists" in run.error
    assert fake_llm.stats()["total"] == 0


def test_a_worker_told_to_stop_saves_its_calls_and_exits_within_ten_seconds(
    owner, worker_factory, fake_llm
):
    fake_llm.configure(latency=0.5)
    provider = provider_for(owner, fake_llm, concurrency=8)
    first = worker_factory()
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": f"Stopping topic {i}"} for i in range(10)],
        providers={"*": provider.pk},
    )
    wait_for(run, until=lambda r: Task.objects.filter(run=r, status="done").count() >= 12)
    assert Task.objects.filter(run=run, status="running").exists()  # calls in flight
    stopped_at = time.monotonic()
    os.killpg(first.proc.pid, signal.SIGTERM)  # as systemd or docker stop would
    first.proc.wait(30)
    assert time.monotonic() - stopped_at < 10
    # what was in flight was saved or put back: nothing is left claimed by the old worker
    assert not Task.objects.filter(run=run, status="running").exists()
    worker_factory()
    wait_for(run, timeout=90)
    assert run.status == Run.COMPLETED
    assert set(fake_llm.stats()["per_prompt"].values()) == {1}  # no call was made twice
