"""A real HTTP fake of the OpenAI chat completions API, for tests and the benchmark.

In-process (its own thread and event loop)::

    with FakeOpenAI(latency=0.05) as fake:
        fake.url             # http://127.0.0.1:PORT/v1
        fake.configure(fail_status=429, fail_first_n=1, retry_after=0.1)
        fake.stats()         # same JSON as GET /_admin/stats

As a subprocess::

    python -m tests.fakes.openai_server --port 8001 --latency 0.2
    # prints "READY http://127.0.0.1:8001/v1" once listening

Endpoints: POST /v1/chat/completions, GET /v1/models, POST /_admin/config (a JSON
object of behaviour settings; it replaces the previous ones, keys left out fall
back to the settings the server was started with), GET /_admin/stats,
POST /_admin/reset (clears stats and counters, restores the start-up settings).

Replies are made from the last user message so pipelines work unchanged: asked
for a "list" / "JSON array" it answers a JSON list of N strings (N from "5" or
"five" in the prompt, else 3); asked for items "separated by a comma" (or "by a
newline") it answers that many plain-text items joined so, not JSON; asked for JSON
it answers {"answer": ...}; asked to write a question it answers "What is ...?";
otherwise "Answer: <echo>".

With `realistic` the replies are the size a chat model's would be, and usage is
counted the way a real tokenizer roughly does (OpenAI's rule of thumb: 100 tokens
for 75 words, plus a few tokens of framing per message): a list item is a phrase
of 6 to 12 words (a question of 10 to 18), a question 12 to 20 words, any other
text a paragraph of 4 to 8 sentences of 14 to 24 words. It also counts a list the
way a model reads the prompt: "one question for each subtopic" after "subtopics:
a, b, c" makes three; words "two" to "twenty" and digits give the number asked.

Behaviour settings (constructor keywords, --config JSON, or POST /_admin/config):
  latency                seconds to wait before answering
  prose                  wrap JSON answers in chatty prose and a ```json fence
  never_json_for         substrings: matching prompts get prose with no JSON at all
  fail_status            status for the first `fail_first_n` requests of each prompt
  fail_first_n           (default status 500)
  retry_after            Retry-After seconds sent with fail_status answers
  fail_for               {substring: status}: matching prompts always fail so
  error_body             "openai" ({"error": {"message", "type", "code"}}),
                         "string" ({"error": "..."}) or "text" (plain text)
  error_message          overrides the message of injected failures
  rate_limit_rps         429 (with Retry-After) beyond that many answers a second
  hang_for               substrings: matching prompts never answer (1 hour)
  malformed_for          substrings: matching prompts get a 200 that is not JSON
  refuse_for             substrings: matching prompts get content null + refusal
  reject_response_format 400 whenever `response_format` is sent
  reject_json_schema     400 whenever `response_format` is {"type": "json_schema", ...}
  models                 list of model ids accepted (others: 404); None accepts any
  fail_models            {model: status}: requests for that model always fail so
  realistic              replies and token usage of a real chat model's size (above)
  huge_reply_for         {substring: n}: matching prompts get a reply of n characters
  fail_rate              this share of all requests fail at random (no Retry-After),
  fail_rate_statuses     with a status picked from this list (default [500, 429])
  pool_for               {substring: [replies]}: matching prompts get one reply of the pool,
                         picked by the prompt's hash (so duplicates are certain)
  follow_schema          answer a `response_format` json_schema with an object that fits
                         it (`schema_value`: numbers and enum values picked by hash)

Stats also give `max_rps`: the most requests that arrived within any one second
(a sliding window), so a test can check the rate a client kept to.

The Anthropic and Gemini fakes (`anthropic_server.py`, `gemini_server.py`) reuse
this module's state, replies and server thread with their own protocol; the
shared behaviour (keys, models, rate limit, latency, injected failures) is in
`misbehave()`.
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import signal
import socket
import sys
import threading
import time
from collections import deque

from aiohttp import web

try:  # faster when present; the fake works without it
    import ujson as _fastjson

    def _dumps(obj) -> str:
        return _fastjson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False)

    _loads = _fastjson.loads
except ImportError:  # pragma: no cover
    _dumps = json.dumps
    _loads = json.loads

DEFAULTS = {
    "latency": 0.0,
    "prose": False,
    "never_json_for": [],
    "fail_status": None,
    "fail_first_n": 0,
    "retry_after": None,
    "fail_for": {},
    "error_body": "openai",
    "error_message": None,
    "rate_limit_rps": None,
    "hang_for": [],
    "malformed_for": [],
    "refuse_for": [],
    "reject_response_format": False,
    "reject_json_schema": False,
    "models": None,
    "fail_models": {},
    "block_for": [],  # Gemini fake: prompts answered with a SAFETY block
    "realistic": False,
    "huge_reply_for": {},  # {substring: characters}: matching prompts get a reply that long
    "fail_rate": 0.0,  # this share of requests, at random, fail with one of fail_rate_statuses
    "fail_rate_statuses": [500, 429],
    "pool_for": {},
    "follow_schema": False,
}

HANG_SECONDS = 3600.0
RECENT = 50

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20,
}  # fmt: skip
_NUMBER_RE = re.compile(r"\b(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")\b", re.I)
_LIST_RE = re.compile(r"\blist\b|json\s+array", re.I)
_JSON_RE = re.compile(r"\bjson\b", re.I)
_SEPARATED_RE = re.compile(r"\bseparated by (?:a |one )?(comma|newline|new line|line break)", re.I)
_TOPIC_RE = re.compile(r".*\b(?:about|regarding|on|for)\s+([^.?!]+)", re.I)
_TOPIC_TAIL_RE = re.compile(r"[\s,;:]+(?:as|in|with|using|formatted)\b.*\bjson\b.*$", re.I)
_STATUS_TEXT = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", "timeout"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}


def _listify(value):
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _matches(prompt, substrings):
    return any(s and s in prompt for s in substrings)


def _words(text):
    return len(text.split())


def last_user_text(messages):
    """The text of the last user message (content may be a string or a list of parts)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return ""
    return ""


