"""How a run executes: launch, claim, call, finish, fan out, settle.

A run's tasks live in the database. Drivers (Celery tasks, one or more per run)
claim pending tasks in chunks with an atomic update and a lease, make the chunk's
LLM calls concurrently on the process's asyncio loop, and write results in bulk;
each finished task makes its children at once, and only waiting callbacks
(aggregate, flatten, python) wait for their step. Every reply is put in a
run-scoped Redis cache before anything else, so a call whose worker died before
saving is not paid for twice, and identical calls inside a run are made once.
"""

import asyncio
import hashlib
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import redis.asyncio as aioredis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from . import aio, limits, progress, templating
from .callbacks import CallbackError, Child, Output, StepResult, children_of, gather, root_seq
from .models import Provider, Record, Run, Task
from .parsing import ParseError, parse_output
from .providers import (
    Completion,
    CompletionRequest,
    ProviderError,
    build_provider,
    complete_with_retries,
)
from .spec import WAITING_CALLBACKS, OutputFormat, PipelineSpec, SpecError

log = logging.getLogger("runner.engine")

CACHE_TTL = 7 * 24 * 3600
stopping = threading.Event()  # set when the worker shuts down


class LaunchError(ValueError):
    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# -- endpoints ---------------------------------------------------------------------


@dataclass
class Endpoint:
    kind: str
    base_url: str
    api_key: str
    model: str
    concurrency: int
    pool: str  # the shared concurrency pool (one per endpoint and key)


def resolve_endpoints(run, spec):
    """Which endpoint and model each step calls; LaunchError names a step that has none."""
    problems, out = [], []
    cache = {}
    for i, step in enumerate(spec.steps):
        where = f"step {i + 1} ('{step.name}')"
        pid = run.providers.get(step.name) or (
            run.providers.get("*") if step.model.provider == "default" else None
        )
        provider = None
        if pid:
            provider = cache.get(pid) or Provider.objects.filter(pk=pid, owner=run.owner_id).first()
        elif step.model.provider != "default":
            provider = Provider.objects.filter(owner=run.owner_id, name=step.model.provider).first()
            if provider is None:
                problems.append(
                    f"{where}: no provider named '{step.model.provider}'; add it on the providers page"
                )
                out.append(None)
                continue
        if provider is not None:
            cache[pid or provider.pk] = provider
            model = run.model_override or step.model.name or provider.default_model
            ep = Endpoint(
                provider.kind,
                provider.base_url,
                provider.api_key,
                model,
                run.concurrency or provider.concurrency,
                provider.limit_key,
            )
        elif settings.DEFAULT_LLM_BASE_URL:
            model = run.model_override or step.model.name or settings.DEFAULT_LLM_MODEL
            ep = Endpoint(
                "openai",
                settings.DEFAULT_LLM_BASE_URL,
                settings.DEFAULT_LLM_API_KEY,
                model,
                run.concurrency or settings.DEFAULT_LLM_CONCURRENCY,
                f"{settings.DEFAULT_LLM_BASE_URL}|default",
            )
        else:
            problems.append(
                f"{where}: no LLM provider is set; add one on the providers page or pass --base-url"
            )
            out.append(None)
            continue
        if not ep.model:
            problems.append(
                f"{where}: no model is chosen; set the step's model or the provider's default model"
            )
        out.append(ep)
    if problems:
        raise LaunchError(problems)
    return out


# -- launch, cancel, resume -----------------------------------------------------------


