"""The driver: one run in one worker process, driven from a thread of the host (`host.py`).

It claims pending tasks in chunks (an atomic update with a lease), hands their
calls to the process's asyncio loop (`calls.CallRunner`), saves what finishes in
bulk (`writer.finish`) and runs waiting callbacks (`writer.settle`). A few times
a second it talks to Redis for everything shared with other drivers (of other runs,
and of this run in other workers): its heartbeat, its fair share of each
provider's slots and rates (`limits`), never per call. The host caps what it may
have in flight (`process_cap`) by its share of the process. A run with a budget is
paused by the driver that sees its spend reach it.
"""

import asyncio
import collections
import json
import logging
import queue
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from runner.models import Run, Task
from runner.spec import money as costs

from . import aio, keys, limits, workflows
from .calls import CallRunner, cache_key, completion_from_json
from .endpoints import LaunchError, resolve_endpoints
from .ports import announce, nudge_drivers
from .writer import finish, settle

log = logging.getLogger("runner.engine")

stopping = threading.Event()  # set when the worker shuts down
# Tasks claimed beyond the slots, as a share of them (see `Driver.room`): the moment a call
# ends, the loop starts a held one in its slot, so a driver whose queue is long keeps every
# slot busy without waiting for its next save and claim. Scale-out with 4 workers
# (bench.scaleout), side by side: 0.5 3.21-3.29 s, 1.0 3.20-3.23 s (three runs each).
AHEAD = 1.0
# A claim of tasks ahead only (every slot busy) that found the queue too short is not
# tried again for this long, unless a slot frees: a driver whose calls are all under way
# would otherwise ask the database every pass (a fifth of a waiting worker's time).
AHEAD_RETRY_SECONDS = 0.25
# With nothing changed (no task claimed, saved or put back), the run's progress is
# announced this seldom instead of every RUNNER_PROGRESS_SECONDS (making the state was
# two fifths of a waiting worker's time).
QUIET_ANNOUNCE_SECONDS = 2.0
# After the first result, how long more come into the same chunk (one save, one claim).
# Held tasks take freed slots before the chunk is saved, so a longer chunk leaves no slot
# idle; side by side, 15 ms against 5 ms was no worse and perhaps a little better (the
# scale-out run 3.31-3.49 s, mean 3.41, against 3.42-3.51 s, mean 3.46; at 0 ms two pairs
# 3,054-3,199 against 2,757-2,974 calls/s, within the scenario's spread of 2,500-3,800).
COLLECT_SECONDS = 0.015
HUNGRY_SECONDS = 1.0  # a driver that got what it asked for this recently may want more
# A driver that leaves children pending while the run's other drivers have slots with no
# task waiting tells them so (one Redis message, at most this often): one waiting for work
# claims at once instead of at its next look, 0.05 s later (at 4 workers, the drivers that
# got none of a run's first tasks started its second step 0.04 s after the others).
NUDGE_SECONDS = 0.01
NUDGE = object()  # in `results`: not a result, a wake-up (`Driver.nudge`)


