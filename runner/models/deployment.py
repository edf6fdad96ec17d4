"""The deployment: one row made when the database is created, naming it for shared services.

Several deployments may share one Redis. Everything the engine keeps there (queues,
reply cache, limits, heartbeats) is prefixed with this row's code, so a recreated
database (a new row, a new code) never reads what an earlier one left behind.
"""

import uuid

from django.db import models


class Deployment(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)

    @classmethod
    def current(cls):
        """This database's deployment (the first row; made if a flush removed it)."""
        row = cls.objects.order_by("pk").first()
        return row or cls.objects.create()