def launch_run(
    owner,
    spec,
    inputs,
    *,
    providers=None,
    model="",
    concurrency=None,
    name="",
    pipeline_code=None,
    pipeline_version=None,
    drivers=None,
):
    """Validate, write the run and its first tasks, and hand it to the workers."""
    if not isinstance(spec, PipelineSpec):
        spec = PipelineSpec.load(spec)
    else:
        problems = spec.problems()
        if problems:
            raise SpecError(problems)
    problems = spec.check_inputs(inputs)
    if problems:
        raise LaunchError(problems)
    run = Run(
        owner=owner,
        name=name or spec.name,
        spec=spec.to_dict(),
        inputs=inputs,
        providers=providers or {},
        model_override=model or "",
        concurrency=concurrency,
        pipeline_code=pipeline_code,
        pipeline_version=pipeline_version,
    )
    resolve_endpoints(run, spec)
    with transaction.atomic():
        run.save()
        now = timezone.now()
        Task.objects.bulk_create(
            [
                Task(run=run, step=0, key=f"in:{i}", seq=root_seq(i), context=row, created=now)
                for i, row in enumerate(inputs)
            ],
            batch_size=500,
        )
        start_drivers(run, drivers)
    return run


def start_drivers(run, count=None):
    from .tasks import drive_run

    count = count or settings.RUNNER_DRIVERS_PER_RUN
    try:
        limits.client().set(
            f"pd:run-alive:{run.pk}", "queued", ex=max(60, settings.RUNNER_HEARTBEAT_TTL)
        )
    except Exception:  # Redis down: the watchdog starts the driver later
        log.warning("could not mark run %s as queued in Redis", run.pk)
    for _ in range(count):
        drive_run.delay_on_commit(run.pk)


def cancel_run(run):
    """Stop new claims; calls in flight finish and are saved; the rest stays pending."""
    Run.objects.filter(pk=run.pk, status__in=[Run.QUEUED, Run.RUNNING]).update(
        status=Run.CANCELLED, finished=timezone.now()
    )
    run.refresh_from_db()
    progress.announce(run)
    return run


def resume_run(run, *, failed=True):
    """Re-queue what is pending (and failed, unless told not to); finished calls are kept."""
    with transaction.atomic():
        if failed:
            # A new round gets fresh calls: the cached replies that failed are not reused.
            Task.objects.filter(run=run, status=Task.FAILED).update(
                status=Task.PENDING, error="", lease_until=None, claim="", round=F("round") + 1
            )
        Task.objects.filter(run=run, status__in=[Task.CANCELLED, Task.RUNNING]).update(
            status=Task.PENDING, lease_until=None, claim=""
        )
        Run.objects.filter(pk=run.pk).update(status=Run.QUEUED, finished=None, error="")
        start_drivers(run)
    run.refresh_from_db()
    progress.announce(run)
    return run


def retry_failed(run):
    return resume_run(run, failed=True)


# -- the calls -------------------------------------------------------------------------


@dataclass
class Job:
    task_id: int
    step: int
    variant: int
    messages: list
    request: CompletionRequest
    fmt: str
    schema: dict | None
    cache_base: str
    pool: str
    cached: Completion | None = None


@dataclass
class Result:
    task_id: int
    ok: bool
    messages: list
    text: str = ""
    parsed: object = None
    error: str = ""
    model: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    attempts: list = field(default_factory=list)
    cached: bool = False


def _cache_key(job, parse_try):
    return f"{job.cache_base}:{parse_try}"


def _completion_to_json(c):
    return json.dumps([c.text, c.model, c.tokens_in, c.tokens_out, c.latency_ms])


def _completion_from_json(raw):
    text, model, tin, tout, ms = json.loads(raw)
    return Completion(text=text, model=model, tokens_in=tin, tokens_out=tout, latency_ms=ms)


