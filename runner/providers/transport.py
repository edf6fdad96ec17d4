"""What every HTTP provider shares: posting JSON, reading errors, mapping statuses.

Each provider (OpenAI-compatible, Anthropic, Gemini) builds its own request body
and reads its own reply; how a failure is classified is the same for all of them:

- timeouts, connection errors, 408, 409, 425, 429 and every 5xx (Anthropic's 529
  "overloaded" included) are transient: worth trying again, after `Retry-After`
  when the provider says so;
- every other 4xx is permanent: the key, the model or the request is wrong, and
  the provider's own explanation becomes the message.
"""

import asyncio
import email.utils
import json
import re
from datetime import UTC, datetime
from http import HTTPStatus

from .base import Provider, ProviderError
from .http import get_session, proxy_for

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
MAX_ERROR_CHARS = 500
_DURATION_RE = re.compile(r"^\s*([0-9.]+)\s*s\s*$")


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


MAX_REPLY_BYTES = 4 * 1024 * 1024  # a reply over this fails its call (settings can change it)


def _too_big(limit):
    return ProviderError(
        f"the provider's reply is over {limit / 1024 / 1024:g} MB (the limit); "
        "ask for shorter replies (max tokens) or raise RUNNER_MAX_REPLY_BYTES",
        transient=False,
    )


class _Reply:
    """What came back, whichever client fetched it."""

    __slots__ = ("status", "reason", "headers", "content")

    def __init__(self, status, reason, headers, content):
        self.status = status
        self.reason = reason
        self.headers = headers  # case-insensitive mapping
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self):
        try:
            return json.loads(self.content) if self.content else None
        except ValueError:
            return None


def error_message(response: _Reply) -> str:
    """The provider's own explanation, from the usual error body shapes.

    OpenAI {"error": {"message", "type", "code"}}, Anthropic {"type": "error",
    "error": {"type", "message"}}, Gemini {"error": {"code", "message", "status"}},
    {"error": "..."}, vLLM {"message": ...}, FastAPI {"detail": ...}, or plain text.
    """
    text = response.text
    message = None
    body = response.json()
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]  # Gemini sometimes wraps its error in a list
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = err.get("message") or err.get("code") or err.get("type")
            if not message and err:
                message = json.dumps(err)
        elif isinstance(err, str) and err:
            message = err
        if not message:
            for key in ("message", "detail"):
                if body.get(key):
                    message = body[key]
                    break
    if not isinstance(message, str):
        message = json.dumps(message) if message else text
    return " ".join(message.split())[:MAX_ERROR_CHARS]


def _body_retry_delay(response: _Reply) -> float | None:
    """Gemini's RetryInfo detail: {"error": {"details": [{"retryDelay": "30s"}]}}."""
    body = response.json()
    if isinstance(body, list) and body:
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    details = err.get("details") if isinstance(err, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("retryDelay"), str):
            match = _DURATION_RE.match(detail["retryDelay"])
            if match:
                return float(match.group(1))
    return None


def status_line(response: _Reply) -> str:
    reason = response.reason
    if not reason:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
    return f"{response.status} {reason}".strip()


def status_error(response: _Reply) -> ProviderError:
    """The ProviderError for a non-2xx reply, transient or permanent by status."""
    status = response.status
    detail = error_message(response)
    message = f"{status_line(response)}: {detail}" if detail else status_line(response)
    if status in TRANSIENT_STATUSES or status >= 500:
        retry_after = parse_retry_after(response.headers)
        if retry_after is None and status == 429:
            retry_after = _body_retry_delay(response)
        return ProviderError(message, transient=True, status=status, retry_after=retry_after)
    return ProviderError(message, transient=False, status=status)


def malformed(response: _Reply, why: str) -> ProviderError:
    return ProviderError(
        f"provider returned a malformed response: {why}", transient=True, status=response.status
    )


