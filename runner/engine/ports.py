"""How the engine reaches the layers above it without importing them.

- `announce(run)`: the engine saved a change to `run`; it sends `run_changed`, which
  the events layer (`runner.events.progress`) turns into the state pages receive.
  `announce(run, soon=True)`: the same, made by a thread of the process's own (a
  driver's progress: counting a huge run's tasks does not hold the driver up).
- `enqueue(task_name, *args)`: Celery work (`runner/tasks.py`), named, not imported,
  sent once the current transaction commits. The Celery app is loaded here, on first
  use, not at every Django start-up (the command line never sends Celery work).
- `wake_hosts()`: a run opened; every worker's host hears it at once (one Redis
  message). Here, not in `host`, so that what launches runs (the web, the command line)
  does not load the driver and the providers. `nudge_drivers(code)`: the run has new
  pending tasks; its drivers in every worker hear it on the same channel.
"""

import logging

from django.db import transaction
from django.dispatch import Signal
from redis.exceptions import RedisError

from . import keys, limits

log = logging.getLogger("runner.engine")

run_changed = Signal()  # sender: the Run class; run: the run that changed
NUDGE_PREFIX = b"run:"  # a message on the hosts' channel for one run's drivers


def announce(run, soon=False):
    """Tell whoever listens that `run` changed (its new state is in the database)."""
    run_changed.send(sender=type(run), run=run, soon=soon)


def enqueue(task_name, *args):
    """Send the Celery task `task_name` with `args` (ids and JSON only) after commit."""
    from config.celery import app

    transaction.on_commit(lambda: app.send_task(task_name, args=list(args)))


def nudge_drivers(run_code):
    """Tell the run's drivers in every worker that it has new pending tasks (one Redis
    message on the hosts' channel); without Redis they find them at their next look."""
    try:
        limits.client().publish(keys.hosts_channel(), NUDGE_PREFIX + run_code.hex.encode())
    except RedisError:
        pass


def wake_hosts():
    """Tell every worker's host, at once, to look for open runs (one Redis message; the
    hosts of other deployments listen on their own prefix). If Redis cannot be reached
    the hosts still find the run at their next look, within `RUNNER_HOST_SECONDS`."""
    try:
        limits.client().publish(keys.hosts_channel(), b"1")
    except RedisError:
        log.warning("could not wake the workers (Redis unreachable): they find the run soon")
