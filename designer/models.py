"""Saved pipelines and their versions (a pipeline's content is always a spec, runner.spec),
and what the product keeps about an account."""

import uuid

from django.conf import settings
from django.db import models

from runner.models.workspaces import InWorkspace
from runner.spec import PipelineSpec


class Pipeline(InWorkspace):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pipelines"
    )
    name = models.CharField(max_length=200)
    # Markdown shown beside each record while reviewing its runs (a run's review may change it)
    guidelines = models.TextField(blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated"]

    def __str__(self):
        return self.name

    @property
    def latest(self):
        return self.versions.order_by("-number").first()

    def spec(self):
        """The latest version's spec (a PipelineSpec)."""
        version = self.latest
        return (
            PipelineSpec.model_validate(version.spec) if version else PipelineSpec(name=self.name)
        )


class PipelineVersion(models.Model):
    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    note = models.CharField(max_length=200, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "number"], name="version_pipeline_number")
        ]

    def __str__(self):
        return f"{self.pipeline.name} v{self.number}"


class Account(models.Model):
    """What the product keeps about a person beyond Django's user: a temporary password
    (an admin made the account) must be replaced at the first log-in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    must_change_password = models.BooleanField(default=False)
