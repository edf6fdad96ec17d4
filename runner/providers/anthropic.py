"""Anthropic's Messages API: POST {base}/v1/messages.

The system prompt goes top level, `max_tokens` is required, tokens come from
`usage.input_tokens` / `usage.output_tokens`. Errors are {"type": "error",
"error": {"type", "message"}}; 529 (overloaded) is transient like any 5xx.

Structured output: the API has no JSON mode, so a step that wants JSON gets one
tool whose input schema is the step's schema, and `tool_choice` forces the model
to call it; the tool call's input is the reply. A list is wrapped in an object
({"items": [...]}) because a tool's input is always an object, and unwrapped.
"""

import json
import time
from typing import Any

from .base import Completion, CompletionRequest, ProviderError
from .transport import (
    MAX_ERROR_CHARS,
    HTTPProvider,
    json_body,
    json_shape,
    malformed,
    proxy_for,
    status_error,
    to_int,
)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # required by the API; every current model allows this many
TOOL_NAME = "output"


def split_messages(messages):
    """(system text, messages) with system prompts lifted out and same-role turns merged."""
    system, out = [], []
    for m in messages:
        role, content = m.get("role", "user"), m.get("content") or ""
        if not isinstance(content, str):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role == "system":
            system.append(content)
            continue
        role = "assistant" if role == "assistant" else "user"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + content
        else:
            out.append({"role": role, "content": content})
    if not out or out[0]["role"] != "user":
        out.insert(0, {"role": "user", "content": "(start)"})
    return "\n\n".join(system), out


def tool_for(request: CompletionRequest):
    """(tool, wrapped) for a request that wants JSON, or (None, False)."""
    shape = json_shape(request)
    if shape is None:
        return None, False
    schema = request.json_schema or {}
    if shape == "array":
        schema = {"type": "object", "properties": {"items": schema}, "required": ["items"]}
    elif shape == "any" or "type" not in schema:
        schema = {**schema, "type": "object"}
    tool = {
        "name": TOOL_NAME,
        "description": "Return the answer as structured data.",
        "input_schema": schema,
    }
    return tool, shape == "array"


class Anthropic(HTTPProvider):
    kind = "anthropic"

    def __init__(self, base_url, api_key="", *, client=None, default_model="", **kwargs):
        super().__init__(
            base_url or "https://api.anthropic.com",
            api_key,
            client=client,
            default_model=default_model,
            **kwargs,
        )
        self.url = self.base_url + (
            "/messages" if self.base_url.endswith("/v1") else "/v1/messages"
        )
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "anthropic-version": API_VERSION,
        }
        if self.api_key:
            self._headers["x-api-key"] = self.api_key
        self._proxy = proxy_for(self.url)

    def _payload(self, request: CompletionRequest, model: str, tool) -> bytes:
        system, messages = split_messages(request.messages)
        payload: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if system:
            payload["system"] = system
        if request.temperature is not None:
            payload["temperature"] = min(1.0, request.temperature)  # Anthropic's range is 0-1
        if request.top_p is not None:
            payload["top_p"] = request.top_p
        if tool is not None:
            payload["tools"] = [tool]
            payload["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        return json.dumps(payload, ensure_ascii=False).encode()

    async def complete(self, request: CompletionRequest) -> Completion:
        model = self.model_for(request)
        timeout = request.timeout if request.timeout and request.timeout > 0 else None
        tool, wrapped = tool_for(request)
        started = time.perf_counter()
        response = await self.post(
            self.url, self._payload(request, model, tool), self._headers, timeout, self._proxy
        )
        if not 200 <= response.status < 300:
            raise status_error(response)
        latency_ms = int((time.perf_counter() - started) * 1000)
        body = json_body(response)
        content = body.get("content")
        if not isinstance(content, list):
            raise malformed(response, "no content")
        stop = body.get("stop_reason")
        if stop == "refusal":
            text = "".join(b.get("text", "") for b in content if isinstance(b, dict))
            raise ProviderError(
                f"the model refused: {text[:MAX_ERROR_CHARS] or 'no reason given'}",
                transient=False,
                status=response.status,
            )
        text = None
        if tool is not None:
            call = next(
                (b for b in content if isinstance(b, dict) and b.get("type") == "tool_use"), None
            )
            if call is not None and isinstance(call.get("input"), dict):
                data = call["input"]
                if wrapped:
                    data = data.get("items", data)
                text = json.dumps(data, ensure_ascii=False)
        if text is None:
            text = "".join(
                b.get("text", "")
                for b in content
                if isinstance(b, dict) and b.get("type") == "text"
            )
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return Completion(
            text=text,
            model=body.get("model") or model,
            tokens_in=to_int(usage.get("input_tokens"))
            + to_int(usage.get("cache_read_input_tokens"))
            + to_int(usage.get("cache_creation_input_tokens")),
            tokens_out=to_int(usage.get("output_tokens")),
            latency_ms=latency_ms,
            raw=body,
        )
