"""Any OpenAI-compatible chat completions endpoint (OpenAI, OpenRouter, vLLM, Ollama, ...)."""

import asyncio
import email.utils
import json
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import aiohttp
import httpx

from .base import Completion, CompletionRequest, Provider, ProviderError
from .http import get_session, proxy_for

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
MAX_ERROR_CHARS = 500


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


def error_message(response: _Reply) -> str:
    """The provider's own explanation, from the usual error body shapes."""
    text = response.text
    message = None
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
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


def _status_line(response: _Reply) -> str:
    reason = response.reason
    if not reason:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
    return f"{response.status} {reason}".strip()


def _message_text(content) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        parts = [
            p.get("text", "") if isinstance(p, dict) else str(p)
            for p in content
            if not isinstance(p, dict) or p.get("type", "text") in ("text", "output_text")
        ]
        return "".join(parts)
    return None


class OpenAICompatible(Provider):
    """Chat completions over HTTP.

    With no `client`, calls go through the event loop's shared aiohttp session
    (see `http.py`); pass an `httpx.AsyncClient` as `client` to use it instead.
    """

    kind = "openai"

    def __init__(self, base_url, api_key="", *, client=None, default_model=""):
        self.base_url = (base_url or "").rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.api_key = api_key or ""
        self.default_model = default_model or ""
        self._client = client
        # Flips to False the first time the server rejects `response_format`.
        self.supports_response_format = True
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._headers = headers
        self._proxy = proxy_for(self.url)

    def __repr__(self):
        return f"OpenAICompatible({self.base_url!r})"

    def _wants_json_object(self, request: CompletionRequest) -> bool:
        if not request.json_mode or not self.supports_response_format:
            return False
        schema = request.json_schema
        if not schema:
            return True
        return schema.get("type") == "object" or ("type" not in schema and "properties" in schema)

    def _payload(self, request: CompletionRequest, model: str, json_object: bool) -> bytes:
        payload: dict[str, Any] = {"model": model, "messages": request.messages}
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if json_object:
            payload["response_format"] = {"type": "json_object"}
        return json.dumps(payload, ensure_ascii=False).encode()

    async def _post(self, body: bytes, timeout: float) -> _Reply:
        try:
            if self._client is None:
                return await self._post_aiohttp(body, timeout)
            return await self._post_httpx(body, timeout)
        except (
            httpx.UnsupportedProtocol,
            httpx.InvalidURL,
            aiohttp.InvalidURL,
            aiohttp.NonHttpUrlClientError,
        ) as exc:
            raise ProviderError(f"bad provider URL {self.url!r}: {exc}", transient=False) from exc
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise ProviderError(
                f"request timed out after {timeout or 0:g}s", transient=True
            ) from exc
        except (httpx.HTTPError, aiohttp.ClientError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise ProviderError(f"connection error: {detail}", transient=True) from exc

    async def _post_aiohttp(self, body: bytes, timeout: float) -> _Reply:
        session = get_session()
        async with session.post(
            self.url,
            data=body,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
            proxy=self._proxy,
        ) as resp:
            content = await resp.read()
            return _Reply(resp.status, resp.reason, resp.headers, content)

    async def _post_httpx(self, body: bytes, timeout: float) -> _Reply:
        # httpx's timeout is per phase (and per read); the outer one bounds the
        # whole call, so a server that trickles bytes cannot stall it.
        async with asyncio.timeout(timeout):
            resp = await self._client.post(
                self.url, content=body, headers=self._headers, timeout=httpx.Timeout(timeout)
            )
        return _Reply(resp.status_code, resp.reason_phrase, resp.headers, resp.content)

    async def complete(self, request: CompletionRequest) -> Completion:
        model = request.model or self.default_model
        if not model:
            raise ProviderError("no model given for this provider", transient=False)
        timeout = request.timeout if request.timeout and request.timeout > 0 else None
        started = time.perf_counter()
        json_object = self._wants_json_object(request)
        while True:
            response = await self._post(self._payload(request, model, json_object), timeout)
            status = response.status
            if 200 <= status < 300:
                break
            if json_object and status in (400, 422) and _mentions_response_format(response.text):
                # This server does not do JSON mode; ask again without it, and never again.
                self.supports_response_format = False
                json_object = False
                continue
            raise self._status_error(response)
        latency_ms = int((time.perf_counter() - started) * 1000)
        return self._parse(response, request, latency_ms)

    def _status_error(self, response: _Reply) -> ProviderError:
        status = response.status
        detail = error_message(response)
        message = f"{_status_line(response)}: {detail}" if detail else _status_line(response)
        if status in TRANSIENT_STATUSES or status >= 500:
            return ProviderError(
                message,
                transient=True,
                status=status,
                retry_after=parse_retry_after(response.headers),
            )
        return ProviderError(message, transient=False, status=status)

    def _parse(self, response, request, latency_ms) -> Completion:
        def malformed(why):
            return ProviderError(
                f"provider returned a malformed response: {why}",
                transient=True,
                status=response.status,
            )

        try:
            body = json.loads(response.content)
        except ValueError:
            snippet = " ".join(response.text[:200].split())
            raise malformed(f"not JSON: {snippet!r}") from None
        if not isinstance(body, dict):
            raise malformed(f"expected a JSON object, got {type(body).__name__}")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            if body.get("error"):
                raise malformed(f"no choices; error: {error_message(response)}")
            raise malformed("no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise malformed("no choices[0].message")
        text = _message_text(message.get("content"))
        if text is None:
            refusal = message.get("refusal")
            if refusal:
                raise ProviderError(
                    f"the model refused: {str(refusal)[:MAX_ERROR_CHARS]}",
                    transient=False,
                    status=response.status,
                )
            finish = choices[0].get("finish_reason")
            raise malformed(f"no message content (finish_reason={finish!r})")
        usage = body.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        return Completion(
            text=text,
            model=body.get("model") or request.model or self.default_model,
            tokens_in=_int(usage.get("prompt_tokens")),
            tokens_out=_int(usage.get("completion_tokens")),
            latency_ms=latency_ms,
            raw=body,
        )


def _mentions_response_format(text: str) -> bool:
    low = text.lower()
    return "response_format" in low or "response format" in low or "json_object" in low


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
