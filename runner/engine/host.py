"""The drivers of one worker process: a driver for every open run, sharing the process fairly.

Every worker process has one host. A few times a second (`RUNNER_HOST_SECONDS`, or
at once when a launch, a resume or a retry wakes every host with a Redis message,
`ports.wake_hosts`) it looks in the database for open runs and starts a driver, in a
thread of its own, for each run it is not driving yet. So
any number of runs go at once on any number of workers, a Celery thread is never held
by a run, and a run is driven by every worker that has room: their drivers claim the
run's tasks in chunks with leases, and the provider's slots and rates are shared
fairly among all of them in Redis (`limits`).

Inside the process the host splits `RUNNER_MAX_INFLIGHT` among its drivers, max-min
fairly by what each could use now (`Driver.demand`). A run whose driver keeps failing
is failed with the reason after `DRIVER_TRIES` crashes in a row.
"""

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connections
from redis.exceptions import RedisError

from runner.models import Run

from . import keys, limits
from .driver import Driver, stopping
from .limits import water_fill
from .ports import announce

log = logging.getLogger("runner.engine")

DRIVER_TRIES = 3  # a run whose driver crashes this many times in a row is failed


class Host:
    def __init__(self):
        self.threads = {}  # run id -> the thread driving it (its driver: `thread.driver`)
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
        for thread in list(self.threads.values()):
            thread.join(max(0, deadline - time.monotonic()))

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
        """Wake the loop when `ports.wake_hosts` says a run opened somewhere. Without Redis the
        loop still looks every `RUNNER_HOST_SECONDS`; this listens again when it is back."""
        while not stopping.is_set():
            pubsub = None
            try:
                pubsub = limits.client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(keys.hosts_channel())
                while not stopping.is_set():
                    if pubsub.get_message(timeout=1.0) is not None:
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

    def visit(self):
        """Start drivers for open runs without one here; share the process among them."""
        for run_id, thread in list(self.threads.items()):
            if not thread.is_alive():
                del self.threads[run_id]
        open_runs = Run.objects.filter(status__in=[Run.QUEUED, Run.RUNNING]).values_list(
            "pk", flat=True
        )
        for run_id in open_runs:
            if run_id not in self.threads and not stopping.is_set():
                self._start(run_id)
        self.share()

    def share(self):
        drivers = [t.driver for t in self.threads.values()]
        if not drivers:
            return
        caps = water_fill(settings.RUNNER_MAX_INFLIGHT, {d: d.demand for d in drivers})
        for d in drivers:
            d.process_cap = max(1, caps[d])

    def _start(self, run_id):
        driver = Driver(run_id)  # its share of the process: `share()`, right after
        thread = threading.Thread(
            target=self._drive, args=(driver,), name=f"runner-driver-{run_id}", daemon=True
        )
        thread.driver = driver
        self.threads[run_id] = thread
        thread.start()

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
        finally:
            connections.close_all()  # this thread's connections: the thread ends here

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
