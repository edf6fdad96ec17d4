"""The asyncio side of a driver: one call per task, with everything around it.

For each job (a claimed task's rendered prompt) a `CallRunner` on the process's
loop: reuses a reply already paid for (the run's Redis cache, or an identical call
in flight), waits for the key's rate limit (`limits.RateGate`) and a concurrency
slot, calls the provider with retries, falls back to the step's next model when
one keeps failing, asks again when the reply does not parse, and prices the call.
A key that has failed every call for `RUNNER_PROVIDER_DOWN_SECONDS` fails the
rest at once with the reason, so a run never waits forever.
"""

import asyncio
import collections
import json
import logging
import time
from dataclasses import dataclass, field, replace

import redis.asyncio as aioredis
from django.conf import settings

from runner.providers import (
    Completion,
    CompletionRequest,
    ProviderError,
    build_provider,
    complete_with_retries,
)
from runner.spec.money import price_for, priced_cost
from runner.spec.parsing import ParseError, parse_output

from .limits import RateGate, RateWaitTimeout

log = logging.getLogger("runner.engine")

CACHE_TTL = 7 * 24 * 3600
NO_FALLBACK_STATUSES = (401, 403)  # the key is wrong: every model of the provider fails alike


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
    fallbacks: tuple = ()  # models tried in order after request.model
    tokens: int = 0  # estimated tokens of one attempt, for tokens-per-minute limits


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
    cost: int = 0  # micro-dollars
    trace: list | None = None  # a workflow's sub-calls in order (None: a one-prompt step)
    warning: str = ""  # the workflow stopped at a limit but returned what it had


def cache_key(job, parse_try):
    return f"{job.cache_base}:{parse_try}"


def completion_to_json(c):
    return json.dumps([c.text, c.model, c.tokens_in, c.tokens_out, c.latency_ms, c.requested])


def completion_from_json(raw):
    text, model, tin, tout, ms, *rest = json.loads(raw)
    return Completion(
        text=text,
        model=model,
        tokens_in=tin,
        tokens_out=tout,
        latency_ms=ms,
        requested=rest[0] if rest else "",
    )


class PoolHealth:
    """Whether a provider key answers: failing since when, and with what."""

    __slots__ = ("failing_since", "last_error")

    def __init__(self):
        self.failing_since = None
        self.last_error = ""

    def check(self):
        if self.failing_since is None:
            return
        down_for = time.monotonic() - self.failing_since
        if down_for > settings.RUNNER_PROVIDER_DOWN_SECONDS:
            raise ProviderError(
                f"the provider has failed every call for {down_for:.0f}s; "
                f"last error: {self.last_error}",
                transient=False,
            )


class Capacity:
    """A semaphore whose size changes: the driver's share of a pool's slots right now.

    `resize` follows the share Redis gives (`limits.acquire`); shrinking never stops a
    call already going, it only keeps the next ones waiting."""

    __slots__ = ("limit", "used", "waiters")

    def __init__(self, limit=0):
        self.limit = limit
        self.used = 0
        self.waiters = collections.deque()

    async def acquire(self):
        if not self.waiters and self.used < self.limit:
            self.used += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed over just as the call was cancelled
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self):
        self.used -= 1
        self._wake()

    def resize(self, limit):
        self.limit = limit
        self._wake()

    def _wake(self):
        while self.waiters and self.used < self.limit:
            fut = self.waiters.popleft()
            if fut.done():
                continue
            self.used += 1
            fut.set_result(None)


class Slot:
    """Held around each attempt: the key must be up, then a rate permit, then a slot."""

    __slots__ = ("health", "gate", "semaphore", "tokens")

    def __init__(self, health, gate, semaphore, tokens):
        self.health = health
        self.gate = gate
        self.semaphore = semaphore
        self.tokens = tokens

    async def __aenter__(self):
        if self.health.failing_since is not None:
            self.health.check()
        gate = self.gate
        if gate.limited:
            try:
                await gate.acquire(self.tokens, settings.RUNNER_PROVIDER_DOWN_SECONDS)
            except RateWaitTimeout as exc:
                raise ProviderError(str(exc), transient=False) from None
        else:
            gate.started += 1  # the hot path: no limit, nothing to wait for
        await self.semaphore.acquire()

    async def __aexit__(self, *exc):
        self.semaphore.release()