class Driver:
    """Drives one run in this process until nothing is left to do."""

    def __init__(self, run_id):
        self.run_id = run_id
        self.id = uuid.uuid4().hex[:12]
        self.done = threading.Event()  # set when its thread has stopped driving
        self.nudged = threading.Event()  # the run has new pending tasks (`nudge`)
        self.run_code = None  # the run's UUID hex, once loaded
        self.claims = 0
        self.inflight = {}  # task id -> its workflows.Plan, while its calls go on
        # Plans claimed ahead of the slots (in `inflight` too), not yet handed to the loop: a
        # slot freed takes one at once; given back when the pending queue runs dry.
        self.held = collections.deque()
        self.held_lock = threading.Lock()  # the loop takes from `held` too (`_execute`)
        self.changed = True  # since the last announcement: tasks claimed, saved or put back
        self.announced_retrying = 0
        self.ahead_after = 0.0  # no claim of tasks ahead only before this (monotonic)
        self.tasks = {}  # task id -> its asyncio task (touched in the loop only)
        self.results = queue.SimpleQueue()  # (plan, Result or the exception that stopped it)
        self.grants = {}  # pool -> this driver's share of its slots now
        # Slots of the run's other drivers (in every worker) with no task held for them:
        # what they will claim next, so this one does not hold it ahead (`TaskQuerySet.claim`).
        self.others_need = 0
        self.process_cap = settings.RUNNER_MAX_INFLIGHT  # set by the host
        # When a claim last got all it asked for, or the share was all in use: until a
        # second has gone without either, more may be pending (see `hungry`).
        self.full_at = time.monotonic()
        self.wanted = {}
        self.stats = {
            "flushes": 0,
            "flushed": 0,
            "finish_s": 0.0,
            "start_s": 0.0,
            "inflight_sum": 0,
        }
        self.last = {
            "progress": 0.0,
            "renew": time.monotonic(),
            "status": 0.0,
            "reclaim": 0.0,
            "alive": 0.0,
            "grow": 0.0,
            "rate": 0.0,
            "report": 0.0,
            "held": 0.0,
            "announced": 0.0,
            "nudge": 0.0,
        }
        self.reported = {}  # pool -> (calls started, 429s) already told to Redis
        self.paid = [0, 0]  # cost (micro-dollars) and count of the calls this driver made
        self.redis_down = None  # since when Redis has not answered (None: it answers)
        self.dead_seen = {}  # claim prefix -> when its driver was first seen without a heartbeat

    # setup

    def _load(self):
        self.run = Run.objects.select_related("owner").get(pk=self.run_id)
        self.run_code = self.run.code.hex
        self.spec = self.run.spec_obj
        self.workflows = [step.as_workflow() for step in self.spec.steps]  # built once a run
        self.endpoints = resolve_endpoints(self.run, self.spec)
        self.calls = CallRunner(self.endpoints)
        aio.submit(_in_loop(self.calls.setup)).result()
        self.wanted, self.pool_limits = {}, {}
        for ep in self.endpoints:
            self.wanted[ep.pool] = max(
                self.wanted.get(ep.pool, 0), min(ep.concurrency, settings.RUNNER_MAX_INFLIGHT)
            )
            self.pool_limits[ep.pool] = max(self.pool_limits.get(ep.pool, 0), ep.pool_limit)
        self.budget = self.run.budget_micro
        self.priced = any(ep.prices for ep in self.endpoints)
        self.stopping_now = False

    @property
    def hungry(self):
        """Whether this driver could use more slots than it has in flight now."""
        return time.monotonic() - self.full_at < HUNGRY_SECONDS

    @property
    def demand(self):
        """Calls this driver could have in flight now (the host shares the process by it)."""
        if not self.wanted:  # not loaded yet: as much as it may have, until it knows
            return settings.RUNNER_MAX_INFLIGHT
        if self.hungry:
            return min(sum(self.wanted.values()), settings.RUNNER_MAX_INFLIGHT)
        return len(self.inflight) + 1

    def _share_slots(self):
        """Ask Redis for this driver's fair share of each pool (it grows or shrinks)."""
        for pool, top in self.wanted.items():
            want = min(top, self.process_cap)
            if not self.hungry:
                want = min(want, len(self.inflight) + 1)
            # In use, as far as the others may count on: a call that just ended frees its
            # slot and a held one takes it at once (`_execute`), up to the limit the loop
            # has until a smaller share reaches it; counting a dip between the two let
            # another driver's share start before this one's had shrunk (8 in flight
            # against a limit of 6, once in CI).
            cap = self.calls.capacity[pool]
            got = limits.acquire(
                pool, self.id, want, self.pool_limits[pool], max(cap.used, cap.limit)
            )
            if got != self.grants.get(pool):
                aio.call_soon(self.calls.resize, pool, got)
                self.grants[pool] = got
        self.others_need = limits.crew(
            self.run.code, self.id, max(0, self.capacity - len(self.held))
        )

    def endpoints_by_pool(self, pool):
        return next(ep for ep in self.endpoints if ep.pool == pool)

    @property
    def busy(self):
        """Tasks in flight that hold or wait for a slot: one waiting out a backoff after a
        500 or 429 does not, so others are claimed meanwhile (at most one slot's worth
        each, so a provider that is down does not make the driver claim everything)."""
        return len(self.inflight) - min(self.calls.retrying, self.capacity)

    @property
    def free(self):
        """Slots free now."""
        return max(0, self.capacity - self.busy)

    @property
    def spawnable(self):
        """Slots not taken by what is in the loop (the held plans may have them)."""
        return max(0, self.capacity - self.busy + len(self.held))

    @property
    def room(self):
        """Tasks to claim now: free slots, plus some ahead (AHEAD of the slots) that wait
        in `held`, so a slot freed is taken again at once (by the loop, `_execute`), not
        after the driver's next claim. The claim takes those only from a queue long
        enough for the run's other drivers too (`TaskQuerySet.claim`)."""
        return self.capacity + int(self.capacity * AHEAD) - self.busy

    @property
    def capacity(self):
        return max(min(sum(self.grants.values()), self.process_cap), 0)

    def run(self):
        try:
            self._load()
        except LaunchError as exc:  # its provider is gone, say: it cannot go on, and says why
            run = Run.objects.get(pk=self.run_id)
            if run.fail("; ".join(str(p) for p in exc.problems)):
                log.warning("run %s failed: %s", self.run_id, run.error)
                announce(run)
            return
        if self.run.status not in (Run.QUEUED, Run.RUNNING):
            return
        self.run.start()
        log.info("driver %s starts run %s", self.id, self.run_id)
        try:
            if costs.over_budget(self.run.spent, self.budget) and self._pause():
                return
            self._loop()
        finally:
            self._shutdown()

    # rates and budget

    def _rates(self, now):
        """Ask Redis for what this driver's waiting calls need; report 429s and calls made.

        Gated pools ask every RUNNER_RATE_SECONDS while calls wait; the others only
        report (once a second, or at once after a 429), so a 429 can gate them too."""
        for pool, gate in self.calls.gates.items():
            ep = self.endpoints_by_pool(pool)
            want_r, want_t = gate.need()
            started, n429 = gate.started, gate.n429
            seen_started, seen_429 = self.reported.get(pool, (0, 0))
            new_429 = n429 - seen_429
            if gate.limited and (want_r or want_t):
                pass
            elif not new_429 and (now - self.last["report"] < 1 or started == seen_started):
                continue
            try:
                got = limits.rate_grant(
                    ep.rate_key,
                    holder=self.id,
                    rpm=ep.rpm,
                    tpm=ep.tpm,
                    want_requests=want_r,
                    want_tokens=want_t,
                    n429=new_429,
                    retry_after=gate.retry_after if new_429 else 0,
                    started=started - seen_started,
                )
            except Exception:
                log.warning("could not ask Redis for a rate grant", exc_info=True)
                continue
            self.reported[pool] = (started, n429)
            if got.requests or got.tokens or gate.limited != bool(got.rps or got.tps):
                aio.call_soon(self.calls.grant, pool, got.requests, got.tokens, got.rps, got.tps)
        if now - self.last["report"] >= 1:
            self.last["report"] = now

    def _budget_room(self, n):
        """How many more calls fit in the budget, counting those in flight."""
        if self.budget is None or self.stopping_now or not self.priced:
            return 0 if self.stopping_now else n
        left = self.budget - self.run.spent
        if left <= 0:
            return 0
        cost, count = self.paid
        if not count:  # a few calls first, to see what one costs
            return 0 if self.inflight else min(n, 8)
        if not cost:
            return n
        room = left * count // cost - len(self.inflight)
        return max(0, min(n, room)) if self.inflight else max(1, min(n, room))

    def _pause(self):
        """The budget is spent: save the calls in flight, then pause with the reason.

        Returns False (and goes on) when the budget was raised meanwhile."""
        self._stop_inflight(wait=min(30, settings.RUNNER_LEASE_SECONDS / 2))
        self.stopping_now = False
        self.run.refresh_from_db()
        self.budget = self.run.budget_micro
        if self.run.status == Run.RUNNING and not costs.over_budget(self.run.spent, self.budget):
            return False
        message = costs.paused_message(self.run.spent, self.budget)
        if self.run.status != Run.RUNNING or not self.run.pause(message):
            return True  # cancelled meanwhile: this driver stops all the same
        log.info("run %s paused: %s", self.run_id, message)
        return True

    def _loop(self):
        idle_since = None
        while True:
            now = time.monotonic()
            if now - self.last["alive"] > settings.RUNNER_HEARTBEAT_TTL / 4:
                self._heartbeat(now)
            if now - self.last["grow"] > 0.25 or not self.grants:
                try:
                    self._share_slots()
                except Exception:
                    log.warning("could not ask Redis for slots", exc_info=True)
                self.last["grow"] = now
            if now - self.last["status"] > 0.5:
                self.last["status"] = now
                status, spent, budget = (
                    Run.objects.filter(pk=self.run_id)
                    .values_list("status", "spent", "budget_micro")
                    .first()
                )
                self.run.spent, self.run.budget_micro = spent, budget
                self.budget = budget
                if status == Run.RUNNING and costs.over_budget(spent, budget) and self._pause():
                    return
                if status != Run.RUNNING or stopping.is_set():
                    self._stop_inflight()
                    return
            if now - self.last["rate"] > settings.RUNNER_RATE_SECONDS:
                self.last["rate"] = now
                self._rates(now)
            claimed = 0
            free = self.room
            if free <= 0:
                self.full_at = now  # every slot is busy: it could use more
            if free > 0 and (free >= max(1, self.capacity // 10) or self.busy < self.capacity // 2):
                n = self._budget_room(min(free, settings.RUNNER_CLAIM_BATCH))
                slots = min(n, self.free)
                if n and (slots or now >= self.ahead_after):
                    claimed = self._claim(slots, ahead=n - slots)
                    if not claimed and not slots:
                        self.ahead_after = now + AHEAD_RETRY_SECONDS
            if self.held:
                self._spawn_held()
                if self.held and now - self.last["held"] > settings.RUNNER_FLUSH_SECONDS:
                    self.last["held"] = now
                    if not Task.objects.filter(run_id=self.run_id, status=Task.PENDING).exists():
                        self._give_back()
            self._collect(block=bool(self.inflight) and not claimed)
            if costs.over_budget(self.run.spent, self.budget) and self._pause():
                return
            if now - self.last["renew"] > settings.RUNNER_LEASE_SECONDS / 3:
                self._renew()
            if not self.inflight and not claimed:
                if self._settle():
                    return
                idle_since = idle_since or now
                if now - self.last["reclaim"] > 1:
                    self.last["reclaim"] = now
                    self._reclaim_dead()
                self.nudged.wait(0.05 if now - idle_since < 1 else 0.2)
                self.nudged.clear()
            else:
                idle_since = None
            if time.monotonic() - self.last["progress"] > settings.RUNNER_PROGRESS_SECONDS:
                self.last["progress"] = now = time.monotonic()
                retrying = self.calls.retrying
                if (
                    self.changed
                    or retrying != self.announced_retrying
                    or now - self.last["announced"] > QUIET_ANNOUNCE_SECONDS
                ):
                    self.changed, self.announced_retrying = False, retrying
                    self.last["announced"] = now
                    self._publish_waiting()
                    announce(self.run, soon=True)

    def _heartbeat(self, now):
        """Say this driver is alive. Redis away: calls go on, results still reach the
        database; the heartbeat is tried again every pass until Redis answers."""
        try:
            limits.heartbeat(self.id)
        except Exception as exc:
            if self.redis_down is None:
                self.redis_down = now
                log.warning("Redis is unreachable (%s): calls go on, results are saved", exc)
            return
        if self.redis_down is not None:
            log.info("Redis is back after %.1fs", now - self.redis_down)
            self.redis_down = None
        self.last["alive"] = now

    def _publish_waiting(self):
        """Tell the run's pages what the database cannot: how many calls wait to try again
        after a transient error, and how many tasks wait here for a slot (running in the
        database since their claim, their call not sent yet), by step."""
        code = self.run.code
        with self.held_lock:
            held = collections.Counter(plan.step for plan in self.held)
        ttl = settings.RUNNER_HEARTBEAT_TTL * 2
        try:
            pipe = limits.client().pipeline(transaction=False)
            pipe.hset(keys.retrying(code), self.id, self.calls.retrying)
            pipe.expire(keys.retrying(code), ttl)
            pipe.hset(keys.held(code), self.id, json.dumps(held))
            pipe.expire(keys.held(code), ttl)
            pipe.execute()
        except Exception:
            log.warning("could not publish the retry and held counts", exc_info=True)

    def _shutdown(self):
        try:
            pipe = limits.client().pipeline(transaction=False)
            pipe.hdel(keys.retrying(self.run.code), self.id)
            pipe.hdel(keys.held(self.run.code), self.id)
            pipe.execute()
        except Exception:
            pass
        st = self.stats
        if st["flushes"]:
            log.info(
                "driver %s: %d results in %d flushes (%.1f per flush), %.2fs saving, %.2fs starting, "
                "%.0f in flight on average",
                self.id,
                st["flushed"],
                st["flushes"],
                st["flushed"] / st["flushes"],
                st["finish_s"],
                st["start_s"],
                st["inflight_sum"] / st["flushes"],
            )
        for pool in self.grants:
            try:
                limits.release(pool, self.id)
            except Exception:
                log.warning("could not release slots of %s", pool)
        try:
            limits.forget(self.id)
        except Exception:
            pass
        aio.submit(self.calls.close())
        try:
            self.run.refresh_from_db()
            announce(self.run)
        finally:  # last: a driver gone from its run's crew has stopped (tests wait on it)
            try:
                limits.leave_crew(self.run.code, self.id)
            except Exception:
                pass

    # claiming

    def _next_claim(self):
        """A new claim token; its prefix names this driver, so others can tell if it died."""
        self.claims += 1
        return f"{self.id}:{self.claims}"

    def _claim(self, n, ahead=0):
        lease = timezone.now() + timedelta(seconds=settings.RUNNER_LEASE_SECONDS)
        rows = Task.objects.claim(
            self.run_id, n, self._next_claim(), lease, ahead=ahead, reserve=self.others_need
        )
        if len(rows) >= n:
            self.full_at = time.monotonic()
        self._start(rows)
        return len(rows)

    def _start(self, rows):
        """Build the first call of each claimed task's workflow and hand the tasks to the loop
        (one wake-up of the loop for the whole chunk)."""
        plans = [self._plan(row) for row in rows]
        if not plans:
            return
        self.changed = True
        self._prefetch([p.first for p in plans if p.first is not None])
        with self.held_lock:
            room = self.spawnable
            for plan in plans:
                self.inflight[plan.task_id] = plan
            self.held.extend(plans[room:])
        if room:
            aio.call_soon(self._spawn, plans[:room])

    def _spawn_held(self):
        """Hand held plans to the loop for the slots free now."""
        with self.held_lock:
            plans = [self.held.popleft() for _ in range(min(self.spawnable, len(self.held)))]
        if plans:
            aio.call_soon(self._spawn, plans)

    def _give_back(self):
        """Put the held plans (never started) back in the queue: when the run stops, and
        when the queue runs dry, so that a worker with room starts them now (one claim by a
        busy driver at the start of a wave could otherwise keep a run's last calls waiting
        for its next wave while other workers sit idle). A busy driver takes tasks ahead
        again only from a queue long enough for the others too (`TaskQuerySet.claim`)."""
        with self.held_lock:
            ids = [plan.task_id for plan in self.held]
            self.held.clear()
        for task_id in ids:
            del self.inflight[task_id]
        Task.objects.filter(id__in=ids, status=Task.RUNNING).release()
        self.changed = True

    def _spawn(self, plans):
        """In the loop: one asyncio task per claimed task."""
        loop = asyncio.get_running_loop()
        for plan in plans:
            self.tasks[plan.task_id] = loop.create_task(self._execute(plan))

    async def _execute(self, plan):
        """In the loop: the task's workflow; its Result (or what stopped it) goes to the driver."""
        try:
            outcome = await workflows.execute(self.calls, plan)
        except BaseException as exc:  # a bug, or cancelled: the driver puts the task back
            outcome = exc
        finally:
            if self.tasks.get(plan.task_id) is asyncio.current_task():
                del self.tasks[plan.task_id]
        with self.held_lock:  # its slot goes to a held plan now, not after the chunk's save
            following = self.held.popleft() if self.held else None
        self.results.put((plan, outcome))
        if following is not None:
            self.tasks[following.task_id] = asyncio.get_running_loop().create_task(
                self._execute(following)
            )

    def nudge(self):
        """Any thread: the run has new pending tasks; a driver waiting for results or
        for work looks at once instead of at its next pass."""
        self.nudged.set()
        self.results.put((None, NUDGE))

    def _nudge_others(self):
        """Tell the run's drivers in every worker (at most every NUDGE_SECONDS) that this
        one left new tasks pending: one with free slots claims them now."""
        now = time.monotonic()
        if now - self.last["nudge"] >= NUDGE_SECONDS:
            self.last["nudge"] = now
            nudge_drivers(self.run.code)

    def _cancel(self, task_ids):
        """In the loop: cancel the calls of these tasks."""
        for task_id in task_ids:
            task = self.tasks.get(task_id)
            if task is not None:
                task.cancel()

    def _plan(self, row):
        step = self.spec.steps[row["step"]]
        plan = workflows.Plan(
            self.run.code.hex,
            row["id"],
            row["step"],
            row["variant"],
            row["round"],
            row["context"],
            self.workflows[row["step"]],
            self.endpoints[row["step"]],
            step.params,
            self.calls.estimate_tokens,
            single=step.workflow is None,
            row=row,
        )
        return workflows.prepare(plan)

    def _prefetch(self, jobs):
        """One round trip: replies already paid for (a dead worker's, or an identical call's)."""
        try:
            values = limits.client().mget([cache_key(j, 0) for j in jobs])
        except Exception:
            log.warning("response cache unavailable", exc_info=True)
            return
        for job, raw in zip(jobs, values, strict=True):
            if raw:
                job.cached = completion_from_json(raw)

    # finishing

    def _collect(self, block):
        items = []
        try:
            items.append(
                self.results.get(timeout=settings.RUNNER_FLUSH_SECONDS if block else 0.001)
            )
        except queue.Empty:
            return
        deadline = time.monotonic() + COLLECT_SECONDS
        while time.monotonic() < deadline:
            try:
                items.append(self.results.get_nowait())
            except queue.Empty:
                break
        items = [item for item in items if item[1] is not NUDGE]
        if not items:
            return
        self.changed = True
        results = []
        for plan, outcome in items:
            if self.inflight.get(plan.task_id) is not plan:
                continue  # put back already (cancelled, or the run was paused meanwhile)
            if isinstance(outcome, BaseException):  # a bug or a cancelled call: back to pending
                log.warning("call failed outside the provider: %r", outcome)
                del self.inflight[plan.task_id]
                Task.objects.filter(id=plan.task_id, status=Task.RUNNING).release()
                continue
            results.append((plan, outcome))
        rows = {}
        for plan, _ in results:
            del self.inflight[plan.task_id]
            rows[plan.task_id] = plan.row
        if self.held:
            self._spawn_held()  # before saving: a freed slot takes the next call at once
        results = [res for _, res in results]
        for res in results:
            if not res.cached:
                self.paid[0] += res.cost
                self.paid[1] += 1
        if results:
            # Children of what finished take at most half the free slots (rounded up): the
            # rest go to the earliest pending step (the claim's order), so a run's first
            # steps never fall behind its last ones. A run ends when its longest chain
            # does: deepest-first alone left the last slots with too little to do.
            free = self._budget_room(self.free - self.free // 2)
            t0 = time.perf_counter()
            claimed = finish(
                self.run, self.spec, results, claim=self._next_claim(), claim_max=free, meta=rows
            )
            if len(claimed) >= free:
                self.full_at = time.monotonic()
                last = len(self.spec.steps) - 1
                if self.others_need and any(plan.step < last for plan, _ in items):
                    self._nudge_others()  # children it had no room for wait in the queue
            t1 = time.perf_counter()
            self._start(claimed)
            t2 = time.perf_counter()
            st = self.stats
            st["flushes"] += 1
            st["flushed"] += len(results)
            st["finish_s"] += t1 - t0
            st["start_s"] += t2 - t1
            st["inflight_sum"] += len(self.inflight)

    def _renew(self):
        self.last["renew"] = time.monotonic()
        if self.inflight:
            lease = timezone.now() + timedelta(seconds=settings.RUNNER_LEASE_SECONDS)
            Task.objects.filter(id__in=list(self.inflight)).renew(lease)

    def _reclaim_dead(self):
        """Put back tasks whose lease ran out or whose driver is gone."""
        now = timezone.now()
        n = Task.objects.filter(
            run_id=self.run_id, status=Task.RUNNING, lease_until__lt=now
        ).release(lost=True)
        claims = set(
            Task.objects.filter(run_id=self.run_id, status=Task.RUNNING)
            .values_list("claim", flat=True)
            .distinct()
        )
        dead = self._dead_claims(claims)
        if dead:
            n += Task.objects.filter(
                run_id=self.run_id, status=Task.RUNNING, claim__in=dead
            ).release(lost=True)
        if n:
            self.changed = True
            log.info("driver %s put %d abandoned tasks of run %s back", self.id, n, self.run_id)

    def _dead_claims(self, claims):
        """Claims whose driver has had no heartbeat for a while (not just since Redis came
        back empty: a driver gets a few seconds to say it is alive again)."""
        if self.redis_down is not None:
            return set()  # no way to tell who is alive
        try:
            drivers = {c.split(":")[0] for c in claims if c and not c.startswith(self.id + ":")}
            silent = {d for d in drivers if not limits.is_alive(d)}
        except Exception:
            return set()
        now = time.monotonic()
        self.dead_seen = {d: self.dead_seen.get(d, now) for d in silent}
        grace = settings.RUNNER_HEARTBEAT_TTL / 2
        gone = {d for d, since in self.dead_seen.items() if now - since >= grace}
        return {c for c in claims if c and c.split(":")[0] in gone}

    def _stop_inflight(self, wait=None):
        """Cancelled or shutting down: save what finishes within a moment, put back the rest."""
        if wait is None:
            wait = 5 if stopping.is_set() else 2
        self.stopping_now = True  # what finishes now makes pending children, not new calls
        if self.held:  # never started: back to the queue, no call lost
            self._give_back()
        deadline = time.monotonic() + wait
        while self.inflight and time.monotonic() < deadline:
            self._collect(block=True)
        if self.inflight:
            aio.call_soon(self._cancel, list(self.inflight))
            Task.objects.filter(id__in=list(self.inflight), status=Task.RUNNING).release(lost=True)
        self.inflight.clear()

    def _settle(self):
        """Run waiting callbacks whose step is complete; finish the run when all is done."""
        return settle(self.run, self.spec)


async def _in_loop(fn):
    return fn()
