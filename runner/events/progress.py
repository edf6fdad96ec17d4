"""Progress events: saved first (the database is the truth), announced second.

Drivers call `announce(run)` a few times a second at most; the message carries the
whole current state of the run, so a dropped message costs nothing and a page
that (re)connects asks for the state itself. The run is read again before the
state is made: a driver's copy of it is as old as the driver.
"""

import logging
import threading
import time

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.dispatch import receiver
from redis.exceptions import RedisError

from runner.engine import aio
from runner.engine.ports import run_changed
from runner.models import Run

from .stats import run_state

log = logging.getLogger("runner.progress")


# What the state reads of a run that changes while it runs (callers may hold an old copy).
LIVE_FIELDS = ["status", "error", "started", "finished", "aggregated", "providers", "tally"]
# Making the state of a huge run takes a while: drivers spend at most this share of
# their time on it (a 100,000-task run announces every second or two, a small one
# as often as the driver asks). A change of status is always announced at once.
SHARE = 0.2
_quiet_until = {}  # run id -> (monotonic time, status announced last)


@receiver(run_changed, dispatch_uid="runner.events.progress.announce")
def _on_run_changed(sender, run, soon=False, **kwargs):
    if soon:
        _announcer.put(run)
    else:
        announce(run)


def _first_to_announce(run):
    """Whether this worker is the one to announce `run`'s progress now: a run driven by
    several workers is announced by one of them every `RUNNER_PROGRESS_SECONDS`, not by
    each (making the state is most of an idle driver's work). Redis away: announce."""
    from runner.engine import keys, limits

    ms = max(1, int(settings.RUNNER_PROGRESS_SECONDS * 1000))
    try:
        return bool(limits.client().set(keys.announced(run.code), b"1", nx=True, px=ms))
    except RedisError:
        return True


class _Announcer:
    """A thread that announces drivers' progress, so the driver goes on meanwhile (the
    database's counting of a huge run mostly leaves the interpreter free)."""

    def __init__(self):
        self.pending = {}  # run id -> the latest copy of the run asked for
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread = None

    def put(self, run):
        with self.lock:
            self.pending[run.pk] = run
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="announcer", daemon=True)
                self.thread.start()
        self.wake.set()

    def _loop(self):
        while True:
            self.wake.wait()
            self.wake.clear()
            with self.lock:
                runs, self.pending = list(self.pending.values()), {}
            for run in runs:
                announce(run, progress=True)
            close_old_connections()


_announcer = _Announcer()


def announce(run, progress=False):
    """Send `run`'s state to its pages. `progress`: a driver's periodic news, skipped
    while the same state was sent a moment ago (by this process or another); a change
    of status is always sent."""
    try:
        current = Run.objects.defer("inputs").get(pk=run.pk)
        until, status = _quiet_until.get(run.pk, (0.0, None))
        same = current.is_active and status == current.status
        if same and time.monotonic() < until:
            return
        if same and progress and not _first_to_announce(current):
            return
        started = time.monotonic()
        state = run_state(current)
        spent = time.monotonic() - started
        if current.is_active:
            _quiet_until[run.pk] = (time.monotonic() + spent * (1 / SHARE - 1), current.status)
        else:
            _quiet_until.pop(run.pk, None)
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
