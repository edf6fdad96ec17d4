"""One shared HTTP connection pool per event loop, for every provider call.

Calls go out through aiohttp, which keeps thousands of calls in flight far more
cheaply than httpx's own pool. Two handles share one aiohttp session (and so one
pool of up to `MAX_CONNECTIONS` connections) per running loop:

- `get_client()`: an httpx client (`httpx_aiohttp.HttpxAiohttpClient`), for code
  that wants the httpx API;
- `get_session()`: the aiohttp session itself, for the hot path. httpx's request
  and response objects cost about 0.5 ms of CPU per call on top of aiohttp's 0.35.

An aiohttp session belongs to the loop it was made on, hence one per loop, made on
first use. Call `close_clients()` from a loop before it ends (for example at the
end of the coroutine given to `asyncio.run`); clients of loops that ended without
it are dropped the next time any loop asks for one.
"""

import asyncio
import contextlib
import functools
import os
import threading
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:  # aiohttp and httpx are imported on first use: commands that never call
    import aiohttp  # a provider (the CLI among them) start 0.1-0.2 s sooner
    import httpx

MAX_CONNECTIONS = 1000
KEEPALIVE_SECONDS = 30.0
READ_TIMEOUT, CONNECT_TIMEOUT = 120.0, 15.0  # the fallback: providers pass their own

_lock = threading.Lock()
_sessions: dict = {}  # loop -> aiohttp.ClientSession
_clients: dict = {}  # loop -> httpx.AsyncClient
_ssl_context = None


def _limits():
    import httpx

    return httpx.Limits(
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=MAX_CONNECTIONS,
        keepalive_expiry=KEEPALIVE_SECONDS,
    )


@functools.cache
def _shared_client_class():
    """An httpx client speaking through the loop's shared aiohttp session, without cookies
    (LLM APIs need none; parsing every response's cookies is measurable)."""
    import httpx
    from httpx_aiohttp import HttpxAiohttpClient

    class NoCookies(httpx.Cookies):
        def extract_cookies(self, response):
            pass

    class SharedClient(HttpxAiohttpClient):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self._cookies = NoCookies()

    return SharedClient


def _ssl():
    """certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR when set: what httpx would use
    (made here: importing httpx also loads its command line, 0.5 s of a worker's start)."""
    global _ssl_context
    if _ssl_context is None:
        import ssl

        import certifi

        if os.environ.get("SSL_CERT_FILE"):
            _ssl_context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        elif os.environ.get("SSL_CERT_DIR"):
            _ssl_context = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
        else:
            _ssl_context = ssl.create_default_context(cafile=certifi.where())
    return _ssl_context


def warm() -> None:
    """Import the HTTP client and load the CAs ahead of the first call (a worker does it
    while it waits for work, so a run's first call does not wait 0.2 s for them)."""
    import aiohttp  # noqa: F401

    _ssl()
    if settings.LLM_HTTP_CLIENT == "httpx":
        _shared_client_class()


def _new_session() -> "aiohttp.ClientSession":
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=MAX_CONNECTIONS,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_SECONDS,
        ssl=_ssl(),
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=READ_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
        # Not trust_env: it reads the proxy settings again on every request, which
        # costs more than the request itself. Callers use proxy_for() instead.
        trust_env=False,
        auto_decompress=True,
    )


@functools.lru_cache(maxsize=256)
def proxy_for(url: str) -> str | None:
    """The proxy from HTTP(S)_PROXY / NO_PROXY for this URL, read once per URL."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or not parts.hostname:
        return None
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if urllib.request.proxy_bypass(netloc):
        return None
    return proxy


def _abandon(loop) -> None:
    """Forget the pool of a loop that is already closed, dropping its sockets quietly."""
    _clients.pop(loop, None)
    session = _sessions.pop(loop, None)
    if session is None:
        return
    with contextlib.suppress(Exception):
        connector = session._connector
        if connector is not None:
            connector._close()
        session._connector = None  # marks it closed: no "Unclosed client session" warning


def _prune() -> None:
    for loop in [lp for lp in (*_sessions, *_clients) if lp.is_closed()]:
        _abandon(loop)


def get_session() -> "aiohttp.ClientSession":
    """The running loop's shared aiohttp session (made on first use)."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is not None and not session.closed:
        return session
    with _lock:
        session = _sessions.get(loop)
        if session is None or session.closed:
            _prune()
            session = _sessions[loop] = _new_session()
        return session


def get_client() -> "httpx.AsyncClient":
    """The running loop's shared httpx client (made on first use)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is not None and not client.is_closed:
        return client
    with _lock:
        client = _clients.get(loop)
        if client is None or client.is_closed:
            _prune()
            import httpx
            from httpx_aiohttp import AiohttpTransport

            limits = _limits()
            transport = AiohttpTransport(limits=limits, client=get_session)
            client = _clients[loop] = _shared_client_class()(
                limits=limits,
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
                transport=transport,
            )
        return client


async def close_clients() -> None:
    """Close the running loop's client and session; forget those of loops already closed."""
    loop = asyncio.get_running_loop()
    with _lock:
        client = _clients.pop(loop, None)
        session = _sessions.pop(loop, None)
        _prune()
    if client is not None and not client.is_closed:
        await client.aclose()
    if session is not None and not session.closed:
        await session.close()
