"""One asyncio loop per worker process, in a background thread.

The engine's database work stays synchronous in the Celery thread; the LLM calls,
the response cache and progress announcements run on this loop, which also holds
the one shared HTTP client of the process.
"""

import asyncio
import threading

_lock = threading.Lock()
_loop = None


def loop():
    global _loop
    with _lock:
        if _loop is None or not _loop.is_running():
            new = asyncio.new_event_loop()
            started = threading.Event()

            def _run():
                asyncio.set_event_loop(new)
                new.call_soon(started.set)
                new.run_forever()

            threading.Thread(target=_run, name="runner-aio", daemon=True).start()
            started.wait()
            _loop = new
        return _loop


def submit(coro):
    """Schedule a coroutine on the process loop; returns a concurrent.futures.Future."""
    return asyncio.run_coroutine_threadsafe(coro, loop())


def call_soon(fn, *args):
    loop().call_soon_threadsafe(fn, *args)
