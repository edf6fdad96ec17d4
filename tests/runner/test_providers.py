"""The OpenAI-compatible provider, retries and the shared HTTP client, against a real fake server.

No database: these only speak HTTP to `tests.fakes.openai_server.FakeOpenAI`.
"""

import asyncio
import email.utils
import socket
import time

import httpx
import pytest
import pytest_asyncio

from runner.providers import (
    Completion,
    CompletionRequest,
    OpenAICompatible,
    Provider,
    ProviderError,
    build_provider,
    close_clients,
    complete_with_retries,
    get_client,
)
from runner.providers.http import get_session
from runner.providers.openai import _Reply, error_message, parse_retry_after
from runner.providers.retry import backoff_delay
from tests.fakes.openai_server import FakeOpenAI, make_reply

KEY = "sk-test-123"


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset()
    yield


@pytest_asyncio.fixture
async def provider(fake):
    yield OpenAICompatible(fake.url + "/", KEY, default_model="fake-model")
    await close_clients()


def req(prompt="Say hello", **kw):
    kw.setdefault("model", "fake-model")
    kw.setdefault("timeout", 5.0)
    return CompletionRequest(messages=[{"role": "user", "content": prompt}], **kw)


# -- the provider -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_success_with_tokens(fake, provider):
    out = await provider.complete(
        req("List 5 things about the sea", temperature=0.2, max_tokens=50)
    )
    assert isinstance(out, Completion)
    assert out.text.startswith("[") and out.text.count("item") == 5
    assert out.model == "fake-model"
    assert out.tokens_in > 0 and out.tokens_out > 0
    assert out.latency_ms >= 0
    assert out.raw["choices"][0]["message"]["content"] == out.text
    seen = fake.stats()["recent"][-1]
    assert seen["temperature"] == 0.2 and seen["max_tokens"] == 50 and seen["top_p"] is None


@pytest.mark.asyncio
async def test_auth_header_sent(fake, provider):
    await provider.complete(req())
    assert fake.stats()["recent"][-1]["authorization"] == f"Bearer {KEY}"


@pytest.mark.asyncio
async def test_wrong_key_is_permanent(fake, provider):
    bad = OpenAICompatible(fake.url, "sk-wrong")
    with pytest.raises(ProviderError) as err:
        await bad.complete(req())
    assert not err.value.transient and err.value.status == 401
    assert "Incorrect API key" in err.value.message


@pytest.mark.asyncio
async def test_400_fails_at_once_with_the_providers_message(fake, provider):
    fake.configure(fail_for={"bad model": 400}, error_message="model 'x' does not exist")
    attempts = []
    with pytest.raises(ProviderError) as err:
        await complete_with_retries(
            provider, req("bad model please"), backoff_base=0.01, on_attempt=attempts.append
        )
    assert not err.value.transient
    assert err.value.status == 400
    assert err.value.message == "400 Bad Request: model 'x' does not exist"
    assert fake.stats()["per_prompt"] == {"bad model please": 1}
    assert [a["n"] for a in attempts] == [1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "style,expected",
    [("string", "404 Not Found: no such thing"), ("text", "404 Not Found: no such thing")],
)
async def test_error_body_shapes(fake, provider, style, expected):
    fake.configure(fail_for={"thing": 404}, error_message="no such thing", error_body=style)
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("thing"))
    assert err.value.message == expected and not err.value.transient


@pytest.mark.asyncio
async def test_500_is_transient_and_retried(fake, provider):
    fake.configure(fail_status=500, fail_first_n=2)
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("flaky"))
    assert err.value.transient and err.value.status == 500
    attempts = []
    out = await complete_with_retries(
        provider, req("flaky"), backoff_base=0.01, on_attempt=attempts.append
    )
    assert out.text.startswith("Answer:")
    assert [(a["n"], a["ok"], a["status"]) for a in attempts] == [(1, False, 500), (2, True, 200)]
    assert fake.stats()["per_prompt"]["flaky"] == 3


@pytest.mark.asyncio
async def test_429_with_retry_after_is_retried(fake, provider):
    fake.configure(fail_status=429, fail_first_n=1, retry_after=0.2)
    attempts = []
    started = time.monotonic()
    out = await complete_with_retries(
        provider, req("busy"), backoff_base=5.0, on_attempt=attempts.append
    )
    elapsed = time.monotonic() - started
    assert out.text
    assert [a["status"] for a in attempts] == [429, 200]
    assert "429 Too Many Requests" in attempts[0]["error"]
    # Waited what the server asked (0.2 s), not the 2.5-5 s backoff.
    assert 0.18 <= elapsed < 1.5


@pytest.mark.asyncio
async def test_rate_limit_rps_answers_429_with_retry_after(fake, provider):
    fake.configure(rate_limit_rps=2)
    results = await asyncio.gather(
        *(provider.complete(req(f"r{i}")) for i in range(4)), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, ProviderError)]
    assert len(errors) == 2
    assert all(e.status == 429 and e.transient and 0 < e.retry_after <= 1 for e in errors)


