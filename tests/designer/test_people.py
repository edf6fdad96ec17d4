"""People in a workspace: invitations (accepted, used, expired, withdrawn), accounts with
a temporary password, roles, removal that logs out, switching and making workspaces."""

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from designer import actions
from runner.models import Invitation, Member, Workspace
from runner.spec import library

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(django_user_model):
    return django_user_model.objects.create_user("lead", password="lead-pass-123")


@pytest.fixture
def workspace(admin):
    return Workspace.personal(admin)


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def log_in(client, username, password):
    """Log in through the log-in page, as a person does (True when it let them in)."""
    response = client.post(reverse("login"), {"username": username, "password": password})
    return response.status_code == 302


def invitation_link(admin_client, role="reviewer", note="Sam"):
    page = admin_client.post(reverse("designer:people-invite"), {"role": role, "note": note})
    assert page.status_code == 200
    found = re.search(r'value="(http[^"]+/invite/[^"]+/)"', page.content.decode())
    assert found, "the page shows the link"
    return found.group(1).split("testserver", 1)[1]


def test_an_invitation_makes_a_new_account_a_member_with_its_role(admin_client, workspace):
    path = invitation_link(admin_client, "reviewer")
    visitor = Client()
    page = visitor.get(path).content.decode()
    assert f"Join {escape(workspace.name)}" in page and "reviewer" in page
    response = visitor.post(
        path, {"username": "sam", "password1": "a-long-pass-987", "password2": "a-long-pass-987"}
    )
    assert response.status_code == 302
    member = Member.objects.get(workspace=workspace, user__username="sam")
    assert member.role == "reviewer"
    home = visitor.get("/").content.decode()
    assert escape(workspace.name) in home  # logged in, working in the workspace

    again = Client().get(path)
    assert again.status_code == 410
    assert "already used" in again.content.decode()


def test_a_logged_in_person_joins_with_one_click(admin_client, workspace, django_user_model):
    path = invitation_link(admin_client, "editor")
    someone = django_user_model.objects.create_user("kim", password="kim-pass-123")
    visitor = Client()
    visitor.force_login(someone)
    assert "Join as kim" in visitor.get(path).content.decode()
    assert visitor.post(path).status_code == 302
    assert Member.objects.get(workspace=workspace, user=someone).role == "editor"


def test_an_expired_or_withdrawn_invitation_says_so_and_adds_nobody(admin, workspace):
    old, old_token = Invitation.make(workspace, "viewer", admin)
    old.expires = timezone.now() - timedelta(minutes=1)
    old.save()
    gone, gone_token = Invitation.make(workspace, "viewer", admin)
    gone.revoked = True
    gone.save()
    for token, word in ((old_token, "expired"), (gone_token, "withdrawn")):
        visitor = Client()
        response = visitor.post(
            f"/invite/{token}/",
            {"username": "late", "password1": "a-long-pass-987", "password2": "a-long-pass-987"},
        )
        assert response.status_code == 410
        assert word in response.content.decode()
    assert not Member.objects.filter(user__username="late").exists()
    assert Client().get("/invite/not-a-real-token/").status_code == 404


def test_withdrawing_an_open_invitation(admin_client, admin, workspace):
    invitation, token = Invitation.make(workspace, "viewer", admin, note="Ola")
    page = admin_client.get(reverse("designer:people")).content.decode()
    assert "Ola" in page
    admin_client.post(reverse("designer:people-revoke", args=[invitation.pk]))
    assert Client().get(f"/invite/{token}/").status_code == 410
    assert "Ola" not in admin_client.get(reverse("designer:people")).content.decode()


def test_an_account_with_a_temporary_password_chooses_its_own_at_first_log_in(
    admin_client, workspace
):
    page = admin_client.post(
        reverse("designer:people-account"), {"username": "robot", "role": "viewer"}
    ).content.decode()
    password = re.search(r'value="([^"]+)" id="temporary-password"', page).group(1)
    visitor = Client()
    response = visitor.post(
        reverse("login"), {"username": "robot", "password": password}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("choose-password")
    assert visitor.get("/runs/").status_code == 302  # anything else waits for the password
    visitor.post(
        reverse("choose-password"),
        {"new_password1": "robot-own-pass-44", "new_password2": "robot-own-pass-44"},
    )
    assert visitor.get("/runs/").status_code == 200
    assert Member.objects.get(user__username="robot").role == "viewer"
    assert log_in(Client(), "robot", "robot-own-pass-44")


def test_roles_change_but_a_workspace_keeps_an_admin(
    admin_client, admin, workspace, django_user_model
):
    other = django_user_model.objects.create_user("ana", password="ana-pass-123")
    member = Member.objects.create(workspace=workspace, user=other, role="viewer")
    admin_client.post(reverse("designer:people-role", args=[member.pk]), {"role": "editor"})
    member.refresh_from_db()
    assert member.role == "editor"
    mine = Member.objects.get(workspace=workspace, user=admin)
    response = admin_client.post(
        reverse("designer:people-role", args=[mine.pk]), {"role": "viewer"}, follow=True
    )
    assert "needs an admin" in response.content.decode()
    mine.refresh_from_db()
    assert mine.role == "admin"


def test_removing_someone_logs_them_out_at_once(admin_client, workspace, django_user_model):
    other = django_user_model.objects.create_user("ben", password="ben-pass-123")
    member = Member.objects.create(workspace=workspace, user=other, role="editor")
    pipeline = actions.pipeline_from_template(
        other, library.get("qa-from-topics"), workspace=workspace
    )
    theirs = Client()
    assert log_in(theirs, "ben", "ben-pass-123")
    assert theirs.get(reverse("designer:pipeline-detail", args=[pipeline.code])).status_code == 200
    admin_client.post(reverse("designer:people-remove", args=[member.pk]))
    assert not Member.objects.filter(pk=member.pk).exists()
    response = theirs.get(reverse("designer:pipeline-detail", args=[pipeline.code]))
    assert response.status_code == 302 and reverse("login") in response["Location"]
    # Logged in again, the workspace's pipeline is not theirs to see any more.
    assert log_in(theirs, "ben", "ben-pass-123")
    assert theirs.get(reverse("designer:pipeline-detail", args=[pipeline.code])).status_code == 404


def test_switching_between_workspaces_changes_what_the_lists_show(
    admin_client, admin, workspace, django_user_model
):
    mine = actions.pipeline_from_template(admin, library.get("qa-from-topics"), workspace=workspace)
    admin_client.post(reverse("designer:workspace-new"), {"name": "Side project"})
    side = Workspace.objects.get(name="Side project")
    assert Member.objects.get(workspace=side, user=admin).role == "admin"
    # The new workspace is current: its list is empty, and the switcher offers both.
    page = admin_client.get(reverse("designer:pipeline-list")).content.decode()
    assert mine.name not in page
    assert (
        f'<option value="{workspace.code}"' in page
        and f'<option value="{side.code}" selected' in page
    )
    admin_client.post(reverse("designer:workspace-switch"), {"workspace": str(workspace.code)})
    assert mine.name in admin_client.get(reverse("designer:pipeline-list")).content.decode()
    # A workspace one is not in cannot be switched to.
    stranger = Workspace.objects.create(name="Not mine")
    response = admin_client.post(
        reverse("designer:workspace-switch"), {"workspace": str(stranger.code)}, follow=True
    )
    assert "You are not in that workspace" in response.content.decode()
