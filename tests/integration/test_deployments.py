"""Two deployments sharing one Redis, and a database recreated beside a kept Redis.

Each deployment is what `make run` makes: its own database, a Celery worker and the
CLI, with the Redis key prefix left to its default (made from the database)."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ROOT, Worker

pytestmark = [pytest.mark.integration]


def _env(db, redis_port):
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{db}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "RUNNER_KEY_PREFIX": "",  # the default: one made from the database's own id
        "SECRET_KEY": "test-deployments-secret-key-0123456789-abcdefghij",
        "DEFAULT_LLM_BASE_URL": "",
    }


class Deployment:
    def __init__(self, tmp, name, redis_port):
        self.dir = tmp / name
        self.dir.mkdir()
        self.db = self.dir / "db.sqlite3"
        self.name = name
        self.env = _env(self.db, redis_port)
        self.worker = None

    def migrate(self):
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=ROOT,
            env={**os.environ, **self.env},
            check=True,
        )

    def start_worker(self, n):
        self.worker = Worker(self.dir / f"worker{n}.log", name=f"{self.name}{n}", **self.env)
        return self.worker.start()

    def stop_worker(self):
        self.worker.stop()

    def runpipeline(self, topic, fake_url):
        out = self.dir / f"{topic.replace(' ', '_')}.jsonl"
        res = subprocess.run(
            [sys.executable, "manage.py", "runpipeline", "qa-from-topics", "--quiet"]
            + ["--input", f"topic={topic}", "--base-url", fake_url, "--model", "fake-model"]
            + ["--output", str(out)],
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]


def test_two_deployments_on_one_redis_keep_to_their_own_runs(redis_client, fake_llm, tmp_path):
    fake_llm.configure(latency=0.05)
    port = redis_client.connection_pool.connection_kwargs["port"]
    a, b = Deployment(tmp_path, "a", port), Deployment(tmp_path, "b", port)
    for d in (a, b):
        d.migrate()
        d.start_worker(1)
    try:
        results = {}
        threads = [
            threading.Thread(
                target=lambda d=d: results.__setitem__(
                    d.name, d.runpipeline(f"Topic of {d.name}", fake_llm.url)
                )
            )
            for d in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
    finally:
        for d in (a, b):
            d.stop_worker()
    # Both databases hold a run numbered 1; each finished with its own records.
    for d in (a, b):
        records = results[d.name]
        assert len(records) == 5
        assert {r["topic"] for r in records} == {f"Topic of {d.name}"}
    assert fake_llm.stats()["total"] == 2 * 11
    prefixes = {k.split(b":")[1] for k in redis_client.keys(b"pd:*")}
    assert len(prefixes) == 2  # one prefix per database


def test_a_recreated_database_beside_a_kept_redis_makes_every_call_again(
    redis_client, fake_llm, tmp_path
):
    port = redis_client.connection_pool.connection_kwargs["port"]
    d = Deployment(tmp_path, "a", port)
    d.migrate()
    d.start_worker(1)
    try:
        first = d.runpipeline("Volcanoes", fake_llm.url)
    finally:
        d.stop_worker()
    assert fake_llm.stats()["total"] == 11
    Path(d.db).unlink()  # a fresh database: its run 1 and provider 1 are new
    for extra in ("-wal", "-shm"):
        Path(str(d.db) + extra).unlink(missing_ok=True)
    d.migrate()
    d.start_worker(2)
    try:
        second = d.runpipeline("Volcanoes", fake_llm.url)
    finally:
        d.stop_worker()
    assert len(first) == len(second) == 5
    assert fake_llm.stats()["total"] == 22  # nothing answered from the old database's cache