@pytest.mark.asyncio
async def test_gives_up_after_max_retries_honouring_retry_after(fake, provider):
    fake.configure(fail_status=503, fail_first_n=100, retry_after=0.05)
    attempts = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        await complete_with_retries(
            provider,
            req("down"),
            max_retries=3,
            backoff_base=5.0,
            on_attempt=attempts.append,
        )
    elapsed = time.monotonic() - started
    assert err.value.message.startswith("gave up after 4 attempts: 503 Service Unavailable")
    assert err.value.transient and err.value.attempts == 4
    assert fake.stats()["per_prompt"]["down"] == 4
    assert len(attempts) == 4 and not any(a["ok"] for a in attempts)
    assert 0.14 <= elapsed < 1.5  # three waits of 0.05 s, not of seconds


@pytest.mark.asyncio
async def test_timeout_is_transient(fake, provider):
    fake.configure(hang_for=["hang"])
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("please hang", timeout=0.3))
    assert err.value.transient
    assert "timed out after 0.3s" in err.value.message
    assert time.monotonic() - started < 2


@pytest.mark.asyncio
async def test_timeout_is_transient_with_an_httpx_client(fake):
    fake.configure(hang_for=["hang"])
    prov = OpenAICompatible(fake.url, KEY, client=get_client())
    try:
        with pytest.raises(ProviderError) as err:
            await prov.complete(req("please hang", timeout=0.3))
        assert err.value.transient and "timed out" in err.value.message
        out = await prov.complete(req("List 2 colours"))
        assert out.text.count("item") == 2 and out.tokens_out > 0
    finally:
        await close_clients()


@pytest.mark.asyncio
async def test_connection_refused_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prov = OpenAICompatible(f"http://127.0.0.1:{port}/v1")
    try:
        with pytest.raises(ProviderError) as err:
            await prov.complete(req())
        assert err.value.transient and err.value.message.startswith("connection error")
    finally:
        await close_clients()


@pytest.mark.asyncio
async def test_malformed_200_is_transient(fake, provider):
    fake.configure(malformed_for=["garble"])
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("garble this"))
    assert err.value.transient
    assert err.value.message.startswith("provider returned a malformed response: not JSON")


@pytest.mark.asyncio
async def test_refusal_is_permanent(fake, provider):
    fake.configure(refuse_for=["forbidden"])
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("forbidden topic"))
    assert not err.value.transient and "refused" in err.value.message


@pytest.mark.asyncio
async def test_response_format_json_schema_for_lists_and_schemas(fake, provider):
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    await provider.complete(req("Describe cats", json_mode=True))
    await provider.complete(req("Describe dogs", json_mode=True, json_schema={"type": "object"}))
    await provider.complete(req("Describe eels", json_mode=True, json_schema=schema))
    out = await provider.complete(
        req("Name 4 birds", json_mode=True, json_schema={"type": "array"})
    )
    await provider.complete(req("Say hi"))
    sent = [r["response_format"] for r in fake.stats()["recent"]]
    assert sent == [
        {"type": "json_object"},
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": False},
        },
        {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": {"type": "array"}, "strict": False},
        },
        None,
    ]
    assert out.text.startswith("[") and out.text.count("item") == 4


@pytest.mark.asyncio
async def test_json_schema_rejected_falls_back_per_shape(fake, provider):
    fake.configure(reject_json_schema=True)
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    out = await provider.complete(req("Describe eels", json_mode=True, json_schema=schema))
    assert out.text.startswith('{"answer"')
    lst = await provider.complete(
        req("List 3 birds", json_mode=True, json_schema={"type": "array"})
    )
    assert lst.text.startswith("[")
    await provider.complete(req("Describe cats", json_mode=True, json_schema=schema))
    await provider.complete(req("List 2 fish", json_mode=True, json_schema={"type": "array"}))
    kinds = [(r["response_format"] or {}).get("type") for r in fake.stats()["recent"]]
    # object: json_schema refused, then json_object; list: json_schema refused, then nothing
    assert kinds == ["json_schema", "json_object", "json_schema", None, "json_object", None]
    assert provider.json_schema_rejected == {"object", "array"}
    assert provider.supports_response_format is True


@pytest.mark.asyncio
async def test_response_format_rejected_then_dropped(fake, provider):
    fake.configure(reject_response_format=True)
    out = await provider.complete(req("Describe cats in JSON", json_mode=True))
    assert out.text.startswith('{"answer"')
    assert provider.supports_response_format is False
    await provider.complete(req("Describe dogs in JSON", json_mode=True))
    assert fake.stats()["total"] == 3  # one rejected, then two without response_format


@pytest.mark.asyncio
async def test_model_falls_back_to_default(fake, provider):
    out = await provider.complete(req(model=""))
    assert out.model == "fake-model"
    with pytest.raises(ProviderError) as err:
        await OpenAICompatible(fake.url, KEY).complete(req(model=""))
    assert not err.value.transient


# -- retries and the semaphore ------------------------------------------------------