def _count(prompt):
    match = _NUMBER_RE.search(prompt)
    if not match:
        return 3
    word = match.group(1).lower()
    n = int(word) if word.isdigit() else _NUMBER_WORDS[word]
    return min(n, 100) if n > 0 else 3


def _topic(prompt):
    flat = " ".join(prompt.split())
    match = _TOPIC_RE.match(flat)
    text = match.group(1) if match else " ".join(flat.split()[:6])
    text = _TOPIC_TAIL_RE.sub("", text)
    text = text.strip(" :;,\"'`").translate(str.maketrans("", "", '[]{}`"'))
    if len(text) > 60:
        text = text[:60].rsplit(" ", 1)[0]
    return text or "the topic"


# -- realistic replies ----------------------------------------------------------------

_VOCABULARY = (
    "energy systems design history people cities water light heat growth practice "
    "research method change balance value effect source power cost safety process "
    "model future market impact study storage material nature signal pattern field "
    "common modern early careful simple local global important useful typical"
).split()
_GLUE = "the of and to in that is for with as on by from how why which can".split()
_EACH_RE = re.compile(r"\b(?:for|per|to|about|from|of|on)\s+each\b|\beach\s+of\b", re.I)
_LABELLED_RE = re.compile(r"^\s*(?:topic|subject|instruction|question)\s*:\s*(.+)$", re.I | re.M)
_NOT_TOPIC = set(_NUMBER_WORDS) | {
    "list", "lists", "json", "array", "question", "questions", "answer", "answers", "each",
}  # fmt: skip
_WORDS_PER_TOKEN = 0.75  # OpenAI: "100 tokens ~= 75 words"
_MESSAGE_TOKENS, _REPLY_PRIMING = 4, 3  # framing a chat API counts per message and per reply


def realistic_tokens(text):
    return math.ceil(_words(text) / _WORDS_PER_TOKEN) if text else 0


def _wordstream(seed):
    """Deterministic English-looking words for a prompt (no digits, commas or list words)."""
    rng = random.Random(hashlib.blake2s(seed.encode(), digest_size=8).digest())
    while True:
        yield rng.choice(_GLUE if rng.random() < 0.35 else _VOCABULARY)


