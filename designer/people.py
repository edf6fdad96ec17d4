"""Workspaces and people: switch workspace, make one, invite people, roles, removal.

- An admin invites someone with a one-time link (`Invitation`, valid for a week) or,
  where there is no mail, makes their account with a temporary password shown once
  (they choose their own at first log-in).
- Roles change on the people page; the last admin cannot be demoted or removed.
- Removing someone ends their sessions and closes their open run pages' sockets at once.
"""

import secrets

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, update_session_auth_hash, user_logged_in
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import SetPasswordForm, UserCreationForm
from django.contrib.sessions.models import Session
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from runner.events.consumer import access_changed
from runner.models import Invitation, Member, Workspace
from runner.models.workspaces import ADMIN, PEOPLE, ROLE_WORDS, ROLES

from .access import SESSION_KEY, current, memberships, need
from .models import Account

TEMP_PASSWORD_BYTES = 12


class InviteForm(forms.Form):
    role = forms.ChoiceField(choices=ROLES, initial="editor")
    note = forms.CharField(
        label="Who it is for (optional)",
        max_length=200,
        required=False,
        help_text="For your list of open invitations, for example a name or an address.",
    )


class AccountForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=ROLES, initial="reviewer")

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        User = get_user_model()
        field = User._meta.get_field(User.USERNAME_FIELD)
        try:
            field.run_validators(username)
        except forms.ValidationError as exc:
            raise forms.ValidationError(exc.messages) from None
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(
                f"Someone already has the name “{username}”: invite them with a link instead."
            )
        return username


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=100)


def _admins(workspace_id):
    return Member.objects.filter(workspace_id=workspace_id, role=ADMIN)


def end_sessions(user):
    """Log the user out everywhere: delete every session that holds them."""
    uid = str(user.pk)
    stale = [
        s.session_key
        for s in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if s.get_decoded().get("_auth_user_id") == uid
    ]
    Session.objects.filter(session_key__in=stale).delete()


def _last_admin(target):
    """True when `target` is the only admin left in their workspace."""
    return target.role == ADMIN and _admins(target.workspace_id).count() == 1


def _people_page(request, member, status=200, **extra):
    ctx = _people_context(request, member, **extra)
    return render(request, "designer/people.html", ctx, status=status)


def _people_context(request, member, **extra):
    workspace = member.workspace
    members = Member.objects.filter(workspace=workspace).select_related("user").order_by("pk")
    invitations = workspace.invitations.filter(accepted__isnull=True, revoked=False)
    return {
        "workspace": workspace,
        "members": members,
        "invitations": [i for i in invitations.order_by("-created") if i.state == "open"],
        "roles": ROLES,
        "role_words": ROLE_WORDS,
        "invite_form": extra.pop("invite_form", None) or InviteForm(),
        "account_form": extra.pop("account_form", None) or AccountForm(),
        "rename_form": extra.pop("rename_form", None)
        or WorkspaceForm(initial={"name": workspace.name}),
        **extra,
    }


@login_required
def people(request):
    return _people_page(request, need(request, PEOPLE))


@require_POST
@login_required
def invite(request):
    member = need(request, PEOPLE)
    form = InviteForm(request.POST)
    if not form.is_valid():
        return _people_page(request, member, status=400, invite_form=form)
    invitation, token = Invitation.make(
        member.workspace, form.cleaned_data["role"], request.user, form.cleaned_data["note"]
    )
    link = request.build_absolute_uri(reverse("invitation", args=[token]))
    return _people_page(request, member, new_link=link, new_invitation=invitation)


@require_POST
@login_required
def revoke(request, invitation_id):
    member = need(request, PEOPLE)
    invitation = get_object_or_404(Invitation, pk=invitation_id, workspace=member.workspace)
    invitation.revoked = True
    invitation.save(update_fields=["revoked"])
    messages.success(request, "The invitation is withdrawn: its link no longer works.")
    return redirect("designer:people")


@sensitive_post_parameters()
@require_POST
@login_required
def make_account(request):
    """An account with a temporary password, shown once; they choose their own at log-in."""
    member = need(request, PEOPLE)
    form = AccountForm(request.POST)
    if not form.is_valid():
        return _people_page(request, member, status=400, account_form=form)
    password = secrets.token_urlsafe(TEMP_PASSWORD_BYTES)
    with transaction.atomic():
        user = get_user_model().objects.create_user(
            form.cleaned_data["username"], password=password
        )
        Account.objects.create(user=user, must_change_password=True)
        Member.objects.create(workspace=member.workspace, user=user, role=form.cleaned_data["role"])
    return _people_page(request, member, new_account=user, new_password=password)


@require_POST
@login_required
def change_role(request, member_id):
    me = need(request, PEOPLE)
    target = get_object_or_404(Member, pk=member_id, workspace=me.workspace)
    role = request.POST.get("role")
    if role not in dict(ROLES):
        messages.error(request, "Choose one of the roles in the list.")
    elif role != ADMIN and _last_admin(target):
        messages.error(request, "A workspace needs an admin: make someone else admin first.")
    else:
        target.role = role
        target.save(update_fields=["role"])
        access_changed(target.user_id)
        messages.success(request, f"{target.user.username} is now {target.get_role_display()}.")
    return redirect("designer:people")


