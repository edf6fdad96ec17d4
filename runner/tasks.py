"""Celery tasks: adapters of a few lines around the engine. They take ids only."""

import gc
import logging
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.db import connections

from runner.engine import trial as trials
from runner.engine.driver import stopping
from runner.engine.host import host
from runner.providers import http

log = logging.getLogger("runner.tasks")

WORKER_CONN_MAX_AGE = 600  # seconds a worker thread keeps its database connection


@worker_ready.connect
def _start_host(**kwargs):
    """The host drives every open run of this database; a launch wakes it through Redis
    (`runner.engine.ports.wake_hosts`), not through a Celery task. It starts once the
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
    # The host's threads (its loop, the progress announcer, one per driver) live as long
    # as the worker: their database connections do too, instead of a new one at every
    # pass (`DB_CONN_MAX_AGE` is 0 for the web server). On PostgreSQL a connection is a
    # server process: four workers opened and closed ~30 a second between them. One
    # broken by a database restart is dropped at the thread's next pass and opened again.
    for alias in connections:
        connections.settings[alias].update(
            CONN_MAX_AGE=WORKER_CONN_MAX_AGE, CONN_HEALTH_CHECKS=True
        )
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
