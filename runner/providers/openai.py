"""Any OpenAI-compatible chat completions endpoint.

OpenAI, OpenRouter, vLLM, Ollama's /v1, LM Studio, the llama.cpp server and the
built-in local model all speak it: POST {base}/chat/completions with a bearer key.

Structured output: a step that wants a JSON list or a JSON object with a schema
sends `response_format: {"type": "json_schema", ...}` (vLLM, llama.cpp, LM Studio,
Ollama and OpenAI turn it into a grammar or a constrained decoder); plain JSON
objects send `{"type": "json_object"}`. A server that rejects either with a 400
is asked again without it, and never asked with it again.
"""

import json
import time
from typing import Any

from .base import Completion, CompletionRequest, ProviderError
from .transport import (
    MAX_ERROR_CHARS,
    HTTPProvider,
    _Reply,
    error_message,
    informative,
    json_body,
    json_shape,
    malformed,
    parse_retry_after,
    proxy_for,
    status_error,
    to_int,
)


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


class OpenAICompatible(HTTPProvider):
    """Chat completions over HTTP."""

    kind = "openai"

    def __init__(self, base_url, api_key="", *, client=None, default_model="", **kwargs):
        super().__init__(base_url, api_key, client=client, default_model=default_model, **kwargs)
        self.url = f"{self.base_url}/chat/completions"
        # Flips to False the first time the server rejects `response_format`.
        self.supports_response_format = True
        # Shapes ("array", "object") whose json_schema response_format was rejected.
        self.json_schema_rejected = set()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._headers = headers
        self._proxy = proxy_for(self.url)
        self._tails = {}  # see _tail

    def response_format(self, request: CompletionRequest) -> dict | None:
        """What to send as `response_format` for this request, given what the server took."""
        shape = json_shape(request)
        if shape is None or not self.supports_response_format:
            return None
        schema = request.json_schema
        if (
            shape in ("array", "object")
            and shape not in self.json_schema_rejected
            and (shape == "array" or informative(schema))
        ):
            return {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": False},
            }
        if shape == "array":
            return None  # JSON mode means an object: better nothing than the wrong shape
        return {"type": "json_object"}

    def _payload(self, request: CompletionRequest, model: str, response_format) -> bytes:
        """The request's JSON: {"model", "messages", then the sampling parameters and the
        response_format}. What follows the messages is the same for every call of a step
        with the same schema: it is encoded once (`_tail`), the messages every time."""
        head = {"model": model, "messages": request.messages}
        text = json.dumps(head, ensure_ascii=False)
        tail = self._tail(request, response_format)
        return (text[:-1] + tail + "}").encode() if tail else text.encode()

    def _tail(self, request, response_format) -> str:
        schema = request.json_schema
        key = (
            request.temperature,
            request.max_tokens,
            request.top_p,
            None if response_format is None else response_format["type"],
            id(schema),
        )
        held = self._tails.get(key)
        if held is not None and held[0] is schema:
            return held[1]
        rest: dict[str, Any] = {}
        if request.temperature is not None:
            rest["temperature"] = request.temperature
        if request.max_tokens is not None:
            rest["max_tokens"] = request.max_tokens
        if request.top_p is not None:
            rest["top_p"] = request.top_p
        if response_format is not None:
            rest["response_format"] = response_format
        tail = ", " + json.dumps(rest, ensure_ascii=False)[1:-1] if rest else ""
        if len(self._tails) > 256:
            self._tails.clear()
        self._tails[key] = (schema, tail)  # the schema held: its id is not reused meanwhile
        return tail

    async def complete(self, request: CompletionRequest) -> Completion:
        model = self.model_for(request)
        timeout = request.timeout if request.timeout and request.timeout > 0 else None
        started = time.perf_counter()
        rf = self.response_format(request)
        while True:
            body = self._payload(request, model, rf)
            response = await self.post(self.url, body, self._headers, timeout, self._proxy)
            status = response.status
            if 200 <= status < 300:
                break
            if rf is not None and status in (400, 422) and _mentions_response_format(response):
                # This server does not take this response_format: ask again without it.
                if rf["type"] == "json_schema":
                    self.json_schema_rejected.add(json_shape(request))
                else:
                    self.supports_response_format = False
                rf = self.response_format(request)
                continue
            raise status_error(response)
        latency_ms = int((time.perf_counter() - started) * 1000)
        return self._parse(response, request, latency_ms)

    def _parse(self, response, request, latency_ms) -> Completion:
        body = json_body(response)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            if body.get("error"):
                raise malformed(response, f"no choices; error: {error_message(response)}")
            raise malformed(response, "no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise malformed(response, "no choices[0].message")
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
            raise malformed(response, f"no message content (finish_reason={finish!r})")
        usage = body.get("usage") or {}
        if not isinstance(usage, dict):
            usage = {}
        return Completion(
            text=text,
            model=body.get("model") or request.model or self.default_model,
            tokens_in=to_int(usage.get("prompt_tokens")),
            tokens_out=to_int(usage.get("completion_tokens")),
            latency_ms=latency_ms,
            raw=body,
        )


def _mentions_response_format(response: _Reply) -> bool:
    low = response.text.lower()
    return any(
        word in low for word in ("response_format", "response format", "json_object", "json_schema")
    )


__all__ = ["OpenAICompatible", "_Reply", "error_message", "parse_retry_after"]