def _sentence(words, n, topic, end="."):
    body = [topic] + [next(words) for _ in range(max(0, n - len(topic.split())))]
    text = " ".join(body)
    return text[:1].upper() + text[1:] + end


def _enumerated(prompt):
    """Items of the longest "label: a, b, c" enumeration in the prompt."""
    best = 0
    for line in prompt.splitlines():
        _, colon, rest = line.partition(":")
        if colon:
            best = max(best, len([p for p in rest.strip().rstrip(".").split(", ") if p.strip()]))
    return best


def _realistic_count(prompt):
    n = _count(prompt) if _NUMBER_RE.search(prompt) else None
    if n == 1 and re.search(r"\bone\b", prompt, re.I):
        n = None  # "one question for each ...": one per item, not a list of one
    if _EACH_RE.search(prompt):
        listed = _enumerated(prompt)
        if listed:
            return (n or 1) * listed
    return n or 3


def realistic_reply(prompt, *, wants_list, wants_object):
    words = _wordstream(prompt)
    labelled = _LABELLED_RE.search(prompt)
    topic = labelled[1] if labelled else _topic(prompt)
    kept = [w for w in re.findall(r"[A-Za-z']+", topic) if w.lower() not in _NOT_TOPIC]
    topic = " ".join(kept[:5]) or "it"
    low = prompt.lower()
    if wants_list:
        questions = "question" in low
        items = []
        for i in range(_realistic_count(prompt)):
            size = 10 + (i * 7 + len(prompt)) % 9 if questions else 6 + (i * 5 + len(prompt)) % 7
            items.append(_sentence(words, size, topic, "?" if questions else ""))
        return json.dumps(items)
    if wants_object:
        return json.dumps({"answer": _sentence(words, 18, topic)})
    if "question" in low and "answer" not in low:
        return _sentence(words, 12 + len(prompt) % 9, "how does " + topic, "?")
    count = 4 + len(prompt) % 5
    return " ".join(_sentence(words, 14 + (i * 3 + len(prompt)) % 11, topic) for i in range(count))


def separated_reply(prompt, separator, *, realistic=False):
    """Plain-text items joined by a comma or by newlines, as many as the prompt asks for."""
    labelled = _LABELLED_RE.search(prompt)
    topic = re.sub(r"[,\n]+", " ", labelled[1] if labelled else _topic(prompt)).strip()
    joiner = ", " if separator.lower() == "comma" else "\n"
    if realistic:
        words = _wordstream(prompt)
        questions = "question" in prompt.lower()
        kept = [w for w in re.findall(r"[A-Za-z']+", topic) if w.lower() not in _NOT_TOPIC]
        topic = " ".join(kept[:5]) or "it"
        items = []
        for i in range(_realistic_count(prompt)):
            size = 10 + (i * 7 + len(prompt)) % 9 if questions else 6 + (i * 5 + len(prompt)) % 7
            items.append(_sentence(words, size, topic, "?" if questions else ""))
        return joiner.join(items)
    digest = hashlib.blake2s(prompt.encode(), digest_size=3).hexdigest()
    return joiner.join(f"{topic} item {i} ({digest})" for i in range(1, _count(prompt) + 1))


