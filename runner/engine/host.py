"""The drivers of one worker process: a driver for every open run, sharing the process fairly.

Every worker process has one host. A few times a second (`RUNNER_HOST_SECONDS`, or
at once when a launch, a resume or a retry wakes every host with a Redis message,
`ports.wake_hosts`) it looks in the database for open runs and starts a driver, in a
thread of its own, for each run it is not driving yet (a thread whose run ended waits a
while for the next, its database connection open: `SPARE_THREADS`). So any number of
runs go at once on any number of workers, a Celery thread is never held by a run, and a
run is driven by every worker that has room: their drivers claim the run's tasks in
chunks with leases, and the provider's slots and rates are shared fairly among all of
them in Redis (`limits`).

Inside the process the host splits `RUNNER_MAX_INFLIGHT` among its drivers, max-min
fairly by what each could use now (`Driver.demand`). A run whose driver keeps failing
is failed with the reason after `DRIVER_TRIES` crashes in a row.
"""

import logging
import queue
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connections
from redis.exceptions import RedisError

from runner.models import Run

from . import keys, limits
from .driver import Driver, stopping
from .limits import water_fill
from .ports import NUDGE_PREFIX, announce

log = logging.getLogger("runner.engine")

DRIVER_TRIES = 3  # a run whose driver crashes this many times in a row is failed
SPARE_THREADS = 4  # driver threads that wait, each with its database connection, for a run
SPARE_SECONDS = 300.0  # how long one waits before it closes its connection and ends


class Host:
    def __init__(self):
        self.drivers = {}  # run id -> its driver here, until it is done
        self.spare = []  # inboxes of driver threads waiting for their next driver
        self.crashes = {}  # run id -> crashes in a row
        self.wakeup = threading.Event()
        self.lock = threading.Lock()
        self.thread = None
        self.listener = None

    def start(self):
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="runner-host", daemon=True)
                self.thread.start()
            if self.listener is None or not self.listener.is_alive():
                self.listener = threading.Thread(
                    target=self._listen, name="runner-host-wake", daemon=True
                )
                self.listener.start()

    def join(self, timeout):
        """Wait (up to `timeout` seconds in all) for the drivers to save and stop."""
        deadline = time.monotonic() + timeout
        for driver in list(self.drivers.values()):
            driver.done.wait(max(0, deadline - time.monotonic()))

    def _loop(self):
        while not stopping.is_set():
            self.wakeup.clear()
            try:
                self.visit()
            except Exception:
                log.warning("host pass failed", exc_info=True)
            finally:
                close_old_connections()
            self.wakeup.wait(settings.RUNNER_HOST_SECONDS)

    def _listen(self):
        """Wake the loop when `ports.wake_hosts` says a run opened somewhere, and a run's
        driver when `ports.nudge_drivers` says the run has new pending tasks. Without Redis
        the loop still looks every `RUNNER_HOST_SECONDS`; this listens again when it is back."""
        while not stopping.is_set():
            pubsub = None
            try:
                pubsub = limits.client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(keys.hosts_channel())
                while not stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes) and data.startswith(NUDGE_PREFIX):
                        self._nudge(data[len(NUDGE_PREFIX) :].decode(errors="replace"))
                    else:
                        self.wakeup.set()
            except RedisError:
                stopping.wait(1.0)
            except Exception:
                log.warning("the host's wake listener failed", exc_info=True)
                stopping.wait(1.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except RedisError:
                        pass

    def _nudge(self, code):
        """A run has new pending tasks: its driver here, if any, looks at once."""
        for driver in list(self.drivers.values()):
            if driver.run_code == code:  # None until the driver has loaded its run
                driver.nudge()

    def visit(self):
        """Start drivers for open runs without one here; share the process among them."""
        for run_id, driver in list(self.drivers.items()):
            if driver.done.is_set():
                del self.drivers[run_id]
        open_runs = Run.objects.filter(status__in=[Run.QUEUED, Run.RUNNING]).values_list(
            "pk", flat=True
        )
        for run_id in open_runs:
            if run_id not in self.drivers and not stopping.is_set():
                self._start(run_id)
        self.share()

    def share(self):
        drivers = list(self.drivers.values())
        if not drivers:
            return
        caps = water_fill(settings.RUNNER_MAX_INFLIGHT, {d: d.demand for d in drivers})
        for d in drivers:
            d.process_cap = max(1, caps[d])

    def _start(self, run_id):
        driver = Driver(run_id)  # its share of the process: `share()`, right after
        self.drivers[run_id] = driver
        with self.lock:
            seat = self.spare.pop() if self.spare else None
        if seat is not None:
            seat.put(driver)
        else:
            threading.Thread(
                target=self._seat, args=(driver,), name="runner-driver", daemon=True
            ).start()

    def _seat(self, driver):
        """A driver thread: it drives one run, then waits a while for the next (its
        database connection stays open: a new one costs PostgreSQL a server process and
        a run's start 10-40 ms)."""
        try:
            while driver is not None:
                threading.current_thread().name = f"runner-driver-{driver.run_id}"
                try:
                    self._drive(driver)
                finally:
                    inbox = self._offer_seat()  # before `done`: a run started now takes it
                    driver.done.set()
                driver = self._next_driver(inbox) if inbox is not None else None
        finally:
            connections.close_all()  # this thread's connections: the thread ends here

    def _offer_seat(self):
        """This thread's inbox for its next driver, or None when SPARE_THREADS wait
        already or the worker stops."""
        with self.lock:
            if len(self.spare) >= SPARE_THREADS or stopping.is_set():
                return None
            inbox = queue.SimpleQueue()
            self.spare.append(inbox)
            return inbox

    def _next_driver(self, inbox):
        """The next driver handed to this thread, or None when none came within
        SPARE_SECONDS."""
        try:
            driver = inbox.get(timeout=SPARE_SECONDS)
        except queue.Empty:
            with self.lock:
                if inbox in self.spare:
                    self.spare.remove(inbox)
                    return None
            driver = inbox.get()  # handed one just as the wait ran out
        close_old_connections()  # one a database restart broke is opened again
        return driver

    def _drive(self, driver):
        try:
            driver.run()
            self.crashes.pop(driver.run_id, None)
        except RedisError:  # Redis away: not the run's fault; the next pass starts it again
            log.warning("driver of run %s stopped: Redis is unreachable", driver.run_id)
        except Exception as exc:
            n = self.crashes.get(driver.run_id, 0) + 1
            self.crashes[driver.run_id] = n
            log.warning(
                "driver of run %s failed (%d of %d)", driver.run_id, n, DRIVER_TRIES, exc_info=True
            )
            if n >= DRIVER_TRIES:
                self._give_up(driver.run_id, exc)

    def _give_up(self, run_id, exc):
        run = Run.objects.filter(pk=run_id).first()
        reason = f"the run could not be driven ({type(exc).__name__}: {exc})"
        if run is not None and run.fail(reason):
            log.warning("run %s failed: %s", run_id, reason)
            announce(run)
        self.crashes.pop(run_id, None)


_host = Host()


def host():
    """This process's host (started on first use)."""
    return _host
