"""One shared HTTP client per event loop, for every provider call.

The client speaks through aiohttp (`httpx_aiohttp`), which keeps up with
thousands of calls in flight far better than httpx's own pool. An aiohttp
session belongs to the loop it was first used on, so there is one client per
running loop, made on first use. Call `close_clients()` from a loop before it
ends (e.g. at the end of the coroutine given to `asyncio.run`).
"""

import asyncio
import contextlib
import threading

import httpx
from httpx_aiohttp import HttpxAiohttpClient

MAX_CONNECTIONS = 1000
LIMITS = httpx.Limits(
    max_connections=MAX_CONNECTIONS,
    max_keepalive_connections=MAX_CONNECTIONS,
    keepalive_expiry=30.0,
)
# Providers pass their own timeout per request; this is only the fallback.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=15.0)

_clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
_lock = threading.Lock()


def _new_client() -> httpx.AsyncClient:
    return HttpxAiohttpClient(limits=LIMITS, timeout=DEFAULT_TIMEOUT)


def _abandon(client: httpx.AsyncClient) -> None:
    """Best effort for a client whose loop is already closed: drop its sockets quietly."""
    transport = getattr(client, "_transport", None)
    session = getattr(transport, "client", None)
    connector = getattr(session, "_connector", None)
    with contextlib.suppress(Exception):
        if connector is not None:
            connector._close()
        if session is not None:
            session._connector = None  # marks the session closed: no "unclosed" warning


def get_client() -> httpx.AsyncClient:
    """The shared client of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is not None and not client.is_closed:
        return client
    with _lock:
        client = _clients.get(loop)
        if client is None or client.is_closed:
            # Forget clients of loops that ended without close_clients().
            for dead in [lp for lp in _clients if lp.is_closed()]:
                _abandon(_clients.pop(dead))
            client = _clients[loop] = _new_client()
        return client


async def close_clients() -> None:
    """Close the running loop's client, and forget clients of loops already closed."""
    loop = asyncio.get_running_loop()
    with _lock:
        client = _clients.pop(loop, None)
        for dead in [lp for lp in _clients if lp.is_closed()]:
            _abandon(_clients.pop(dead))
    if client is not None and not client.is_closed:
        await client.aclose()
