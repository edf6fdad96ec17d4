"""Calling a provider with retries: backoff for transient errors, none for permanent ones."""

import asyncio
import inspect
import logging
import random
import time

from .base import Completion, CompletionRequest, Provider, ProviderError

log = logging.getLogger(__name__)


def backoff_delay(retry: int, error: ProviderError | None, base: float, cap: float) -> float:
    """Seconds to wait before retry number `retry` (0 for the first retry)."""
    if error is not None and error.retry_after is not None:
        return max(0.0, min(cap, float(error.retry_after)))
    ceiling = min(cap, base * (2**retry))
    return min(cap, max(base / 2, random.uniform(0, ceiling)))


async def _report(on_attempt, info):
    if on_attempt is None:
        return
    try:
        result = on_attempt(info)
        if inspect.isawaitable(result):
            await result
    except Exception:  # a broken observer must not fail the call
        log.exception("on_attempt callback failed")


def _plural(n):
    return f"{n} attempt" if n == 1 else f"{n} attempts"


async def complete_with_retries(
    provider: Provider,
    request: CompletionRequest,
    *,
    max_retries: int = 5,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    semaphore=None,
    on_attempt=None,
) -> Completion:
    """`provider.complete(request)`, retried up to `max_retries` times on transient errors.

    `semaphore` (any async context manager) is held for each attempt only, never
    while waiting to retry. `on_attempt(info)` (sync or async) hears about every
    attempt: {"n", "ok", "error", "status", "latency_ms"} (and "retry_after" when it failed).
    """
    max_retries = max(0, int(max_retries))
    attempt = 0
    while True:
        attempt += 1
        error = None
        started = time.perf_counter()
        try:
            if semaphore is not None:
                async with semaphore:
                    started = time.perf_counter()
                    completion = await provider.complete(request)
            else:
                completion = await provider.complete(request)
        except ProviderError as exc:
            error = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug or an unmapped failure: report it, then let it through untouched.
            await _report(
                on_attempt,
                {
                    "n": attempt,
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "status": None,
                    "latency_ms": int((time.perf_counter() - started) * 1000),
                },
            )
            raise
        latency_ms = int((time.perf_counter() - started) * 1000)

        if error is None:
            await _report(
                on_attempt,
                {"n": attempt, "ok": True, "error": None, "status": 200, "latency_ms": latency_ms},
            )
            return completion

        await _report(
            on_attempt,
            {
                "n": attempt,
                "ok": False,
                "error": error.message,
                "status": error.status,
                "latency_ms": latency_ms,
                "retry_after": error.retry_after,
            },
        )
        if not error.transient:
            error.attempts = attempt
            raise error
        if attempt > max_retries:
            final = ProviderError(
                f"gave up after {_plural(attempt)}: {error.message}",
                transient=True,
                status=error.status,
                retry_after=error.retry_after,
            )
            final.attempts = attempt
            raise final from error
        await asyncio.sleep(backoff_delay(attempt - 1, error, backoff_base, backoff_max))
