"""Google's Gemini API: POST {base}/v1beta/models/{model}:generateContent.

The key goes in the `x-goog-api-key` header (not the URL, so it stays out of
logs); messages become `contents` of `parts`, system prompts `systemInstruction`;
tokens come from `usageMetadata.promptTokenCount` / `candidatesTokenCount`.
Errors are {"error": {"code", "message", "status"}}; a 429 may carry its wait in
a RetryInfo detail (`retryDelay: "30s"`), used when no Retry-After header is sent.

Structured output: `responseMimeType: application/json`, with `responseSchema`
(Gemini's OpenAPI subset, converted from the step's JSON schema) when the schema
says something Gemini can express.
"""

import json
import time
import urllib.parse
from typing import Any

from .base import Completion, CompletionRequest, ProviderError
from .transport import (
    HTTPProvider,
    json_body,
    json_shape,
    malformed,
    proxy_for,
    status_error,
    to_int,
)

_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_KEEP = ("description", "format", "enum", "minItems", "maxItems", "minimum", "maximum")
BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"}


def gemini_schema(schema) -> dict | None:
    """Gemini's `responseSchema` for a JSON schema, or None when it cannot say it."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    nullable = False
    if isinstance(kind, list):
        nullable = "null" in kind
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None and "properties" in schema:
        kind = "object"
    if kind not in _TYPES:
        return None
    out: dict[str, Any] = {"type": kind.upper()}
    if nullable:
        out["nullable"] = True
    for key in _KEEP:
        if key in schema:
            out[key] = schema[key]
    if kind == "array":
        items = gemini_schema(schema.get("items"))
        if items is None:
            return None  # Gemini needs to know what the items are
        out["items"] = items
    elif kind == "object":
        props = {}
        for name, sub in (schema.get("properties") or {}).items():
            converted = gemini_schema(sub)
            if converted is None:
                return None
            props[name] = converted
        if not props:
            return None  # an OBJECT needs at least one property
        out["properties"] = props
        required = [r for r in schema.get("required") or [] if r in props]
        if required:
            out["required"] = required
        out["propertyOrdering"] = list(props)
    return out


def to_contents(messages):
    """(systemInstruction or None, contents) from chat messages."""
    system, contents = [], []
    for m in messages:
        role, text = m.get("role", "user"), m.get("content") or ""
        if not isinstance(text, str):
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        if role == "system":
            system.append({"text": text})
            continue
        role = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].append({"text": text})
        else:
            contents.append({"role": role, "parts": [{"text": text}]})
    return ({"parts": system} if system else None), contents


class Gemini(HTTPProvider):
    kind = "gemini"

    def __init__(self, base_url, api_key="", *, client=None, default_model="", **kwargs):
        base = (base_url or "https://generativelanguage.googleapis.com").rstrip("/")
        if not base.endswith(("/v1beta", "/v1", "/v1alpha")):
            base += "/v1beta"
        super().__init__(base, api_key, client=client, default_model=default_model, **kwargs)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            self._headers["x-goog-api-key"] = self.api_key
        self._proxy = proxy_for(self.base_url + "/")

    def url_for(self, model: str) -> str:
        model = model.removeprefix("models/")
        return f"{self.base_url}/models/{urllib.parse.quote(model, safe='.-_')}:generateContent"

    def _payload(self, request: CompletionRequest) -> bytes:
        system, contents = to_contents(request.messages)
        payload: dict[str, Any] = {"contents": contents}
        if system:
            payload["systemInstruction"] = system
        config: dict[str, Any] = {}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.max_tokens is not None:
            config["maxOutputTokens"] = request.max_tokens
        if json_shape(request) is not None:
            config["responseMimeType"] = "application/json"
            schema = gemini_schema(request.json_schema)
            if schema is not None:
                config["responseSchema"] = schema
        if config:
            payload["generationConfig"] = config
        return json.dumps(payload, ensure_ascii=False).encode()

    async def complete(self, request: CompletionRequest) -> Completion:
        model = self.model_for(request)
        timeout = request.timeout if request.timeout and request.timeout > 0 else None
        started = time.perf_counter()
        response = await self.post(
            self.url_for(model), self._payload(request), self._headers, timeout, self._proxy
        )
        if not 200 <= response.status < 300:
            raise status_error(response)
        latency_ms = int((time.perf_counter() - started) * 1000)
        body = json_body(response)
        candidates = body.get("candidates")
        feedback = (
            body.get("promptFeedback") if isinstance(body.get("promptFeedback"), dict) else {}
        )
        if not isinstance(candidates, list) or not candidates:
            if feedback.get("blockReason"):
                raise ProviderError(
                    f"the prompt was blocked ({feedback['blockReason']})",
                    transient=False,
                    status=response.status,
                )
            raise malformed(response, "no candidates")
        first = candidates[0] if isinstance(candidates[0], dict) else {}
        parts = (first.get("content") or {}).get("parts") or []
        texts = [
            p["text"]
            for p in parts
            if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
        ]
        finish = first.get("finishReason")
        if not texts:
            if finish in BLOCKED:
                raise ProviderError(
                    f"the reply was blocked ({finish})", transient=False, status=response.status
                )
            raise malformed(response, f"no text in the reply (finishReason={finish!r})")
        usage = body.get("usageMetadata") if isinstance(body.get("usageMetadata"), dict) else {}
        return Completion(
            text="".join(texts),
            model=body.get("modelVersion") or model.removeprefix("models/"),
            tokens_in=to_int(usage.get("promptTokenCount")),
            tokens_out=to_int(usage.get("candidatesTokenCount"))
            + to_int(usage.get("thoughtsTokenCount")),
            latency_ms=latency_ms,
            raw=body,
        )
