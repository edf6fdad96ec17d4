"""Redis goes away in the middle of a run and comes back: no finished call is made again.

The worker here has a Redis server of its own, stopped and started again by the test
(the rest of the suite keeps the session's). The worker's host finds the run in the
database, so it needs no message to start it."""

import subprocess
import time

import pytest

from runner import engine
from runner.models import Record, Run, Task
from runner.spec import library

from ..conftest import _port_open, _redis_binary, free_port
from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class OwnRedis:
    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            assert time.monotonic() < deadline, "Redis did not start"
            time.sleep(0.02)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def _done(run):
    return Task.objects.filter(run=run, status=Task.DONE).count()


def test_a_redis_outage_mid_run_repeats_no_finished_call(owner, worker_factory, fake_llm, tmp_path):
    fake_llm.configure(latency=0.2)
    own = OwnRedis(tmp_path)
    own.start()
    try:
        worker_factory(TEST_REDIS_PORT=str(own.port), RUNNER_HEARTBEAT_TTL="6")
        provider = provider_for(owner, fake_llm, concurrency=6)
        run = engine.launch_run(
            owner,
            library.get("qa-from-topics").spec,
            [{"topic": f"Outage topic {i}"} for i in range(8)],  # 88 calls, about 3 s
            providers={"*": provider.pk},
        )
        wait_for(run, timeout=60, until=lambda r: _done(r) >= 15)
        own.stop()  # Redis goes away with calls in flight
        down = _done(run)
        wait_for(run, timeout=60, until=lambda r: _done(r) >= down + 20)  # work goes on
        own.start()  # back, empty (no persistence)
        wait_for(run, timeout=120)
    finally:
        if own.proc.poll() is None:
            own.stop()
    assert run.status == Run.COMPLETED
    assert Record.objects.filter(run=run).count() == 40
    stats = fake_llm.stats()
    assert set(stats["per_prompt"].values()) == {1}  # no finished call was made again
    assert stats["total"] == 88