class CallRunner:
    """The asyncio side of one driver: semaphores, providers, cache, in-flight dedupe."""

    def __init__(self, endpoints):
        self.endpoints = {ep.pool: ep for ep in endpoints if ep}
        self.providers = {}
        self.semaphores = {}
        self.inflight = {}  # cache key -> asyncio.Future of Completion
        self.redis = None
        self._cache_batch = []  # replies waiting to be written to Redis in one pipeline
        self.retrying = 0  # calls waiting to try again after a transient error

    def setup(self):
        for pool, ep in self.endpoints.items():
            self.providers[pool] = build_provider(ep.kind, ep.base_url, ep.api_key, ep.model)
            self.semaphores[pool] = asyncio.Semaphore(0)
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL)

    def grow(self, pool, n):
        sem = self.semaphores[pool]
        for _ in range(n):
            sem.release()

    async def close(self):
        if self.redis is not None:
            await self.redis.aclose()

    async def _call(self, job, parse_try, attempts):
        key = _cache_key(job, parse_try)
        if parse_try == 0 and job.cached is not None:
            return job.cached, True
        if parse_try > 0:
            raw = await self.redis.get(key)
            if raw:
                return _completion_from_json(raw), True
        shared = self.inflight.get(key)
        if shared is not None:
            return await asyncio.shield(shared), True
        fut = asyncio.get_running_loop().create_future()
        self.inflight[key] = fut
        waiting = [False]

        def track(info):
            attempts.append(info)
            if waiting[0]:
                self.retrying -= 1
            waiting[0] = not info["ok"]
            if waiting[0]:
                self.retrying += 1

        try:
            completion = await complete_with_retries(
                self.providers[job.pool],
                job.request,
                max_retries=settings.RUNNER_MAX_TRANSIENT_RETRIES,
                backoff_base=settings.RUNNER_BACKOFF_BASE,
                backoff_max=settings.RUNNER_BACKOFF_MAX,
                semaphore=self.semaphores[job.pool],
                on_attempt=track,
            )
            # Saved before anything else: a worker that dies now does not pay for this again.
            await self._cache_put(key, _completion_to_json(completion))
            fut.set_result(completion)
            return completion, False
        except BaseException as exc:
            fut.set_exception(
                exc if isinstance(exc, Exception) else ProviderError("cancelled", transient=True)
            )
            fut.exception()  # mark retrieved
            raise
        finally:
            self.inflight.pop(key, None)
            if waiting[0]:
                self.retrying -= 1

    async def _cache_put(self, key, value):
        """Write a reply to the run's cache; replies finishing together share one round trip."""
        done = asyncio.get_running_loop().create_future()
        self._cache_batch.append((key, value, done))
        if len(self._cache_batch) == 1:
            asyncio.get_running_loop().create_task(self._cache_flush())
        await done

    async def _cache_flush(self):
        await asyncio.sleep(0)  # let the replies that arrived in the same pass join the batch
        batch, self._cache_batch = self._cache_batch, []
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key, value, _ in batch:
                pipe.set(key, value, ex=CACHE_TTL)
            await pipe.execute()
        except Exception:
            log.warning("could not cache %d replies in Redis", len(batch), exc_info=True)
        for _, _, done in batch:
            if not done.done():
                done.set_result(None)

    async def execute(self, job):
        attempts = []
        last_text, reason, completion = "", "", None
        tries = 1 + settings.RUNNER_PARSE_RETRIES
        for parse_try in range(tries):
            try:
                completion, cached = await self._call(job, parse_try, attempts)
            except ProviderError as exc:
                return Result(
                    job.task_id,
                    False,
                    job.messages,
                    error=exc.message,
                    attempts=attempts,
                    text=last_text,
                )
            last_text = completion.text
            try:
                parsed = parse_output(completion.text, job.fmt, job.schema)
            except ParseError as exc:
                reason = exc.reason
                attempts.append(
                    {"n": len(attempts) + 1, "ok": False, "error": reason, "parse": True}
                )
                continue
            return Result(
                job.task_id,
                True,
                job.messages,
                text=completion.text,
                parsed=parsed,
                model=completion.model,
                tokens_in=completion.tokens_in,
                tokens_out=completion.tokens_out,
                latency_ms=completion.latency_ms,
                attempts=attempts,
                cached=cached,
            )
        return Result(
            job.task_id,
            False,
            job.messages,
            text=last_text,
            error=reason,
            model=completion.model if completion else "",
            attempts=attempts,
            tokens_in=completion.tokens_in if completion else 0,
            tokens_out=completion.tokens_out if completion else 0,
        )