class CallRunner:
    """Semaphores, rate gates, providers, cache and in-flight dedupe of one driver."""

    def __init__(self, endpoints):
        self.endpoints = {ep.pool: ep for ep in endpoints if ep}
        self.providers = {}
        self.capacity = {}  # pool -> Capacity (this driver's share of the pool)
        self.gates = {}  # pool -> RateGate
        self.health = {}  # pool -> PoolHealth
        self.dead_models = {}  # pool -> models that answered "not found"
        self.out_tokens = {}  # pool -> running mean of reply tokens, for estimates
        self.inflight = {}  # cache key -> asyncio.Future of Completion
        self.redis = None
        self._cache_batch = []  # replies waiting to be written to Redis in one pipeline
        self._cache_writing = False  # a write of the batch is in flight (see _cache_put)
        self.retrying = 0  # calls waiting to try again after a transient error

    def setup(self):
        for pool, ep in self.endpoints.items():
            self.providers[pool] = build_provider(
                ep.kind, ep.base_url, ep.api_key, ep.model, ep.max_reply_bytes
            )
            self.capacity[pool] = Capacity()
            self.gates[pool] = RateGate(ep.rpm, ep.tpm)
            self.health[pool] = PoolHealth()
            self.dead_models[pool] = set()
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL)
        # read once: settings' lazy object costs a few microseconds per attribute
        self.max_retries = settings.RUNNER_MAX_TRANSIENT_RETRIES
        self.backoff_base = settings.RUNNER_BACKOFF_BASE
        self.backoff_max = settings.RUNNER_BACKOFF_MAX
        self.parse_tries = 1 + settings.RUNNER_PARSE_RETRIES

    def resize(self, pool, n):
        self.capacity[pool].resize(n)

    def grant(self, pool, requests, tokens, rps, tps):
        self.gates[pool].grant(requests, tokens, rps, tps)

    def estimate_tokens(self, pool, request, prompt_chars):
        """Tokens an attempt will use: the prompt's, plus the replies' running mean."""
        mean = self.out_tokens.get(pool, 256)
        out = min(request.max_tokens, mean) if request.max_tokens else mean
        return int(prompt_chars // 4 + out)

    async def close(self):
        if self.redis is not None:
            await self.redis.aclose()

    async def _call(self, job, parse_try, attempts):
        key = cache_key(job, parse_try)
        if parse_try == 0 and job.cached is not None:
            return job.cached, True
        if parse_try > 0:
            raw = await self.cache_get(key)
            if raw:
                return completion_from_json(raw), True
        shared = self.inflight.get(key)
        if shared is not None:
            return await asyncio.shield(shared), True
        fut = asyncio.get_running_loop().create_future()
        self.inflight[key] = fut
        try:
            completion = await self._complete(job, attempts)
            # Saved before anything else: a worker that dies now does not pay for this again.
            await self._cache_put(key, completion_to_json(completion))
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

    async def _complete(self, job, attempts):
        """The call, on the step's model and then, while they keep failing, its fallbacks."""
        pool = job.pool
        gate, health, dead = self.gates[pool], self.health[pool], self.dead_models[pool]
        if job.fallbacks:
            models = [job.request.model, *job.fallbacks]
            live = [m for m in models if m not in dead] or models[-1:]
        else:
            live = (job.request.model,)
        waiting = [False]

        def track(info):
            # numbered 1..n across retries, parse re-asks and fallback models alike
            attempts.append({**info, "n": len(attempts) + 1})
            if waiting[0]:
                self.retrying -= 1
            ok = info["ok"]
            waiting[0] = not ok
            if ok:
                health.failing_since = None
            else:
                self.retrying += 1
                status = info.get("status")
                gate.saw(status, info.get("retry_after"))
                if status is None or status == 429 or status >= 500:
                    if health.failing_since is None:
                        health.failing_since = time.monotonic()
                    health.last_error = info["error"]
                    gate.last_error = info["error"]

        slot = Slot(health, gate, self.capacity[pool], job.tokens)
        try:
            for i, model in enumerate(live):
                request = job.request
                if model != request.model:
                    request = replace(request, model=model)
                try:
                    completion = await complete_with_retries(
                        self.providers[pool],
                        request,
                        max_retries=self.max_retries,
                        backoff_base=self.backoff_base,
                        backoff_max=self.backoff_max,
                        semaphore=slot,
                        on_attempt=track,
                    )
                except ProviderError as exc:
                    if exc.status == 404:
                        dead.add(model)
                    if (
                        i == len(live) - 1
                        or exc.status in NO_FALLBACK_STATUSES
                        or (exc.status is None and not exc.transient)  # down, or misconfigured
                    ):
                        raise
                    nxt = live[i + 1]
                    log.info("model %s failed (%s); falling back to %s", model, exc.message, nxt)
                    attempts.append(
                        {
                            "n": len(attempts) + 1,
                            "ok": False,
                            "error": f"{model} failed: {exc.message}; trying {nxt}",
                            "fallback": nxt,
                        }
                    )
                    continue
                completion.requested = model
                used = completion.tokens_in + completion.tokens_out
                gate.settle(job.tokens, used)
                mean = self.out_tokens.get(pool)
                out = completion.tokens_out
                self.out_tokens[pool] = out if mean is None else 0.9 * mean + 0.1 * out
                return completion
        finally:
            if waiting[0]:
                self.retrying -= 1

    async def cache_get(self, key):
        """A reply already paid for, or None (also when Redis is away: the call is made)."""
        try:
            return await self.redis.get(key)
        except Exception as exc:
            log.warning("response cache unavailable: %s", exc)
            return None

    async def _cache_put(self, key, value):
        """Write a reply to the run's cache. One write is in flight at a time: the replies
        that finish meanwhile go together in the next one (one round trip for them all)."""
        done = asyncio.get_running_loop().create_future()
        self._cache_batch.append((key, value, done))
        if not self._cache_writing:
            self._cache_writing = True
            asyncio.get_running_loop().create_task(self._cache_flush())
        await done

    async def _cache_flush(self):
        try:
            while self._cache_batch:
                await asyncio.sleep(0)  # the replies that arrived in the same pass join in
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
        finally:
            self._cache_writing = False

    def _cost(self, job, completion):
        """What a call cost, in micro-dollars, priced by the model asked (else the one that answered)."""
        prices = self.endpoints[job.pool].prices
        if not prices:
            return 0
        model = completion.requested or completion.model
        price = price_for(prices, model) or price_for(prices, completion.model)
        if price is None:
            return 0
        return priced_cost(price, completion.tokens_in, completion.tokens_out)

    async def execute(self, job):
        attempts = []
        last_text, reason, completion = "", "", None
        spent = 0
        for parse_try in range(self.parse_tries):
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
                    cost=spent,
                )
            if not cached:  # a reply from the cache was paid for by the call that made it
                spent += self._cost(job, completion)
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
                cost=spent,
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
            cost=spent,
        )
