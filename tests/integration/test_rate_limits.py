"""Requests per minute per key, shared by every worker and run; 429 backoff; a provider that stays down."""

import time

import pytest

from runner import engine
from runner.engine import keys, limits
from runner.models import Run, Task
from runner.spec import library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _runs(owner, provider, n_runs=2, topics=1, **kw):
    spec = library.get("qa-from-topics").spec
    return [
        engine.launch_run(
            owner,
            spec,
            [{"topic": f"Run {r} topic {i}"} for i in range(topics)],
            providers={"*": provider.pk},
            **kw,
        )
        for r in range(n_runs)
    ]


def test_two_runs_on_one_key_keep_under_its_rate(owner, worker_factory, fake_llm):
    # The key allows 5 requests a second; the provider is set to 120 a minute (2/s).
    fake_llm.configure(rate_limit_rps=5)
    worker_factory()
    worker_factory()
    provider = provider_for(owner, fake_llm, concurrency=20)
    provider.rpm = 120
    provider.save()
    started = time.monotonic()
    runs = _runs(owner, provider)
    for run in runs:
        wait_for(run, timeout=90)
    elapsed = time.monotonic() - started
    for run in runs:
        assert run.status == Run.COMPLETED
        assert Task.objects.filter(run=run, status="done").count() == 11
    stats = fake_llm.stats()
    assert stats["total"] == 22
    assert "429" not in stats["statuses"]  # never over the key's limit
    assert stats["max_rps"] <= 5  # the key's limit (the buckets allow 2 + 2 in any second)
    assert elapsed >= 8  # 22 calls at 2 a second, less the first second's burst


def test_tokens_per_minute_bound_the_run(owner, worker, fake_llm):
    provider = provider_for(owner, fake_llm, concurrency=20)
    provider.tpm = 12_000  # 200 tokens a second
    provider.save()
    (run,) = _runs(owner, provider, n_runs=1, topics=2)
    started = time.monotonic()
    wait_for(run, timeout=90)
    elapsed = time.monotonic() - started
    assert run.status == Run.COMPLETED
    tasks = Task.objects.filter(run=run)
    assert tasks.count() == 22 and {t.status for t in tasks} == {"done"}
    used = sum(t.tokens_in + t.tokens_out for t in tasks)
    # one second's worth may go at once; the rest at 200 a second, at most
    assert elapsed >= (used - 200) / 200 * 0.9, (used, elapsed)


def test_429s_halve_the_rate_then_it_recovers(owner, worker_factory, fake_llm):
    # No limit is set on the provider, but the key only takes 4 requests a second:
    # the first 429 makes the rate learnt and halved, and every task still finishes.
    fake_llm.configure(rate_limit_rps=4, latency=0.05)
    worker_factory()
    provider = provider_for(owner, fake_llm, concurrency=20)
    runs = _runs(owner, provider, topics=2)
    for run in runs:
        wait_for(run, timeout=120)
        assert run.status == Run.COMPLETED
        assert not Task.objects.filter(run=run).exclude(status="done").exists()
    stats = fake_llm.stats()
    ok = stats["statuses"]["200"]
    assert ok == 44
    assert 0 < stats["statuses"].get("429", 0) < ok  # some 429s, then the rate held
    state = limits.client().hgetall(keys.rate(provider.rate_key))
    assert float(state[b"lr"]) > 0  # the key's rate was learnt from what it took


def test_a_provider_that_stays_down_fails_its_tasks_in_bounded_time(
    owner, worker_factory, fake_llm
):
    fake_llm.configure(fail_status=503, fail_first_n=10_000, retry_after=1)
    worker_factory(RUNNER_PROVIDER_DOWN_SECONDS=3, RUNNER_MAX_TRANSIENT_RETRIES=50)
    provider = provider_for(owner, fake_llm, concurrency=4)
    (run,) = _runs(owner, provider, n_runs=1, topics=6)
    started = time.monotonic()
    wait_for(run, timeout=60)
    assert time.monotonic() - started < 30
    # the run ends, failed: no record could be made, and it says why
    assert run.status == Run.FAILED
    assert run.error.startswith("No record could be made: 6 of 6 tasks failed")
    failed = Task.objects.filter(run=run, status="failed")
    assert failed.count() == 6
    for task in failed:
        assert "the provider has failed every call for" in task.error
        assert "503 Service Unavailable" in task.error


# -- the shared buckets themselves (Redis only) ----------------------------------------------


def test_bucket_grants_no_more_than_the_rate(redis_client, settings):
    settings.RUNNER_RATE_BURST_SECONDS = 1.0
    got = limits.rate_grant("k1", rpm=600, tpm=None, want_requests=50)
    assert got.requests == 10 and got.rps == 10  # a full bucket: one second of the rate
    assert limits.rate_grant("k1", rpm=600, tpm=None, want_requests=50).requests <= 1
    time.sleep(0.5)
    assert 4 <= limits.rate_grant("k1", rpm=600, tpm=None, want_requests=50).requests <= 6
    # tokens: what is left of the second's worth, never more
    got = limits.rate_grant("k2", rpm=None, tpm=6000, want_tokens=500)
    assert got.tokens == 100 and got.requests == 0 and got.rps == 0 and got.tps == 100


def test_429_halves_once_a_second_honours_retry_after_and_recovers(redis_client, settings):
    settings.RUNNER_RATE_RECOVERY = 0.5
    first = limits.rate_grant("k3", rpm=600, tpm=None)
    assert first.factor == 1
    cut = limits.rate_grant("k3", rpm=600, tpm=None, n429=3, retry_after=0.3, want_requests=5)
    assert cut.factor == 0.5 and cut.rps == 5
    assert cut.requests == 0 and 0 < cut.wait <= 0.3  # nobody gets a call until Retry-After
    again = limits.rate_grant("k3", rpm=600, tpm=None, n429=1)
    assert again.factor == 0.5  # not halved twice within a second
    time.sleep(0.4)
    later = limits.rate_grant("k3", rpm=600, tpm=None, want_requests=1)
    assert later.requests == 1 and 0.6 <= later.factor < 0.9  # additive increase
    time.sleep(1.2)
    assert limits.rate_grant("k3", rpm=600, tpm=None).factor == 1


def test_unlimited_key_is_gated_only_by_sustained_429s(redis_client):
    got = limits.rate_grant("k4", rpm=None, tpm=None, started=30, want_requests=5)
    assert got.rps == 0 and got.tps == 0
    time.sleep(1.05)
    limits.rate_grant("k4", rpm=None, tpm=None, started=20)
    assert limits.rate_grant("k4", rpm=None, tpm=None, n429=1).rps == 0  # one 429 is noise
    got = limits.rate_grant("k4", rpm=None, tpm=None, n429=6)  # a good share of the calls
    assert got.rps > 0  # learnt from what the key was taking, then halved