@require_POST
@login_required
def remove(request, member_id):
    me = need(request, PEOPLE)
    target = get_object_or_404(Member, pk=member_id, workspace=me.workspace)
    if _last_admin(target):
        messages.error(request, "A workspace needs an admin: make someone else admin first.")
        return redirect("designer:people")
    user = target.user
    target.delete()
    access_changed(user.pk)  # their open run pages close now
    if user.pk == request.user.pk:
        request.session.pop(SESSION_KEY, None)
        messages.success(request, f"You left {me.workspace.name}.")
        return redirect("designer:home")
    end_sessions(user)
    messages.success(
        request, f"Removed {user.username} from {me.workspace.name}; they are logged out."
    )
    return redirect("designer:people")


@require_POST
@login_required
def rename(request):
    member = need(request, PEOPLE)
    form = WorkspaceForm(request.POST)
    if not form.is_valid():
        return _people_page(request, member, status=400, rename_form=form)
    member.workspace.name = form.cleaned_data["name"].strip()
    member.workspace.save(update_fields=["name"])
    messages.success(request, f"The workspace is now called “{member.workspace.name}”.")
    return redirect("designer:people")


@require_POST
@login_required
def switch(request):
    """Work in another of one's workspaces (kept in the session)."""
    member = Member.objects.filter(
        user=request.user, workspace__code=request.POST.get("workspace") or None
    ).first()
    if member is None:
        messages.error(request, "You are not in that workspace.")
    else:
        request.session[SESSION_KEY] = str(member.workspace.code)
        messages.success(request, f"You are working in {member.workspace.name}.")
    return redirect("designer:home")


@login_required
def new_workspace(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    form = WorkspaceForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the new workspace a name (at most 100 characters).")
        return redirect("designer:home")
    with transaction.atomic():
        workspace = Workspace.objects.create(name=form.cleaned_data["name"].strip())
        Member.objects.create(workspace=workspace, user=request.user, role=ADMIN)
    request.session[SESSION_KEY] = str(workspace.code)
    messages.success(request, f"Made the workspace “{workspace.name}”; you are its admin.")
    return redirect("designer:people")


# -- accepting an invitation (no log-in needed to open it) -------------------------------


class JoinForm(UserCreationForm):
    pass


INVALID = {
    "used": "This invitation was already used. Ask the workspace's admin for a new one.",
    "revoked": "This invitation was withdrawn. Ask the workspace's admin for a new one.",
    "expired": "This invitation has expired. Ask the workspace's admin for a new one.",
}


@sensitive_post_parameters("password1", "password2")
def invitation(request, token):
    """Join with the link: as the person logged in, or with a new account made here."""
    found = Invitation.find(token)
    if found is None:
        ctx = {"problem": "This invitation link is not valid: check that it was copied whole."}
        return render(request, "designer/invitation.html", ctx, status=404)
    if found.state != "open":
        ctx = {"problem": INVALID[found.state], "invitation": found}
        return render(request, "designer/invitation.html", ctx, status=410)
    form = None
    if request.method == "POST":
        if request.user.is_authenticated:
            return _join(request, found, request.user)
        form = JoinForm(request.POST)
        if form.is_valid():
            with transaction.atomic():
                user = form.save()
            auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return _join(request, found, user)
    ctx = {"invitation": found, "form": form or JoinForm(), "token": token}
    return render(request, "designer/invitation.html", ctx)


def _join(request, found, user):
    if not found.accept(user):
        return render(request, "designer/invitation.html", {"problem": INVALID["used"]}, status=410)
    request.session[SESSION_KEY] = str(found.workspace.code)
    messages.success(
        request, f"Welcome to {found.workspace.name}: you are {found.get_role_display()}."
    )
    return redirect("designer:home")


# -- a temporary password is changed at the first log-in ----------------------------------


@sensitive_post_parameters()
@login_required
def choose_password(request):
    form = SetPasswordForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        update_session_auth_hash(request, user)
        Account.objects.filter(user=user).update(must_change_password=False)
        request.session.pop(MUST_CHOOSE, None)
        messages.success(request, "Your password is set.")
        return redirect("designer:home")
    return render(request, "registration/choose_password.html", {"form": form})


MUST_CHOOSE = "must_choose_password"


@receiver(user_logged_in, dispatch_uid="designer.people.temporary_password")
def _on_login(sender, request, user, **kwargs):
    """Remember in the session that this log-in used a temporary password (one query)."""
    if (
        request is not None
        and Account.objects.filter(user=user, must_change_password=True).exists()
    ):
        request.session[MUST_CHOOSE] = True


class TemporaryPasswordMiddleware:
    """Someone logged in with a temporary password goes to choose their own first."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.session.get(MUST_CHOOSE) and request.path not in (
            reverse("choose-password"),
            reverse("logout"),
        ):
            return redirect("choose-password")
        return self.get_response(request)


def workspace_context(request):
    """The header's workspace name, switcher and people link (one query)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "current_member": current(request),
        "my_workspaces": [m.workspace for m in memberships(request)],
    }


urlpatterns = [
    path("people/", people, name="people"),
    path("people/invite/", invite, name="people-invite"),
    path("people/account/", make_account, name="people-account"),
    path("people/rename/", rename, name="workspace-rename"),
    path("people/<int:member_id>/role/", change_role, name="people-role"),
    path("people/<int:member_id>/remove/", remove, name="people-remove"),
    path("people/invitations/<int:invitation_id>/revoke/", revoke, name="people-revoke"),
    path("workspaces/switch/", switch, name="workspace-switch"),
    path("workspaces/new/", new_workspace, name="workspace-new"),
]
