"""A real HTTP fake of Gemini's generateContent (POST /v1beta/models/{model}:generateContent).

    with FakeGemini(api_key="AIza-test") as fake:
        fake.url            # http://127.0.0.1:PORT (the provider adds /v1beta)
        fake.configure(rate_limit_rps=2)
        fake.stats()

Takes the key from `x-goog-api-key` or `?key=`; a wrong key is a 400
INVALID_ARGUMENT ("API key not valid"), as Gemini answers. Errors come as
{"error": {"code", "message", "status"}}; a 429 is RESOURCE_EXHAUSTED with a
RetryInfo detail (`retryDelay`) and no Retry-After header. With
`responseMimeType: application/json` the reply is JSON: a list when the
`responseSchema` is an ARRAY (or the prompt asks for a list), else an object.
The behaviour settings are the OpenAI fake's; `block_for` (substrings) answers
matching prompts with a SAFETY block and no candidates.
"""

import math
import time

from aiohttp import web

from .openai_server import (
    FakeOpenAI,
    _json_response,
    _listify,
    _loads,
    _matches,
    _words,
    arrived,
    make_reply,
    misbehave,
)

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _error(status, message, retry_after=None):
    error = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if retry_after is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{max(1, math.ceil(retry_after))}s",
            }
        ]
    return _json_response({"error": error}, status)


def _text_of(contents):
    """The text of the last user turn."""
    for turn in reversed(contents if isinstance(contents, list) else []):
        if isinstance(turn, dict) and turn.get("role", "user") == "user":
            return "".join(p.get("text", "") for p in turn.get("parts") or [])
    return ""


def make_gemini_app(state):
    async def generate(request: web.Request):
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
        target = request.match_info["target"]
        if not target.endswith(":generateContent"):
            return _error(404, f"Method not found: {target}")
        model = target.removesuffix(":generateContent")
        try:
            body = _loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError
        except (ValueError, TypeError):
            return _error(400, "Invalid JSON payload received.")
        contents = body.get("contents")
        prompt = _text_of(contents)
        config = body.get("generationConfig") or {}
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        state.recent.append(
            {
                "prompt": prompt,
                "model": model,
                "key": key,
                "key_in_url": "key" in request.query,
                "systemInstruction": body.get("systemInstruction"),
                "generationConfig": config,
                "contents": contents,
            }
        )
        cfg = state.config
        if state.api_key is not None and key != state.api_key:
            state.per_prompt[prompt] = state.per_prompt.get(prompt, 0) + 1
            return _error(400, "API key not valid. Please pass a valid API key.")
        if not isinstance(contents, list) or not contents:
            state.per_prompt[prompt] = state.per_prompt.get(prompt, 0) + 1
            return _error(400, "* GenerateContentRequest.contents: contents is not specified")
        if cfg["models"] is not None and model not in cfg["models"]:
            state.per_prompt[prompt] = state.per_prompt.get(prompt, 0) + 1
            return _error(
                404,
                f"models/{model} is not found for API version v1beta, or is not supported "
                "for generateContent.",
            )
        failure = await misbehave(state, prompt, model, True)
        if failure:
            return _error(*failure)
        system = (body.get("systemInstruction") or {}).get("parts") or []
        in_tokens = sum(
            _words(p.get("text", ""))
            for parts in [system, *(turn.get("parts") or [] for turn in contents)]
            for p in parts
        )
        usage = {"promptTokenCount": in_tokens}
        if _matches(prompt, _listify(cfg.get("block_for"))):
            return _json_response(
                {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage}
            )
        wants_json = config.get("responseMimeType") == "application/json"
        schema = config.get("responseSchema") or {}
        text = make_reply(
            prompt,
            json_object=wants_json,
            json_list=str(schema.get("type", "")).upper() == "ARRAY",
            prose=bool(cfg["prose"]) and not wants_json,
        )
        usage["candidatesTokenCount"] = _words(text)
        usage["totalTokenCount"] = in_tokens + usage["candidatesTokenCount"]
        return _json_response(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": model,
            }
        )

    async def admin_stats(request):
        return _json_response(state.stats())

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1beta/models/{target}", generate)
    app.router.add_get("/_admin/stats", admin_stats)
    return app


class FakeGemini(FakeOpenAI):
    app_factory = staticmethod(make_gemini_app)
    api_path = ""
