"""Celery tasks: adapters of a few lines around the engine. They take ids only."""

import gc
import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down

from runner.engine import trial as trials
from runner.engine.driver import stopping
from runner.engine.host import host
from runner.providers import http

log = logging.getLogger("runner.tasks")


@worker_ready.connect
def _start_host(**kwargs):
    """The host drives every open run of this database; a launch wakes it through Redis
    (`runner.engine.host.wake_hosts`), not through a Celery task. It starts once the
    HTTP clients and the CAs are loaded (0.1-0.2 s, in a thread: Celery's own start goes
    on), so a run's first calls do not wait for them, and once start-up's objects are
    frozen out of the garbage collector's way."""
    threading.Thread(target=_warm_then_host, name="runner-warm", daemon=True).start()


def _warm_then_host():
    try:
        http.warm()
    except Exception:
        log.warning("could not load the HTTP clients ahead", exc_info=True)
    # What start-up made (Django, the models, the providers, the HTTP clients: hundreds of
    # thousands of objects that live as long as the worker) is set aside from the garbage
    # collector, which otherwise walks all of it at every full collection of a busy run:
    # 0.1 ms of every call's CPU and pauses of 50-100 ms (`make bench`, 0 ms scenario).
    gc.freeze()
    host().start()


@worker_shutting_down.connect
def _stop_drivers(**kwargs):
    """Drivers save what finishes within a few seconds, put the rest back, and stop."""
    stopping.set()
    host().join(timeout=8)


@shared_task(name="runner.try_step", ignore_result=True)
def try_step(trial_id):
    """Try one step on one sample input (runner.engine.trial holds the logic)."""
    trials.run(trial_id)
