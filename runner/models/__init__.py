"""The data layer: providers, runs, tasks and records (Django models of the `runner` app)."""

from .runs import Provider, Record, Run, Task, TaskQuerySet

__all__ = ["Provider", "Record", "Run", "Task", "TaskQuerySet"]
