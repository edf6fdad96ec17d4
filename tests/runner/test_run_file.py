"""The command line uses the default provider of the `make run` that is up (var/run.json)."""

import json
import os
import subprocess
import sys

from scripts.services import write_run_file
from tests.conftest import ROOT

READ = "from django.conf import settings; print(settings.DEFAULT_LLM_BASE_URL, settings.DEFAULT_LLM_MODEL)"


def _settings_seen(run_file):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFAULT_LLM_")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", PD_RUN_FILE=str(run_file))
    out = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); " + READ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_a_running_make_run_lends_its_default_provider_to_the_command_line(tmp_path):
    run_file = tmp_path / "run.json"
    env = {
        "DEFAULT_LLM_BASE_URL": "http://127.0.0.1:8081/v1",
        "DEFAULT_LLM_MODEL": "smollm2-135m-instruct",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }
    write_run_file(run_file, env)  # written by this (live) process
    assert json.loads(run_file.read_text())["pid"] == os.getpid()
    assert _settings_seen(run_file) == ["http://127.0.0.1:8081/v1", "smollm2-135m-instruct"]


def test_a_run_file_left_by_a_dead_make_run_is_ignored(tmp_path):
    run_file = tmp_path / "run.json"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_file.write_text(
        json.dumps({"pid": dead.pid, "env": {"DEFAULT_LLM_BASE_URL": "http://x/v1"}})
    )
    assert _settings_seen(run_file) == []
