"""A new user runs the CLI first on a fresh database, then opens the browser: /setup/
makes their account, and the run from the terminal is theirs."""

import pytest
from django.test import Client

from runner.models import Run

from .test_cli import runpipeline

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_cli_first_then_setup_in_the_browser_shows_the_cli_run(
    worker, fake_llm, tmp_path, django_user_model
):
    assert not django_user_model.objects.exists()
    out = tmp_path / "qa.jsonl"
    res = runpipeline(
        "qa-from-topics",
        "--input",
        "topic=Solar energy",
        "--base-url",
        fake_llm.url,
        "--model",
        "fake-model",
        "--output",
        out,
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    run = Run.objects.get()
    browser = Client()
    response = browser.get("/", follow=True)
    assert response.redirect_chain[-1][0] == "/setup/"  # not a log-in nobody can pass
    assert "The 1 run started from the command line so far will be yours." in response.text
    response = browser.post(
        "/setup/",
        {"username": "ada", "password1": "a-long-password-1", "password2": "a-long-password-1"},
    )
    assert response.status_code == 302
    runs = browser.get("/runs/").text
    assert run.name in runs and str(run.code) in runs
    # the next run from the terminal is ada's too, with no --user
    res = runpipeline(
        "qa-from-topics",
        "--input",
        "topic=Tides",
        "--base-url",
        fake_llm.url,
        "--model",
        "fake-model",
        "--output",
        tmp_path / "two.jsonl",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    assert list(django_user_model.objects.values_list("username", flat=True)) == ["ada"]
    assert set(Run.objects.values_list("owner__username", flat=True)) == {"ada"}
