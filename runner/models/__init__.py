"""The data layer: workspaces, providers, runs, tasks and records (the `runner` app's models)."""

from .deployment import Deployment
from .history import Event
from .reviews import Review, ReviewPlan
from .runs import Provider, Record, Run, Task, TaskQuerySet
from .workspaces import Invitation, Member, Workspace

__all__ = [
    "Deployment",
    "Event",
    "Invitation",
    "Member",
    "Provider",
    "Record",
    "Review",
    "ReviewPlan",
    "Run",
    "Task",
    "TaskQuerySet",
    "Workspace",
]
