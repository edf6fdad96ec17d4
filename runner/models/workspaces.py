"""Workspaces: the people who share pipelines, runs, records and providers, and their roles.

Every pipeline, run and provider belongs to one workspace (`workspace`); `owner` says
who made it. A person may belong to several workspaces, each with one role:

- **admin**: people, providers and everything else;
- **editor**: pipelines, launching and controlling runs, review, export;
- **reviewer**: the runs of the workspace and reviewing their records;
- **viewer**: reads everything but providers; changes nothing.

What a role may do is one table (`CAN`), asked through `Member.can(need)`. An admin
invites people with a one-time link (`Invitation`, its token stored only as a hash).
"""

import hashlib
import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

ADMIN, EDITOR, REVIEWER, VIEWER = "admin", "editor", "reviewer", "viewer"
ROLES = [
    (ADMIN, "Admin"),
    (EDITOR, "Editor"),
    (REVIEWER, "Reviewer"),
    (VIEWER, "Viewer"),
]
ROLE_WORDS = {
    ADMIN: "people, providers and everything else",
    EDITOR: "pipelines, runs, review and export",
    REVIEWER: "reviews the records of the workspace's runs",
    VIEWER: "reads everything, changes nothing",
}

# What each role may do. A need not listed for a role is refused (403).
PIPELINES, EDIT, RUNS, CONTROL, REVIEW, EXPORT, PROVIDERS, MANAGE, PEOPLE = (
    "see pipelines",
    "edit pipelines",
    "see runs",
    "launch and control runs",
    "review records",
    "export records",
    "see providers",
    "manage providers",
    "manage people",
)
CAN = {
    ADMIN: {PIPELINES, EDIT, RUNS, CONTROL, REVIEW, EXPORT, PROVIDERS, MANAGE, PEOPLE},
    EDITOR: {PIPELINES, EDIT, RUNS, CONTROL, REVIEW, EXPORT, PROVIDERS},
    REVIEWER: {RUNS, REVIEW},
    VIEWER: {PIPELINES, RUNS, EXPORT},
}
INVITE_DAYS = 7


class Workspace(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name

    @classmethod
    def personal(cls, user):
        """The user's first workspace; one of their own (as its admin) if they have none."""
        member = Member.objects.filter(user=user).select_related("workspace").order_by("pk")
        first = member.first()
        if first is not None:
            return first.workspace
        with transaction.atomic():
            workspace = cls.objects.create(name=f"{user.get_username()}'s workspace")
            Member.objects.create(workspace=workspace, user=user, role=ADMIN)
        return workspace


class Member(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=ROLES, default=VIEWER)
    joined = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "user"], name="member_workspace_user")
        ]

    def __str__(self):
        return f"{self.user} ({self.role}) in {self.workspace}"

    def can(self, need):
        return need in CAN.get(self.role, ())


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


class Invitation(models.Model):
    """A one-time link that makes its first visitor a member with `role`."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=20, choices=ROLES, default=EDITOR)
    note = models.CharField(max_length=200, blank=True, default="")  # who it is for
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    expires = models.DateTimeField()
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    accepted = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    @classmethod
    def make(cls, workspace, role, by, note="", days=INVITE_DAYS):
        """(invitation, token): the token is shown once, in the link; only its hash is kept."""
        token = secrets.token_urlsafe(32)
        invitation = cls.objects.create(
            workspace=workspace,
            role=role,
            note=note,
            token_hash=_digest(token),
            created_by=by,
            expires=timezone.now() + timedelta(days=days),
        )
        return invitation, token

    @classmethod
    def find(cls, token):
        if not token or len(token) > 100:
            return None
        return cls.objects.filter(token_hash=_digest(token)).select_related("workspace").first()

    @property
    def state(self):
        """ "open", "used", "revoked" or "expired"."""
        if self.accepted is not None:
            return "used"
        if self.revoked:
            return "revoked"
        if self.expires <= timezone.now():
            return "expired"
        return "open"

    def accept(self, user):
        """Make `user` a member (or give them this role); False when the link cannot be used."""
        with transaction.atomic():
            fresh = Invitation.objects.select_for_update().get(pk=self.pk)
            if fresh.state != "open":
                return False
            Member.objects.update_or_create(
                workspace=fresh.workspace, user=user, defaults={"role": fresh.role}
            )
            fresh.accepted_by, fresh.accepted = user, timezone.now()
            fresh.save(update_fields=["accepted_by", "accepted"])
        return True


class InWorkspace(models.Model):
    """A model that belongs to a workspace (filled from its owner's when left empty)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.workspace_id is None and getattr(self, "owner_id", None) is not None:
            self.workspace = Workspace.personal(self.owner)
        super().save(*args, **kwargs)