def make_reply(
    prompt, *, json_object=False, prose=False, never_json=False, json_list=False, realistic=False
):
    """The default answer to a prompt, as text."""
    separated = _SEPARATED_RE.search(prompt)
    if separated and not (json_list or json_object):
        return separated_reply(prompt, separated[1], realistic=realistic)
    digest = hashlib.blake2s(prompt.encode(), digest_size=3).hexdigest()
    topic = _topic(prompt)
    wants_list = json_list or bool(_LIST_RE.search(prompt))
    wants_object = not wants_list and (json_object or bool(_JSON_RE.search(prompt)))
    if never_json and (wants_list or wants_object):
        return (
            f"I would rather not format this as requested. Here are my thoughts about "
            f"{topic}: it is an interesting subject with many sides worth exploring."
        )
    if realistic and not never_json:
        text = realistic_reply(prompt, wants_list=wants_list, wants_object=wants_object)
        if prose and (wants_list or wants_object):
            kind = "list" if wants_list else "answer"
            return f"Sure! Here is the {kind}:\n```json\n{text}\n```\nHope this helps"
        return text
    if wants_list:
        data = [f"{topic} item {i} ({digest})" for i in range(1, _count(prompt) + 1)]
    elif wants_object:
        data = {"answer": f"{topic} ({digest})"}
    else:
        low = prompt.lower()
        if "question" in low and "answer" not in low:
            return f"What is {topic} ({digest})?"
        echo = " ".join(prompt.split())
        if len(echo) > 100:
            echo = echo[:100].rsplit(" ", 1)[0] + "..."
        return f"Answer: {echo}"
    text = json.dumps(data)  # the reply text itself: byte-for-byte what json.dumps gives
    if prose:
        kind = "list" if wants_list else "answer"
        return f"Sure! Here is the {kind}:\n```json\n{text}\n```\nHope this helps"
    return text


class FakeState:
    """Behaviour settings and counters; touched only from the server's event loop."""

    def __init__(self, config=None, api_key=None):
        self.api_key = api_key
        unknown = set(config or {}) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        self.initial = {**DEFAULTS, **(config or {})}
        self.config = dict(self.initial)
        self.stopping = None  # an asyncio.Event, set when the server shuts down
        self.reset()

    def set_config(self, config):
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        self.config = {**self.initial, **config}
        self.fail_seen = {}

    def reset(self):
        self.config = dict(self.initial)
        self.total = 0
        self.embedded = 0  # requests to /v1/embeddings
        self.per_prompt = {}
        self.fail_seen = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.per_second = {}
        self.statuses = {}
        self.recent = deque(maxlen=RECENT)
        self.window = deque()  # monotonic times of answers, for rate_limit_rps
        self.arrivals = deque()  # monotonic times of requests in the last second
        self.max_rps = 0
        self.next_id = 0

    def stats(self):
        return {
            "total": self.total,
            "embedded": self.embedded,
            "per_prompt": dict(self.per_prompt),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_concurrent": self.max_in_flight,
            "per_second": [[s, n] for s, n in sorted(self.per_second.items())],
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "recent": list(self.recent),
            "max_rps": self.max_rps,
            "config": self.config,
        }