def json_body(response: _Reply) -> dict:
    """The reply's JSON object, or a transient ProviderError saying what came instead."""
    try:
        body = json.loads(response.content)
    except ValueError:
        snippet = " ".join(response.text[:200].split())
        raise malformed(response, f"not JSON: {snippet!r}") from None
    if not isinstance(body, dict):
        raise malformed(response, f"expected a JSON object, got {type(body).__name__}")
    return body


def to_int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class HTTPProvider(Provider):
    """A provider spoken to with JSON over HTTP.

    With no `client`, calls go through the event loop's shared aiohttp session
    (see `http.py`); pass an `httpx.AsyncClient` as `client` to use it instead.
    """

    def __init__(
        self, base_url, api_key="", *, client=None, default_model="", max_reply_bytes=None
    ):
        self.max_reply_bytes = max_reply_bytes or MAX_REPLY_BYTES
        self.base_url = (base_url or "").rstrip("/")
        self.api_key = api_key or ""
        self.default_model = default_model or ""
        self._client = client

    def __repr__(self):
        return f"{type(self).__name__}({self.base_url!r})"

    def model_for(self, request) -> str:
        model = request.model or self.default_model
        if not model:
            raise ProviderError("no model given for this provider", transient=False)
        return model

    async def post(self, url, body: bytes, headers, timeout, proxy=None) -> _Reply:
        import aiohttp  # imported on the first call (0.1-0.2 s that commands never calling
        import httpx  # a provider, the CLI among them, do not pay at start-up)

        try:
            if self._client is None:
                return await self._post_aiohttp(url, body, headers, timeout, proxy)
            return await self._post_httpx(url, body, headers, timeout)
        except (
            httpx.UnsupportedProtocol,
            httpx.InvalidURL,
            aiohttp.InvalidURL,
            aiohttp.NonHttpUrlClientError,
        ) as exc:
            raise ProviderError(f"bad provider URL {url!r}: {exc}", transient=False) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise ProviderError(
                f"request timed out after {timeout or 0:g}s", transient=True
            ) from exc
        except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise ProviderError(f"connection error: {detail}", transient=True) from exc

    async def _post_aiohttp(self, url, body, headers, timeout, proxy) -> _Reply:
        import aiohttp

        session = get_session()
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            proxy=proxy,
        ) as resp:
            limit = self.max_reply_bytes
            if (resp.content_length or 0) > limit:
                raise _too_big(limit)
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise _too_big(limit)
                chunks.append(chunk)
            return _Reply(resp.status, resp.reason, resp.headers, b"".join(chunks))

    async def _post_httpx(self, url, body, headers, timeout) -> _Reply:
        import httpx

        # httpx's timeout is per phase (and per read); the outer one bounds the
        # whole call, so a server that trickles bytes cannot stall it.
        async with asyncio.timeout(timeout):
            resp = await self._client.post(
                url, content=body, headers=headers, timeout=httpx.Timeout(timeout)
            )
        if len(resp.content) > self.max_reply_bytes:
            raise _too_big(self.max_reply_bytes)
        return _Reply(resp.status_code, resp.reason_phrase, resp.headers, resp.content)


__all__ = [
    "HTTPProvider",
    "MAX_ERROR_CHARS",
    "TRANSIENT_STATUSES",
    "_Reply",
    "error_message",
    "informative",
    "json_body",
    "json_shape",
    "malformed",
    "parse_retry_after",
    "proxy_for",
    "status_error",
    "status_line",
    "to_int",
]


def json_shape(request) -> str | None:
    """What JSON a request wants back: "array", "object", "any", or None for text."""
    if not request.json_mode:
        return None
    schema = request.json_schema or {}
    kind = schema.get("type")
    if kind == "array":
        return "array"
    if kind == "object" or "properties" in schema:
        return "object"
    return "any"


def informative(schema) -> bool:
    """True when a schema says more than "some JSON object"."""
    if not isinstance(schema, dict):
        return False
    return any(k not in ("type", "title", "description", "$schema") for k in schema)
