"""Fixtures shared by every tier: users, a real Redis server, real Celery workers, a fake LLM."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_binary():
    sys.path.insert(0, str(ROOT))
    from scripts.services import find_redis_server

    return find_redis_server()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis server on 127.0.0.1 for the whole session."""
    port = settings.TEST_REDIS_PORT
    proc = None
    if not _port_open(port):
        binary = _redis_binary()
        data = tmp_path_factory.mktemp("redis")
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline and not _port_open(port):
            time.sleep(0.05)
    client = redis_lib.Redis(port=port)
    client.ping()
    yield client
    if proc is not None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_client(redis_server):
    redis_server.flushall()
    # Reset cached clients of the engine so they do not hold stale connections.
    from runner.engine import limits

    limits._client = None
    yield redis_server


def worker_env(**extra):
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        TEST_SUBPROCESS="1",
        TEST_DB_PATH=settings.DATABASES["default"]["TEST"]["NAME"],
        TEST_REDIS_PORT=str(settings.TEST_REDIS_PORT),
        CELERY_RESULT_BACKEND="disabled",
        RUNNER_LEASE_SECONDS="20",
        RUNNER_BACKOFF_BASE="0.05",
        RUNNER_BACKOFF_MAX="0.5",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Worker:
    """A real Celery worker process."""

    def __init__(self, log_path, name="w1", **env):
        self.log_path = log_path
        self.name = name
        self.env = worker_env(**env)
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        from scripts.services import worker_command

        self.proc = subprocess.Popen(
            worker_command(
                self.name, "--without-gossip", "--without-mingle", "--without-heartbeat"
            ),
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if "ready." in Path(self.log_path).read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "the Celery worker exited:\n" + Path(self.log_path).read_text()[-3000:]
                )
            time.sleep(0.1)
        raise RuntimeError(
            "the Celery worker did not start:\n" + Path(self.log_path).read_text()[-3000:]
        )

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()

    def output(self):
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture
def worker_factory(redis_client, tmp_path):
    workers = []

    def make(**env):
        w = Worker(tmp_path / f"worker{len(workers) + 1}.log", name=f"w{len(workers) + 1}", **env)
        workers.append(w)
        return w.start()

    yield make
    for w in workers:
        w.stop()


@pytest.fixture
def worker(worker_factory):
    return worker_factory()


@pytest.fixture
def fake_llm():
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI(latency=0.0) as fake:
        yield fake


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner", password="owner-pass-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("other", password="other-pass-123")


@pytest.fixture(scope="session")
def redis_binary_path():
    return shutil.which("redis-server") or _redis_binary()


@pytest.fixture
def started(monkeypatch):
    """The runs whose drivers the engine would start (no worker runs), in order."""
    calls = []
    monkeypatch.setattr("runner.engine.lifecycle.start_drivers", lambda run: calls.append(run.pk))
    monkeypatch.setattr("runner.events.progress.announce", lambda run, progress=False: None)
    return calls