def _json_response(data, status=200, headers=None):
    return web.Response(
        body=_dumps(data).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def make_app(state: FakeState) -> web.Application:
    def error(status, message, *, retry_after=None, code=None, kind=None):
        cfg = state.config
        default_kind, default_code = _STATUS_TEXT.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(max(0, math.ceil(float(retry_after))))
            headers["retry-after-ms"] = str(int(float(retry_after) * 1000))
        style = cfg.get("error_body", "openai")
        if style == "text":
            return web.Response(text=message, status=status, headers=headers)
        if style == "string":
            return _json_response({"error": message}, status, headers)
        body = {
            "error": {
                "message": message,
                "type": kind or default_kind,
                "param": None,
                "code": code or default_code,
            }
        }
        return _json_response(body, status, headers)

    def finish(status):
        state.statuses[status] = state.statuses.get(status, 0) + 1

    async def hang():
        """Wait an hour, or until the server shuts down."""
        if state.stopping is None:
            await asyncio.sleep(HANG_SECONDS)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), HANG_SECONDS)

    async def chat(request: web.Request):
        arrived(state)
        state.total += 1
        state.in_flight += 1
        if state.in_flight > state.max_in_flight:
            state.max_in_flight = state.in_flight
        second = int(time.time())
        state.per_second[second] = state.per_second.get(second, 0) + 1
        status = 500
        try:
            response = await answer(request)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away first
            raise
        finally:
            state.in_flight -= 1
            finish(status)

    async def answer(request: web.Request):
        cfg = state.config
        auth = request.headers.get("Authorization")
        raw = await request.read()
        try:
            body = _loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (ValueError, TypeError):
            return error(400, "We could not parse the JSON body of your request.")
        messages = body.get("messages")
        prompt = last_user_text(messages)
        state.per_prompt[prompt] = state.per_prompt.get(prompt, 0) + 1
        model = body.get("model")
        state.recent.append(
            {
                "prompt": prompt,
                "model": model,
                "authorization": auth,
                "response_format": body.get("response_format"),
                "temperature": body.get("temperature"),
                "max_tokens": body.get("max_tokens"),
                "top_p": body.get("top_p"),
            }
        )

        if state.api_key is not None and auth != f"Bearer {state.api_key}":
            return error(401, "Incorrect API key provided.")
        if not isinstance(messages, list) or not messages:
            return error(400, "'messages' is a required property")
        if not model:
            return error(400, "you must provide a model parameter")
        if cfg["models"] is not None and model not in cfg["models"]:
            return error(
                404, f"The model `{model}` does not exist or you do not have access to it."
            )
        if cfg["reject_response_format"] and "response_format" in body:
            return error(400, "response_format is not supported by this model")
        rf = body.get("response_format")
        if cfg["reject_json_schema"] and isinstance(rf, dict) and rf.get("type") == "json_schema":
            return error(400, "Invalid parameter: 'response_format' of type 'json_schema'")
        if model in (cfg["fail_models"] or {}):
            status = int(cfg["fail_models"][model])
            return error(status, cfg["error_message"] or _default_message(status))

        rps = cfg["rate_limit_rps"]
        if rps:
            now = time.monotonic()
            window = state.window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= rps:
                wait_s = max(0.001, window[0] + 1.0 - now)
                return error(
                    429,
                    f"Rate limit reached: limit {rps} requests per second.",
                    retry_after=wait_s,
                )
            window.append(now)

        if _matches(prompt, _listify(cfg["hang_for"])):
            await hang()
            return error(504, "gateway timeout")

        latency = float(cfg["latency"] or 0)
        if latency > 0:
            await asyncio.sleep(latency)

        for needle, fail_status in (cfg["fail_for"] or {}).items():
            if needle and needle in prompt:
                return error(
                    int(fail_status), cfg["error_message"] or _default_message(fail_status)
                )
        if cfg["fail_first_n"]:
            seen = state.fail_seen[prompt] = state.fail_seen.get(prompt, 0) + 1
            if seen <= int(cfg["fail_first_n"]):
                fail_status = int(cfg["fail_status"] or 500)
                return error(
                    fail_status,
                    cfg["error_message"] or _default_message(fail_status),
                    retry_after=cfg["retry_after"],
                )
        if cfg["fail_rate"] and random.random() < float(cfg["fail_rate"]):
            fail_status = int(random.choice(cfg["fail_rate_statuses"] or [500]))
            return error(fail_status, cfg["error_message"] or _default_message(fail_status))
        if _matches(prompt, _listify(cfg["malformed_for"])):
            return web.Response(
                text="<html><body>502 upstream hiccup</body></html>",
                status=200,
                content_type="text/html",
            )

        state.next_id += 1
        realistic = bool(cfg["realistic"])
        tokens = realistic_tokens if realistic else _words
        prompt_tokens = sum(
            tokens(m.get("content") if isinstance(m.get("content"), str) else "")
            for m in messages
            if isinstance(m, dict)
        )
        if realistic:
            prompt_tokens += _MESSAGE_TOKENS * len(messages) + _REPLY_PRIMING
        if _matches(prompt, _listify(cfg["refuse_for"])):
            message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
            completion_tokens = 5
        else:
            json_object = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
            text = make_reply(
                prompt,
                json_object=json_object,
                json_list=_schema_type(rf) == "array",
                prose=bool(cfg["prose"]),
                never_json=_matches(prompt, _listify(cfg["never_json_for"])),
                realistic=realistic,
            )
            schema = (
                (rf or {}).get("json_schema", {}).get("schema") if isinstance(rf, dict) else None
            )
            if cfg["follow_schema"] and isinstance(schema, dict) and _schema_type(rf) != "array":
                text = json.dumps(schema_value(schema, prompt, realistic=realistic))
            for needle, pool in (cfg["pool_for"] or {}).items():
                if needle and needle in prompt and pool:
                    text = pool[_pick(prompt, "pool", len(pool))]
            for needle, size in (cfg["huge_reply_for"] or {}).items():
                if needle and needle in prompt:
                    text = "x" * int(size)
            message = {"role": "assistant", "content": text}
            completion_tokens = tokens(text)
        return _json_response(
            {
                "id": f"chatcmpl-fake{state.next_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def models(request):
        ids = state.config["models"] or ["fake-model"]
        return _json_response(
            {
                "object": "list",
                "data": [{"id": i, "object": "model", "owned_by": "fake"} for i in ids],
            }
        )

    async def admin_config(request):
        try:
            config = await request.json()
            if not isinstance(config, dict):
                raise ValueError("expected a JSON object")
            state.set_config(config)
        except ValueError as exc:
            return _json_response({"error": str(exc)}, 400)
        return _json_response({"ok": True, "config": state.config})

    async def admin_stats(request):
        return _json_response(state.stats())

    async def admin_reset(request):
        state.reset()
        return _json_response({"ok": True})

    app = web.Application(client_max_size=16 * 1024 * 1024)

    async def embeddings(request):
        state.embedded += 1
        try:
            body = json.loads(await request.read())
        except ValueError:
            return error(400, "the body is not JSON")
        texts = body.get("input") if isinstance(body, dict) else None
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return error(400, "input must be a string or a list of strings")
        data = [
            {"object": "embedding", "index": i, "embedding": embedding_of(t)}
            for i, t in enumerate(texts)
        ]
        used = sum(realistic_tokens(t) for t in texts)
        return _json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model") or "fake-embed",
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/_admin/config", admin_config)
    app.router.add_get("/_admin/stats", admin_stats)
    app.router.add_post("/_admin/reset", admin_reset)
    return app


def _schema_type(response_format):
    """The root type of a json_schema response_format, if any."""
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
        return schema.get("type")
    return None


def _pick(prompt, salt, n):
    digest = hashlib.blake2s(f"{salt}|{prompt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % n


def schema_value(schema, prompt, path="", depth=0, realistic=False):
    """A value that fits a JSON schema, the same for the same prompt (what `follow_schema` sends).

    `realistic`: its texts are sentences of about 25 words, as a model writes."""
    if not isinstance(schema, dict) or depth > 10:
        return None
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][_pick(prompt, path, len(schema["enum"]))]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {
            k: schema_value(sub, prompt, f"{path}.{k}", depth + 1, realistic)
            for k, sub in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        return [
            schema_value(schema.get("items") or {}, prompt, f"{path}.{i}", depth + 1, realistic)
            for i in range(2)
        ]
    if kind in ("integer", "number"):
        low, high = int(schema.get("minimum", 0)), int(schema.get("maximum", 100))
        return low + _pick(prompt, path, max(1, high - low + 1))
    if kind == "boolean":
        return bool(_pick(prompt, path, 2))
    if realistic:
        return _sentence(_wordstream(f"{path}|{prompt}"), 25, _topic(prompt)[:60])
    return f"{path.strip('.') or 'text'} for {_topic(prompt)[:60]}"


EMBED_DIMS = 64


def embedding_of(text, dims=EMBED_DIMS):
    """A bag-of-words vector of unit length: texts sharing words point the same way."""
    vec = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()):
        vec[
            int.from_bytes(hashlib.blake2s(word.encode(), digest_size=4).digest(), "big") % dims
        ] += 1
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def arrived(state):
    """Count a request for `max_rps`, the busiest one-second window seen."""
    now = time.monotonic()
    arrivals = state.arrivals
    arrivals.append(now)
    while arrivals[0] <= now - 1.0:
        arrivals.popleft()
    if len(arrivals) > state.max_rps:
        state.max_rps = len(arrivals)


async def misbehave(state, prompt, model, authorized):
    """What the fakes of every protocol share: (status, message, retry_after) to fail
    with, or None to answer. Waits `latency` (or forever for `hang_for`) first."""
    cfg = state.config
    state.per_prompt[prompt] = state.per_prompt.get(prompt, 0) + 1
    if not authorized:
        return 401, "invalid x-api-key", None
    if cfg["models"] is not None and model not in cfg["models"]:
        return 404, f"model: {model} not found", None
    if model in (cfg["fail_models"] or {}):
        status = int(cfg["fail_models"][model])
        return status, cfg["error_message"] or _default_message(status), None
    rps = cfg["rate_limit_rps"]
    if rps:
        now = time.monotonic()
        window = state.window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= rps:
            wait_s = max(0.001, window[0] + 1.0 - now)
            return 429, f"Rate limit reached: limit {rps} requests per second.", wait_s
        window.append(now)
    if _matches(prompt, _listify(cfg["hang_for"])):
        if state.stopping is None:
            await asyncio.sleep(HANG_SECONDS)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.stopping.wait(), HANG_SECONDS)
        return 504, "gateway timeout", None
    latency = float(cfg["latency"] or 0)
    if latency > 0:
        await asyncio.sleep(latency)
    for needle, fail_status in (cfg["fail_for"] or {}).items():
        if needle and needle in prompt:
            return int(fail_status), cfg["error_message"] or _default_message(fail_status), None
    if cfg["fail_first_n"]:
        seen = state.fail_seen[prompt] = state.fail_seen.get(prompt, 0) + 1
        if seen <= int(cfg["fail_first_n"]):
            fail_status = int(cfg["fail_status"] or 500)
            message = cfg["error_message"] or _default_message(fail_status)
            return fail_status, message, cfg["retry_after"]
    return None


def _default_message(status):
    if status == 429:
        return "Rate limit reached for requests. Please try again later."
    if status >= 500:
        return "The server had an error while processing your request."
    return f"Request failed with status {status}."


def _listening_socket(host, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


async def _serve(state, sock, started=None, stop=None, app_factory=None):
    """Serve until `stop` (an asyncio.Event) is set."""
    state.stopping = stop or asyncio.Event()
    runner = web.AppRunner(
        (app_factory or make_app)(state),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=0.5,
    )
    await runner.setup()
    site = web.SockSite(runner, sock, backlog=4096)
    await site.start()
    if started is not None:
        started()
    try:
        await state.stopping.wait()
    finally:
        await runner.cleanup()


class FakeOpenAI:
    """The fake in a background thread with its own event loop."""

    app_factory = staticmethod(make_app)
    api_path = "/v1"  # what `url` ends with

    def __init__(self, latency=0.0, port=0, *, host="127.0.0.1", api_key=None, **config):
        self.host = host
        self.port = port
        self.state = FakeState({**config, "latency": latency}, api_key=api_key)
        self._thread = None
        self._loop = None
        self._stop = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}{self.api_path}"

    @property
    def admin_url(self):
        return f"http://{self.host}:{self.port}/_admin"

    def start(self):
        if self._thread is not None:
            return self
        sock = _listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop = asyncio.Event()
            try:
                loop.run_until_complete(
                    _serve(self.state, sock, ready.set, self._stop, self.app_factory)
                )
            except BaseException as exc:  # pragma: no cover - reported to start()
                failure.append(exc)
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(
            target=run, name=f"{type(self).__name__}-{self.port}", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if failure:
            raise RuntimeError("fake OpenAI server failed to start") from failure[0]
        return self

    def stop(self):
        if self._thread is None:
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _call(self, fn, *args):
        """Run fn(*args) on the server's loop and return its result."""

        async def call():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def configure(self, **config):
        """Replace the behaviour settings (keys left out take their start-up value)."""
        self._call(self.state.set_config, config)

    def reset(self):
        self._call(self.state.reset)

    def stats(self):
        return json.loads(json.dumps(self._call(self.state.stats)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--config", default=None, help="JSON object of behaviour settings")
    args = parser.parse_args(argv)
    config = json.loads(args.config) if args.config else {}
    config["latency"] = args.latency
    state = FakeState(config, api_key=args.api_key)
    sock = _listening_socket(args.host, args.port)
    port = sock.getsockname()[1]

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)

        def started():
            print(f"READY http://{args.host}:{port}/v1", flush=True)

        await _serve(state, sock, started, stop)

    try:
        import uvloop  # noqa: F401  (optional, faster when installed)

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