@pytest.mark.asyncio
async def test_semaphore_bounds_concurrency(fake, provider):
    fake.configure(latency=0.05)
    sem = asyncio.Semaphore(4)
    outs = await asyncio.gather(
        *(complete_with_retries(provider, req(f"q{i}"), semaphore=sem) for i in range(24))
    )
    assert len(outs) == 24
    stats = fake.stats()
    assert stats["total"] == 24
    assert stats["max_in_flight"] <= 4


class Scripted(Provider):
    """Fails as told, per prompt, then answers."""

    def __init__(self, failures):
        self.failures = failures
        self.order = []

    async def complete(self, request):
        prompt = request.messages[-1]["content"]
        if self.failures.get(prompt):
            self.failures[prompt].pop(0)
            self.order.append(f"{prompt}!")
            raise ProviderError("busy", transient=True, status=429, retry_after=0.2)
        self.order.append(prompt)
        return Completion(text="ok", model="m")


@pytest.mark.asyncio
async def test_slot_is_not_held_while_waiting_to_retry():
    prov = Scripted({"a": [1]})
    sem = asyncio.Semaphore(1)
    await asyncio.gather(
        complete_with_retries(prov, req("a"), semaphore=sem),
        complete_with_retries(prov, req("b"), semaphore=sem),
    )
    assert prov.order == ["a!", "b", "a"]


@pytest.mark.asyncio
async def test_unexpected_errors_are_reported_and_raised():
    class Broken(Provider):
        async def complete(self, request):
            raise KeyError("oops")

    attempts = []
    with pytest.raises(KeyError):
        await complete_with_retries(Broken(), req(), on_attempt=attempts.append)
    assert len(attempts) == 1 and "KeyError" in attempts[0]["error"]


@pytest.mark.asyncio
async def test_async_on_attempt_and_broken_observer():
    seen = []

    async def observer(info):
        seen.append(info)
        raise RuntimeError("observer bug")

    out = await complete_with_retries(Scripted({}), req("x"), on_attempt=observer)
    assert out.text == "ok" and seen[0]["ok"] is True


def test_backoff_is_full_jitter_within_bounds():
    for retry in range(8):
        for _ in range(50):
            d = backoff_delay(retry, None, 0.5, 4.0)
            assert 0.25 <= d <= min(4.0, 0.5 * 2**retry)
    err = ProviderError("x", transient=True, retry_after=100)
    assert backoff_delay(0, err, 0.5, 30.0) == 30.0
    err.retry_after = 0.1
    assert backoff_delay(3, err, 0.5, 30.0) == 0.1


# -- helpers ----------------------------------------------------------------------------


def test_parse_retry_after():
    h = httpx.Headers
    assert parse_retry_after(h({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(h({"Retry-After": "1.5"})) == 1.5
    assert parse_retry_after(h({"Retry-After": "2", "retry-after-ms": "250"})) == 0.25
    assert parse_retry_after(h({"Retry-After": "soon"})) is None
    assert parse_retry_after(h({})) is None
    later = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= parse_retry_after(h({"Retry-After": later})) <= 10
    past = email.utils.formatdate(time.time() - 10, usegmt=True)
    assert parse_retry_after(h({"Retry-After": past})) == 0.0


def test_error_message_shapes():
    def msg(body):
        return error_message(_Reply(400, "Bad Request", {}, body.encode()))

    assert msg('{"error": {"message": "bad  thing", "type": "x"}}') == "bad thing"
    assert msg('{"error": "plain"}') == "plain"
    assert msg('{"object": "error", "message": "vllm says"}') == "vllm says"
    assert msg('{"detail": "fastapi says"}') == "fastapi says"
    assert msg("<html>nope</html>") == "<html>nope</html>"
    assert len(msg("x" * 2000)) == 500


def test_build_provider():
    prov = build_provider("openai", "http://h/v1/", "k", "m")
    assert isinstance(prov, OpenAICompatible)
    assert prov.url == "http://h/v1/chat/completions" and prov.default_model == "m"
    with pytest.raises(ValueError):
        build_provider("nope", "http://h", "")


def test_one_client_per_loop():
    async def grab():
        a, b = get_client(), get_client()
        s = get_session()
        assert a is b and get_session() is s
        await close_clients()
        return a

    first = asyncio.run(grab())
    second = asyncio.run(grab())
    assert first is not second and first.is_closed


def test_default_replies():
    items = make_reply("Generate a list of five subtopics about Rust. JSON array please.")
    assert items.startswith('["Rust item 1 (') and items.count("item") == 5
    assert make_reply("List 2 things about Go") != make_reply("List 2 things about Python")
    assert make_reply("Give a JSON object about cats").startswith('{"answer": ')
    assert make_reply("Write a question about cats").startswith("What is cats")
    assert make_reply("Hello").startswith("Answer: Hello")
    prose = make_reply("List 2 things about dogs", prose=True)
    assert prose.startswith("Sure!") and "```json\n[" in prose
    plain = make_reply("List 2 things about dogs", never_json=True)
    assert not any(c in plain for c in "[]{}")
