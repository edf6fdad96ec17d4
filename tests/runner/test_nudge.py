"""A nudge (a run has new pending tasks) reaches that run's driver in this worker, and
wakes it without being taken for a result."""

import uuid

from runner.engine.driver import Driver
from runner.engine.host import Host


def test_a_nudge_wakes_the_driver_of_its_run_and_no_other():
    host = Host()
    mine, other, loading = Driver(1), Driver(2), Driver(3)
    mine.run_code, other.run_code = uuid.uuid4().hex, uuid.uuid4().hex  # `loading`: not yet
    host.drivers = {1: mine, 2: other, 3: loading}
    host._nudge(mine.run_code)
    assert mine.nudged.is_set()
    assert not other.nudged.is_set() and not loading.nudged.is_set()
    assert not mine.results.empty() and other.results.empty()
    mine.changed = False
    mine._collect(block=True)  # the wake-up is not a result: nothing saved, nothing claimed
    assert mine.results.empty() and not mine.changed and mine.stats["flushes"] == 0
