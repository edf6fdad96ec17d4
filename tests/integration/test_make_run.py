"""`make run` (scripts/services.py run): killed, even with SIGKILL, it leaves nothing running."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, _port_open, free_port

pytestmark = [pytest.mark.integration]


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_killed_make_run_stops_the_redis_web_and_worker_it_started(tmp_path):
    redis_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "LOCAL_MODEL": "0",
        "RUNNER_KEY_PREFIX": "",
        "PD_RUN_FILE": "",
        "SECRET_KEY": "test-make-run-secret-key-0123456789-abcdefghijklmnop",
        "RUNNER_WORKERS": "2",
    }
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "scripts/services.py", "run", "--port", str(web_port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(
            lambda: _port_open(redis_port) and _port_open(web_port),
            90,
            "make run did not start:\n" + (tmp_path / "run.log").read_text(errors="replace"),
        )
        for name in (b"worker1@", b"worker2@"):  # RUNNER_WORKERS worker processes
            _wait(
                lambda name=name: any(
                    name in line and b"ready." in line
                    for line in (tmp_path / "run.log").read_bytes().splitlines()
                ),
                60,
                f"no {name.decode()} worker:\n"
                + (tmp_path / "run.log").read_text(errors="replace"),
            )
        worker = subprocess.run(
            ["pgrep", "-f", f"celery.*worker.*{tmp_path.name}|guard {proc.pid} -- .*celery"],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert worker, "the worker runs under a guard of this make run"
        os.kill(proc.pid, signal.SIGKILL)  # no chance to stop anything itself
        proc.wait(10)
        _wait(lambda: not _port_open(redis_port), 20, "Redis outlived make run")
        _wait(lambda: not _port_open(web_port), 20, "the web server outlived make run")
        _wait(
            lambda: all(not os.path.exists(f"/proc/{pid}") for pid in worker),
            30,
            "the worker outlived make run",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
