"""The command line never locks the browser out: it uses the only account, asks for --user
when there are several, and on an empty database its `cli` user is adopted by /setup/."""

import io

import pytest
from django.core.management import call_command

from runner.engine import adhoc
from runner.management.commands.runpipeline import owner as cli_owner
from runner.models import Run

from .test_runs import make_run

pytestmark = pytest.mark.django_db

ADA = {"username": "ada", "password1": "a-long-password-1", "password2": "a-long-password-1"}


def test_the_only_account_owns_the_runs_of_the_command_line(owner, django_user_model):
    assert cli_owner() == owner
    assert list(django_user_model.objects.values_list("username", flat=True)) == ["owner"]


def test_several_accounts_need_user(owner, other_user, django_user_model):
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("runpipeline", "qa-from-topics", "--input", "topic=x", stderr=err)
    assert exc.value.code == 2
    assert err.getvalue().strip() == (
        "Cannot start the run: there are 2 accounts (other, owner): "
        "choose the run's owner with --user NAME"
    )
    assert cli_owner("other") == other_user
    with pytest.raises(SystemExit):
        call_command("runpipeline", "qa-from-topics", "--user", "nobody", stderr=io.StringIO())
    assert django_user_model.objects.count() == 2 and not Run.objects.exists()


def test_setup_adopts_the_command_lines_user_and_shows_its_runs(client, django_user_model):
    cli = cli_owner()  # an empty database: the CLI's own user, with no password
    assert cli.username == "cli" and not cli.has_usable_password()
    run = make_run(cli, topics=1, status=Run.COMPLETED, name="From the terminal")
    # the browser is not sent to a log-in nobody can pass
    for url in ("/", "/accounts/login/", "/runs/"):
        response = client.get(url, follow=True)
        assert response.redirect_chain[-1][0].startswith("/setup/"), url
    page = client.get("/setup/").content.decode()
    assert "Create the account" in page
    assert "The 1 run started from the command line so far will be yours." in page
    response = client.post("/setup/", ADA)
    assert response.status_code == 302 and response["Location"] == "/pipelines/"
    ada = django_user_model.objects.get()  # the cli user became ada
    assert ada.username == "ada" and ada.is_superuser and ada.check_password(ADA["password1"])
    assert "From the terminal" in client.get("/runs/").content.decode()
    assert client.get(f"/runs/{run.code}/").status_code == 200
    # /setup/ is closed now, and the command line uses the account
    assert client.get("/setup/")["Location"] == "/accounts/login/"
    assert cli_owner() == ada and adhoc.owner_for() == ada


def test_setup_may_keep_the_name_cli(client, django_user_model):
    cli_owner()
    response = client.post("/setup/", {**ADA, "username": "cli"})
    assert response.status_code == 302
    assert django_user_model.objects.get().check_password(ADA["password1"])


def test_an_account_with_a_password_keeps_setup_closed(client, owner):
    cli_owner("owner")
    assert client.get("/setup/")["Location"] == "/accounts/login/"
    response = client.post("/setup/", ADA)
    assert response["Location"] == "/accounts/login/"
