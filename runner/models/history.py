"""What people did, and when: launched, cancelled, edited a pipeline, reviewed...

One `Event` per action, in plain words, tied to the workspace and to the run, pipeline
or record it was about, shown on their pages. Actions of the engine itself (a run that
ends) are not here: the run's own times say them.
"""

from django.conf import settings
from django.db import models

from .runs import Record, Run
from .workspaces import Workspace


class Event(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    text = models.CharField(max_length=300)  # "launched the run", "accepted record 12"
    run = models.ForeignKey(Run, on_delete=models.CASCADE, null=True, related_name="+")
    pipeline_code = models.UUIDField(null=True, blank=True)
    record = models.ForeignKey(Record, on_delete=models.CASCADE, null=True, related_name="+")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["run", "-at"], name="event_run_at"),
            models.Index(fields=["pipeline_code", "-at"], name="event_pipeline_at"),
            models.Index(fields=["record", "-at"], name="event_record_at"),
        ]
