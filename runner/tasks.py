"""Celery tasks: adapters of a few lines around the engine. They take ids only."""

import logging
import threading
import time

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings

from runner.engine import lifecycle
from runner.engine import trial as trials
from runner.engine.driver import Driver, stopping
from runner.models import Run

log = logging.getLogger("runner.tasks")


@shared_task(name="runner.drive_run", ignore_result=True)
def drive_run(run_id):
    if not Run.objects.filter(pk=run_id).exists():  # another database's run, or deleted
        log.warning("run %s does not exist here: nothing to drive", run_id)
        return
    Driver(run_id).run()


@shared_task(name="runner.watchdog", ignore_result=True)
def watchdog():
    """Restart drivers for runs that nobody is driving (their worker died or stopped)."""
    for run_id in lifecycle.orphaned_runs():
        run = Run.objects.filter(pk=run_id).first()
        if run is not None:
            log.warning("run %s has no live driver: starting one", run_id)
            lifecycle.start_drivers(run, 1)


def _watchdog_loop():
    while not stopping.is_set():
        try:
            watchdog()
        except Exception:
            log.warning("watchdog pass failed", exc_info=True)
        stopping.wait(settings.RUNNER_WATCHDOG_SECONDS)


@worker_ready.connect
def _start_watchdog(**kwargs):
    time.sleep(0)
    threading.Thread(target=_watchdog_loop, name="runner-watchdog", daemon=True).start()


@worker_shutting_down.connect
def _stop_drivers(**kwargs):
    stopping.set()


@shared_task(name="runner.try_step", ignore_result=True)
def try_step(trial_id):
    """Try one step on one sample input (runner.engine.trial holds the logic)."""
    trials.run(trial_id)