# -- the driver ------------------------------------------------------------------------


class Driver:
    """Drives one run from one worker thread until nothing is left to do."""

    def __init__(self, run_id):
        self.run_id = run_id
        self.id = uuid.uuid4().hex[:12]
        self.claims = 0
        self.inflight = {}  # task id -> concurrent future
        self.results = queue.SimpleQueue()
        self.grants = {}
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
        }

    # setup

    def _load(self):
        self.run = Run.objects.select_related("owner").get(pk=self.run_id)
        self.spec = PipelineSpec.model_validate(self.run.spec)
        self.endpoints = resolve_endpoints(self.run, self.spec)
        self.calls = CallRunner(self.endpoints)
        aio.submit(_in_loop(self.calls.setup)).result()
        self.wanted = {}
        for ep in self.endpoints:
            self.wanted[ep.pool] = max(
                self.wanted.get(ep.pool, 0), min(ep.concurrency, settings.RUNNER_MAX_INFLIGHT)
            )

    def _grow_grants(self):
        for pool, want in self.wanted.items():
            have = self.grants.get(pool, 0)
            if have >= want:
                continue
            got = limits.acquire(pool, self.id, want, self.endpoints_by_pool(pool).concurrency)
            if got > have:
                aio.call_soon(self.calls.grow, pool, got - have)
                self.grants[pool] = got

    def endpoints_by_pool(self, pool):
        return next(ep for ep in self.endpoints if ep.pool == pool)

    @property
    def capacity(self):
        return max(sum(self.grants.values()), 0)

    def run(self):
        self._load()
        if self.run.status in (Run.CANCELLED, Run.COMPLETED, Run.FAILED):
            return
        Run.objects.filter(pk=self.run_id, status=Run.QUEUED).update(
            status=Run.RUNNING, started=timezone.now()
        )
        log.info("driver %s starts run %s", self.id, self.run_id)
        try:
            self._loop()
        finally:
            self._shutdown()

    def _loop(self):
        idle_since = None
        while True:
            now = time.monotonic()
            if now - self.last["alive"] > settings.RUNNER_HEARTBEAT_TTL / 4:
                limits.client().set(
                    f"pd:run-alive:{self.run_id}", self.id, ex=settings.RUNNER_HEARTBEAT_TTL
                )
                limits.heartbeat(self.id)
                self.last["alive"] = now
            if now - self.last["grow"] > 0.5 or not self.grants:
                self._grow_grants()
                self.last["grow"] = now
            if now - self.last["status"] > 0.5:
                self.last["status"] = now
                status = Run.objects.filter(pk=self.run_id).values_list("status", flat=True).first()
                if status != Run.RUNNING or stopping.is_set():
                    self._stop_inflight()
                    return
            claimed = 0
            free = self.capacity - len(self.inflight)
            if free > 0 and (
                free >= max(1, self.capacity // 10) or len(self.inflight) < self.capacity // 2
            ):
                claimed = self._claim(min(free, settings.RUNNER_CLAIM_BATCH))
            self._collect(block=bool(self.inflight) and not claimed)
            if now - self.last["renew"] > settings.RUNNER_LEASE_SECONDS / 3:
                self._renew()
            if not self.inflight and not claimed:
                if self._settle():
                    return
                idle_since = idle_since or now
                if now - self.last["reclaim"] > 1:
                    self.last["reclaim"] = now
                    self._reclaim_dead()
                time.sleep(0.05 if now - idle_since < 1 else 0.2)
            else:
                idle_since = None
            if time.monotonic() - self.last["progress"] > settings.RUNNER_PROGRESS_SECONDS:
                self.last["progress"] = time.monotonic()
                self._publish_retrying()
                progress.announce(self.run)

    def _publish_retrying(self):
        key = f"pd:retrying:{self.run_id}"
        try:
            pipe = limits.client().pipeline(transaction=False)
            pipe.hset(key, self.id, self.calls.retrying)
            pipe.expire(key, settings.RUNNER_HEARTBEAT_TTL * 2)
            pipe.execute()
        except Exception:
            log.warning("could not publish the retry count", exc_info=True)

    def _shutdown(self):
        try:
            limits.client().hdel(f"pd:retrying:{self.run_id}", self.id)
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
        self.run.refresh_from_db()
        progress.announce(self.run)

    # claiming

    def _claim(self, n):
        self.claims += 1
        token = f"{self.id}:{self.claims}"
        ids = list(
            Task.objects.filter(run_id=self.run_id, status=Task.PENDING)
            .order_by("-step", "id")
            .values_list("id", flat=True)[:n]
        )
        if not ids:
            return 0
        lease = timezone.now() + timedelta(seconds=settings.RUNNER_LEASE_SECONDS)
        with transaction.atomic():
            Task.objects.filter(id__in=ids, status=Task.PENDING).update(
                status=Task.RUNNING, claim=token, lease_until=lease
            )
        rows = list(
            Task.objects.filter(run_id=self.run_id, claim=token, status=Task.RUNNING).values(
                "id", "step", "variant", "context", "round"
            )
        )
        self._start(rows)
        return len(rows)

    def _start(self, rows):
        """Render the prompts of claimed tasks and hand their calls to the loop."""
        jobs, failed = [], []
        for row in rows:
            try:
                jobs.append(self._job(row))
            except templating.TemplateError as exc:
                failed.append(
                    Result(row["id"], False, [], error=f"the prompt could not be filled in: {exc}")
                )
        if jobs:
            self._prefetch(jobs)
        for job in jobs:
            fut = aio.submit(self.calls.execute(job))
            self.inflight[job.task_id] = fut
            fut.add_done_callback(self._done)
        for r in failed:
            self.results.put(r)

    def _job(self, row):
        step = self.spec.steps[row["step"]]
        ep = self.endpoints[row["step"]]
        ctx = row["context"]
        messages = []
        if step.system:
            messages.append({"role": "system", "content": templating.render(step.system, ctx)})
        messages.append({"role": "user", "content": templating.render(step.prompt, ctx)})
        fmt = str(step.output_format)
        schema = step.output_schema
        if fmt == OutputFormat.JSON_LIST:
            json_schema = {"type": "array"}
        elif fmt == OutputFormat.JSON_OBJECT:
            json_schema = schema or {"type": "object"}
        else:
            json_schema = None
        p = step.params
        request = CompletionRequest(
            model=ep.model,
            messages=messages,
            temperature=p.temperature,
            max_tokens=p.max_tokens,
            top_p=p.top_p,
            json_mode=json_schema is not None,
            json_schema=json_schema,
            timeout=p.timeout or 120.0,
        )
        ident = json.dumps(
            [ep.base_url, ep.model, p.model_dump(), messages, fmt, row["variant"], row["round"]],
            sort_keys=True,
            ensure_ascii=False,
        )
        digest = hashlib.sha256(ident.encode()).hexdigest()[:32]
        return Job(
            row["id"],
            row["step"],
            row["variant"],
            messages,
            request,
            fmt,
            schema,
            f"pd:call:{self.run_id}:{digest}",
            ep.pool,
        )

    def _prefetch(self, jobs):
        """One round trip: replies already paid for (a dead worker's, or an identical call's)."""
        try:
            values = limits.client().mget([_cache_key(j, 0) for j in jobs])
        except Exception:
            log.warning("response cache unavailable", exc_info=True)
            return
        for job, raw in zip(jobs, values, strict=True):
            if raw:
                job.cached = _completion_from_json(raw)

    def _done(self, fut):
        self.results.put(fut)

    # finishing

    def _collect(self, block):
        items = []
        try:
            items.append(
                self.results.get(timeout=settings.RUNNER_FLUSH_SECONDS if block else 0.001)
            )
        except queue.Empty:
            return
        deadline = time.monotonic() + 0.005
        while time.monotonic() < deadline:
            try:
                items.append(self.results.get_nowait())
            except queue.Empty:
                break
        results = []
        for item in items:
            if isinstance(item, Result):
                results.append(item)
                continue
            try:
                res = item.result()
            except Exception as exc:  # a bug or a cancelled call: the task goes back to pending
                log.warning("call failed outside the provider: %r", exc)
                task_id = next((k for k, v in self.inflight.items() if v is item), None)
                if task_id is not None:
                    self.inflight.pop(task_id, None)
                    Task.objects.filter(id=task_id, status=Task.RUNNING).update(
                        status=Task.PENDING, claim="", lease_until=None
                    )
                continue
            results.append(res)
        for res in results:
            self.inflight.pop(res.task_id, None)
        if results:
            self.claims += 1
            free = max(0, self.capacity - len(self.inflight))
            t0 = time.perf_counter()
            claimed = finish(
                self.run, self.spec, results, claim=f"{self.id}:{self.claims}", claim_max=free
            )
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
            Task.objects.filter(id__in=list(self.inflight), status=Task.RUNNING).update(
                lease_until=lease
            )

    def _reclaim_dead(self):
        """Put back tasks whose lease ran out or whose driver is gone."""
        now = timezone.now()
        n = Task.objects.filter(
            run_id=self.run_id, status=Task.RUNNING, lease_until__lt=now
        ).update(status=Task.PENDING, claim="", lease_until=None)
        claims = set(
            Task.objects.filter(run_id=self.run_id, status=Task.RUNNING)
            .values_list("claim", flat=True)
            .distinct()
        )
        dead = {
            c
            for c in claims
            if c and not c.startswith(self.id + ":") and not limits.is_alive(c.split(":")[0])
        }
        if dead:
            n += Task.objects.filter(
                run_id=self.run_id, status=Task.RUNNING, claim__in=dead
            ).update(status=Task.PENDING, claim="", lease_until=None)
        if n:
            log.info("driver %s put %d abandoned tasks of run %s back", self.id, n, self.run_id)

    def _stop_inflight(self):
        """Cancelled or shutting down: save what finishes within a moment, put back the rest."""
        deadline = time.monotonic() + (5 if stopping.is_set() else 2)
        while self.inflight and time.monotonic() < deadline:
            self._collect(block=True)
        for fut in self.inflight.values():
            fut.cancel()
        if self.inflight:
            Task.objects.filter(id__in=list(self.inflight), status=Task.RUNNING).update(
                status=Task.PENDING, claim="", lease_until=None
            )
        self.inflight.clear()

    def _settle(self):
        """Run waiting callbacks whose step is complete; finish the run when all is done."""
        return settle(self.run, self.spec)


async def _in_loop(fn):
    return fn()


# -- writing results (shared by drivers and tests) -------------------------------------------


def _json_param(value):
    return json.dumps(value, ensure_ascii=False)


def finish(run, spec, results, claim=None, claim_max=0):
    """Save finished calls in bulk and make their children (or records, after the last step).

    Up to `claim_max` new children are written already claimed under `claim` (a
    driver's token), so the driver starts them at once without a round trip through
    the pending queue; the returned rows describe them."""
    last = len(spec.steps) - 1
    meta = {
        row["id"]: row
        for row in Task.objects.filter(id__in=[r.task_id for r in results]).values(
            "id", "key", "seq", "context", "variant", "step"
        )
    }
    children, records = [], []
    for res in results:
        row = meta.get(res.task_id)
        if not res.ok or row is None:
            continue
        step = spec.steps[row["step"]]
        if step.callback.type in WAITING_CALLBACKS:
            continue
        out = Output(
            res.task_id,
            row["key"],
            row["seq"],
            row["context"],
            res.parsed,
            res.text,
            row["variant"],
        )
        try:
            made = children_of(step, out)
        except CallbackError as exc:
            res.ok, res.error = False, str(exc)
            continue
        if row["step"] == last:
            records.extend(made)
        else:
            children.extend((row["step"] + 1, c) for c in made)
    now = timezone.now()
    vendor = connection.vendor
    jcast = "::jsonb" if vendor == "postgresql" else ""
    sql = (
        f"UPDATE {Task._meta.db_table} SET status=%s, messages=%s{jcast}, raw_output=%s, parsed=%s{jcast}, "
        f"error=%s, model=%s, attempts=attempts+%s, attempt_log=%s{jcast}, tokens_in=%s, tokens_out=%s, "
        f"latency_ms=%s, cached=%s, finished=%s, lease_until=NULL WHERE id=%s AND status=%s"
    )
    finished_at = connection.ops.adapt_datetimefield_value(now)
    params = [
        (
            Task.DONE if r.ok else Task.FAILED,
            _json_param(r.messages),
            r.text,
            _json_param(r.parsed) if r.ok else "null",
            "" if r.ok else r.error,
            r.model,
            max(1, len([a for a in r.attempts if not a.get("parse")])) if not r.cached else 0,
            _json_param(r.attempts),
            r.tokens_in,
            r.tokens_out,
            r.latency_ms,
            r.cached,
            finished_at,
            r.task_id,
            Task.RUNNING,
        )
        for r in results
        if r.task_id in meta
    ]
    lease = now + timedelta(seconds=settings.RUNNER_LEASE_SECONDS)

    direct_n = min(claim_max, len(children)) if claim else 0
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.executemany(sql, params)
            if children:
                # ON CONFLICT: children are made once, even when a task is finished twice
                # (its lease ran out while it was being saved).
                insert_tasks(
                    cur,
                    run.pk,
                    [
                        (
                            step_index,
                            c,
                            claim if n < direct_n else "",
                            lease if n < direct_n else None,
                        )
                        for n, (step_index, c) in enumerate(children)
                    ],
                    now,
                )
            if records:
                insert_records(cur, run.pk, records, now)
    if not direct_n:
        return []
    return list(
        Task.objects.filter(run_id=run.pk, claim=claim, status=Task.RUNNING).values(
            "id", "step", "variant", "context", "round"
        )
    )


def _jcast():
    return "::jsonb" if connection.vendor == "postgresql" else ""


def insert_tasks(cur, run_id, rows, now):
    """Insert tasks in one statement per batch, skipping keys the run already has.

    `rows` holds (step, Child, claim, lease_until); a task with a claim is written
    already running under that claim."""
    j = _jcast()
    sql = (
        f"INSERT INTO {Task._meta.db_table} (run_id, step, key, seq, parent_id, variant, round, status, "
        "lease_until, claim, context, messages, raw_output, parsed, error, model, attempts, attempt_log, "
        "tokens_in, tokens_out, latency_ms, cached, created, finished) VALUES "
        f"(%s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s{j}, NULL, '', NULL, '', '', 0, '[]'{j}, 0, 0, 0, %s, %s, NULL) "
        "ON CONFLICT (run_id, key) DO NOTHING"
    )
    adapt = connection.ops.adapt_datetimefield_value
    created = adapt(now)
    cur.executemany(
        sql,
        [
            (
                run_id,
                step,
                c.key,
                c.seq,
                c.parent_id,
                c.variant,
                Task.RUNNING if claim else Task.PENDING,
                adapt(lease) if lease else None,
                claim,
                _json_param(c.context),
                False,
                created,
            )
            for step, c, claim, lease in rows
        ],
    )


def insert_records(cur, run_id, children, now):
    j = _jcast()
    sql = (
        f"INSERT INTO {Record._meta.db_table} (run_id, task_id, key, seq, data, edited, review, rating, created) "
        f"VALUES (%s, %s, %s, %s, %s{j}, NULL, %s, NULL, %s) ON CONFLICT (run_id, key) DO NOTHING"
    )
    created = connection.ops.adapt_datetimefield_value(now)
    cur.executemany(
        sql,
        [
            (run_id, c.parent_id, c.key, c.seq, _json_param(c.context), Record.UNREVIEWED, created)
            for c in children
        ],
    )


def settle(run, spec):
    """Make the children of waiting callbacks whose step is complete; finish a run with nothing left.

    Returns True when the run is finished (or no longer running)."""
    open_steps = set(
        Task.objects.filter(run_id=run.pk, status__in=[Task.PENDING, Task.RUNNING])
        .values_list("step", flat=True)
        .distinct()
    )
    aggregated = set(
        Run.objects.filter(pk=run.pk).values_list("aggregated", flat=True).first() or []
    )
    last = len(spec.steps) - 1
    for i, step in enumerate(spec.steps):
        if any(s <= i for s in open_steps):
            return False
        if step.callback.type not in WAITING_CALLBACKS or i in aggregated:
            continue
        outputs = [
            Output(
                t["id"],
                t["key"],
                t["seq"],
                t["context"],
                t["parsed"],
                t["raw_output"],
                t["variant"],
            )
            for t in Task.objects.filter(run_id=run.pk, step=i, status=Task.DONE)
            .order_by("seq")
            .values("id", "key", "seq", "context", "parsed", "raw_output", "variant")
        ]
        try:
            made = gather(step, i, outputs)
            error = ""
        except Exception as exc:  # a Python callback's bug must not kill the driver
            made, error = (
                [],
                f"step {i + 1} ('{step.name}'): the {step.callback.type} callback failed: {exc}",
            )
            log.warning("waiting callback failed in run %s: %s", run.pk, error)
        now = timezone.now()
        with transaction.atomic():
            if i == last:
                Record.objects.bulk_create(
                    [
                        Record(
                            run_id=run.pk,
                            task_id=outputs[-1].task_id if outputs else None,
                            key=c.key,
                            seq=c.seq,
                            data=c.context,
                            created=now,
                        )
                        for c in made
                    ],
                    ignore_conflicts=True,
                )
            else:
                Task.objects.bulk_create(
                    [
                        Task(
                            run_id=run.pk,
                            step=i + 1,
                            key=c.key,
                            seq=c.seq,
                            context=c.context,
                            parent_id=c.parent_id,
                            created=now,
                        )
                        for c in made
                    ],
                    batch_size=500,
                    ignore_conflicts=True,
                )
            run_row = Run.objects.select_for_update().get(pk=run.pk)
            if i not in run_row.aggregated:
                run_row.aggregated = sorted(set(run_row.aggregated) | {i})
                fields = ["aggregated"]
                if error:
                    run_row.error = (run_row.error + "\n" + error).strip()
                    fields.append("error")
                run_row.save(update_fields=fields)
        if made and i != last:
            return False  # new tasks to run
    updated = Run.objects.filter(pk=run.pk, status=Run.RUNNING).update(
        status=Run.COMPLETED, finished=timezone.now()
    )
    run.refresh_from_db()
    if updated:
        progress.announce(run)
        log.info("run %s completed", run.pk)
    return run.status != Run.RUNNING


def orphaned_runs():
    """Runs that should be moving but that no live driver is driving."""
    out = []
    for run_id in Run.objects.filter(status__in=[Run.QUEUED, Run.RUNNING]).values_list(
        "pk", flat=True
    ):
        if not limits.client().exists(f"pd:run-alive:{run_id}"):
            out.append(run_id)
    return out


__all__ = [
    "LaunchError",
    "launch_run",
    "cancel_run",
    "resume_run",
    "retry_failed",
    "Driver",
    "finish",
    "settle",
    "orphaned_runs",
    "StepResult",
    "Child",
]
