"""A real HTTP fake of Anthropic's Messages API (POST /v1/messages).

    with FakeAnthropic(api_key="sk-ant-test") as fake:
        fake.url            # http://127.0.0.1:PORT (the provider adds /v1/messages)
        fake.configure(fail_status=529, fail_first_n=1)
        fake.stats()

Checks what the real API checks: `x-api-key`, `anthropic-version`, a model,
`max_tokens`, messages that start with a user turn and alternate, no "system" role
inside `messages`. Errors come as {"type": "error", "error": {"type", "message"}};
529 is `overloaded_error`. A forced tool call (`tool_choice: {"type": "tool"}`)
is answered with a `tool_use` block whose input fits the tool's schema (a list is
put under the schema's only array property). Replies come from the last user
message, as in the OpenAI fake; the behaviour settings are the OpenAI fake's.
"""

import json
import time

from aiohttp import web

from .openai_server import (
    FakeOpenAI,
    _json_response,
    _loads,
    _words,
    arrived,
    last_user_text,
    make_reply,
    misbehave,
)

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _error(status, message, retry_after=None):
    headers = {"retry-after": str(max(1, round(retry_after)))} if retry_after else None
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return _json_response(
        {"type": "error", "error": {"type": kind, "message": message}}, status, headers
    )


def _problem(body, headers):
    """What the real API would reject in a well-formed JSON body, or None."""
    if headers.get("anthropic-version") is None:
        return "anthropic-version: header is required"
    if not body.get("model"):
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    for i, m in enumerate(messages):
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i == 0 and m["role"] != "user":
            return "messages: first message must use the 'user' role"
        if i and messages[i - 1]["role"] == m["role"]:
            return "messages: roles must alternate between 'user' and 'assistant'"
    if "system" in body and not isinstance(body["system"], str | list):
        return "system: Input should be a valid string"
    return None


def _tool_input(tool, text):
    """The forced tool's input: the reply put into the tool's schema."""
    try:
        data = json.loads(text)
    except ValueError:
        data = {"answer": text}
    props = (tool.get("input_schema") or {}).get("properties") or {}
    arrays = [k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "array"]
    if isinstance(data, list):
        return {arrays[0] if arrays else "items": data}
    return data


def make_anthropic_app(state):
    async def messages(request: web.Request):
        arrived(state)
        state.total += 1
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        second = int(time.time())
        state.per_second[second] = state.per_second.get(second, 0) + 1
        status = 500
        try:
            response = await answer(request)
            status = response.status
            return response
        finally:
            state.in_flight -= 1
            state.statuses[status] = state.statuses.get(status, 0) + 1

    async def answer(request):
        try:
            body = _loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError
        except (ValueError, TypeError):
            return _error(400, "There was an issue with the format or content of your request.")
        prompt = last_user_text(body.get("messages"))
        state.recent.append(
            {
                "prompt": prompt,
                "model": body.get("model"),
                "x-api-key": request.headers.get("x-api-key"),
                "anthropic-version": request.headers.get("anthropic-version"),
                "system": body.get("system"),
                "max_tokens": body.get("max_tokens"),
                "temperature": body.get("temperature"),
                "tools": body.get("tools"),
                "tool_choice": body.get("tool_choice"),
                "messages": body.get("messages"),
            }
        )
        authorized = state.api_key is None or request.headers.get("x-api-key") == state.api_key
        problem = _problem(body, request.headers) if authorized else None
        if problem:
            state.per_prompt[prompt] = state.per_prompt.get(prompt, 0) + 1
            return _error(400, problem)
        failure = await misbehave(state, prompt, body["model"], authorized)
        if failure:
            return _error(*failure)
        tool = None
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            tool = next((t for t in body.get("tools") or [] if t["name"] == choice["name"]), None)
        props = ((tool or {}).get("input_schema") or {}).get("properties") or {}
        text = make_reply(
            prompt,
            json_object=tool is not None,
            json_list=any(isinstance(v, dict) and v.get("type") == "array" for v in props.values()),
            prose=bool(state.config["prose"]),
        )
        if tool is not None:
            block = {
                "type": "tool_use",
                "id": "toolu_fake",
                "name": tool["name"],
                "input": _tool_input(tool, text),
            }
            stop, out_tokens = "tool_use", _words(text)
        else:
            block = {"type": "text", "text": text}
            stop, out_tokens = "end_turn", _words(text)
        in_tokens = _words(body.get("system") or "") + sum(
            _words(m["content"]) for m in body["messages"] if isinstance(m["content"], str)
        )
        state.next_id += 1
        return _json_response(
            {
                "id": f"msg_fake{state.next_id}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [block],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens},
            }
        )

    async def admin_stats(request):
        return _json_response(state.stats())

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/_admin/stats", admin_stats)
    return app


class FakeAnthropic(FakeOpenAI):
    app_factory = staticmethod(make_anthropic_app)
    api_path = ""
