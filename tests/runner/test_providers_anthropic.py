"""Anthropic's Messages API against a real HTTP fake that checks the request as the API does."""

import time

import pytest
import pytest_asyncio

from runner.providers import (
    Anthropic,
    CompletionRequest,
    ProviderError,
    build_provider,
    close_clients,
    complete_with_retries,
)
from runner.providers.anthropic import split_messages
from tests.fakes.anthropic_server import FakeAnthropic

KEY = "sk-ant-test-123"


@pytest.fixture(scope="module")
def fake():
    with FakeAnthropic(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset()
    yield


@pytest_asyncio.fixture
async def provider(fake):
    yield Anthropic(fake.url, KEY, default_model="claude-fake")
    await close_clients()


def req(prompt="Say hello", system=None, **kw):
    kw.setdefault("model", "claude-fake")
    kw.setdefault("timeout", 5.0)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return CompletionRequest(messages=messages, **kw)


@pytest.mark.asyncio
async def test_text_reply_with_tokens_and_headers(fake, provider):
    out = await provider.complete(req("Say hello to the sea", system="Be brief.", temperature=0.3))
    assert out.text.startswith("Answer: Say hello to the sea")
    assert out.model == "claude-fake"
    assert out.tokens_in == 7 and out.tokens_out > 0  # "Be brief." + the prompt, in words
    seen = fake.stats()["recent"][-1]
    assert seen["x-api-key"] == KEY and seen["anthropic-version"] == "2023-06-01"
    assert seen["system"] == "Be brief."  # top level, not a message
    assert seen["messages"] == [{"role": "user", "content": "Say hello to the sea"}]
    assert seen["max_tokens"] == 4096 and seen["temperature"] == 0.3
    assert seen["tools"] is None


@pytest.mark.asyncio
async def test_json_list_through_a_forced_tool(fake, provider):
    out = await provider.complete(
        req("Name 4 rivers", json_mode=True, json_schema={"type": "array"}, max_tokens=200)
    )
    assert out.text.startswith("[") and out.text.count("item") == 4
    seen = fake.stats()["recent"][-1]
    assert seen["tool_choice"] == {"type": "tool", "name": "output"}
    assert seen["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"items": {"type": "array"}},
        "required": ["items"],
    }
    assert seen["max_tokens"] == 200


@pytest.mark.asyncio
async def test_json_object_with_schema_through_a_forced_tool(fake, provider):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    out = await provider.complete(req("Describe eels", json_mode=True, json_schema=schema))
    assert out.text.startswith('{"answer": "')
    assert fake.stats()["recent"][-1]["tools"][0]["input_schema"] == schema


def test_messages_are_made_to_alternate():
    system, msgs = split_messages(
        [
            {"role": "system", "content": "A"},
            {"role": "system", "content": "B"},
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "three"},
        ]
    )
    assert system == "A\n\nB"
    assert msgs == [
        {"role": "user", "content": "one\n\ntwo"},
        {"role": "assistant", "content": "three"},
    ]
    assert split_messages([{"role": "assistant", "content": "x"}])[1][0]["role"] == "user"


@pytest.mark.asyncio
async def test_wrong_key_is_a_permanent_authentication_error(fake):
    prov = Anthropic(fake.url, "sk-ant-wrong")
    try:
        with pytest.raises(ProviderError) as err:
            await prov.complete(req())
    finally:
        await close_clients()
    assert not err.value.transient and err.value.status == 401
    assert err.value.message == "401 Unauthorized: invalid x-api-key"


@pytest.mark.asyncio
async def test_unknown_model_is_permanent_not_found(fake, provider):
    fake.configure(models=["claude-fake"])
    with pytest.raises(ProviderError) as err:
        await provider.complete(req(model="claude-nope"))
    assert not err.value.transient and err.value.status == 404
    assert err.value.message == "404 Not Found: model: claude-nope not found"


@pytest.mark.asyncio
async def test_invalid_request_error_body(fake, provider):
    fake.configure(fail_for={"bad": 400}, error_message="prompt is too long: 300000 tokens")
    with pytest.raises(ProviderError) as err:
        await complete_with_retries(provider, req("bad prompt"), backoff_base=0.01)
    assert not err.value.transient
    assert err.value.message == "400 Bad Request: prompt is too long: 300000 tokens"
    assert fake.stats()["per_prompt"]["bad prompt"] == 1


@pytest.mark.asyncio
async def test_529_overloaded_is_transient_and_retried(fake, provider):
    fake.configure(fail_status=529, fail_first_n=1, error_message="Overloaded")
    attempts = []
    out = await complete_with_retries(
        provider, req("busy day"), backoff_base=0.01, on_attempt=attempts.append
    )
    assert out.text
    assert [a["status"] for a in attempts] == [529, 200]
    assert attempts[0]["error"] == "529: Overloaded"


@pytest.mark.asyncio
async def test_429_rate_limit_error_honours_retry_after(fake, provider):
    fake.configure(fail_status=429, fail_first_n=1, retry_after=1)
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("slow down"))
    assert err.value.transient and err.value.retry_after == 1.0
    assert "429 Too Many Requests: Rate limit reached" in err.value.message
    started = time.monotonic()
    await complete_with_retries(provider, req("slow down again"), backoff_base=5)
    assert 0.9 <= time.monotonic() - started < 2.5


def test_build_and_url():
    prov = build_provider("anthropic", "https://api.anthropic.com/", "k", "m")
    assert isinstance(prov, Anthropic) and prov.url == "https://api.anthropic.com/v1/messages"
    assert Anthropic("https://proxy.example/v1").url == "https://proxy.example/v1/messages"
    assert Anthropic("").url == "https://api.anthropic.com/v1/messages"
