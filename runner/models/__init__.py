"""The data layer: providers, runs, tasks and records (Django models of the `runner` app)."""

from .deployment import Deployment
from .runs import Provider, Record, Run, Task, TaskQuerySet

__all__ = ["Deployment", "Provider", "Record", "Run", "Task", "TaskQuerySet"]
