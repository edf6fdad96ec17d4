"""Progress events: saved first (the database is the truth), announced second.

Drivers call `announce(run)` a few times a second at most; the message carries the
whole current state of the run, so a dropped message costs nothing and a page
that (re)connects asks for the state itself.
"""

import logging

from channels.layers import get_channel_layer

from . import aio

log = logging.getLogger("runner.progress")


def announce(run):
    from .stats import run_state

    try:
        state = run_state(run)
        layer = get_channel_layer()
        if layer is None:
            return
        fut = aio.submit(layer.group_send(run.group_name, {"type": "run.progress", "state": state}))
        fut.add_done_callback(_log_failure)
    except Exception:
        log.warning("could not announce progress of run %s", run.pk, exc_info=True)


def _log_failure(fut):
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("progress announcement dropped: %r", fut.exception())
