"""How the engine reaches the layers above it without importing them.

- `announce(run)`: the engine saved a change to `run`; it sends `run_changed`, which
  the events layer (`runner.events.progress`) turns into the state pages receive.
  `announce(run, soon=True)`: the same, made by a thread of the process's own (a
  driver's progress: counting a huge run's tasks does not hold the driver up).
- `enqueue(task_name, *args)`: Celery work (`runner/tasks.py`), named, not imported,
  sent once the current transaction commits. The Celery app is loaded here, on first
  use, not at every Django start-up (the command line never sends Celery work).
"""

from django.db import transaction
from django.dispatch import Signal

run_changed = Signal()  # sender: the Run class; run: the run that changed


def announce(run, soon=False):
    """Tell whoever listens that `run` changed (its new state is in the database)."""
    run_changed.send(sender=type(run), run=run, soon=soon)


def enqueue(task_name, *args):
    """Send the Celery task `task_name` with `args` (ids and JSON only) after commit."""
    from config.celery import app

    transaction.on_commit(lambda: app.send_task(task_name, args=list(args)))
