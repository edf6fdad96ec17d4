"""Gemini's generateContent against a real HTTP fake that answers as Gemini does."""

import time

import pytest
import pytest_asyncio

from runner.providers import (
    CompletionRequest,
    Gemini,
    ProviderError,
    build_provider,
    close_clients,
    complete_with_retries,
)
from runner.providers.gemini import gemini_schema, to_contents
from tests.fakes.gemini_server import FakeGemini

KEY = "AIza-test-123"


@pytest.fixture(scope="module")
def fake():
    with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset()
    yield


@pytest_asyncio.fixture
async def provider(fake):
    yield Gemini(fake.url, KEY, default_model="gemini-fake")
    await close_clients()


def req(prompt="Say hello", system=None, **kw):
    kw.setdefault("model", "gemini-fake")
    kw.setdefault("timeout", 5.0)
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return CompletionRequest(messages=messages, **kw)


@pytest.mark.asyncio
async def test_text_reply_with_tokens(fake, provider):
    out = await provider.complete(
        req("Say hello to the sea", system="Be brief.", temperature=0.2, max_tokens=64, top_p=0.9)
    )
    assert out.text.startswith("Answer: Say hello to the sea")
    assert out.model == "gemini-fake"
    assert out.tokens_in == 7 and out.tokens_out == len(out.text.split())
    seen = fake.stats()["recent"][-1]
    assert seen["key"] == KEY and not seen["key_in_url"]  # the header, never the URL
    assert seen["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert seen["contents"] == [{"role": "user", "parts": [{"text": "Say hello to the sea"}]}]
    assert seen["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64}


@pytest.mark.asyncio
async def test_json_list_and_object_with_response_schema(fake, provider):
    out = await provider.complete(
        req(
            "Name 4 rivers",
            json_mode=True,
            json_schema={"type": "array", "items": {"type": "string"}},
        )
    )
    assert out.text.startswith("[") and out.text.count("item") == 4
    cfg = fake.stats()["recent"][-1]["generationConfig"]
    assert cfg["responseMimeType"] == "application/json"
    assert cfg["responseSchema"] == {"type": "ARRAY", "items": {"type": "STRING"}}
    # a list with no item type: JSON mode only (Gemini's ARRAY needs items)
    out = await provider.complete(
        req("List 2 lakes", json_mode=True, json_schema={"type": "array"})
    )
    assert out.text.startswith("[")
    cfg = fake.stats()["recent"][-1]["generationConfig"]
    assert cfg == {"responseMimeType": "application/json"}
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    out = await provider.complete(req("Describe eels", json_mode=True, json_schema=schema))
    assert out.text.startswith('{"answer"')
    assert fake.stats()["recent"][-1]["generationConfig"]["responseSchema"] == {
        "type": "OBJECT",
        "properties": {"answer": {"type": "STRING"}},
        "required": ["answer"],
        "propertyOrdering": ["answer"],
    }


def test_schema_conversion():
    assert gemini_schema({"type": ["string", "null"], "enum": ["a"]}) == {
        "type": "STRING",
        "nullable": True,
        "enum": ["a"],
    }
    assert gemini_schema({"type": "object"}) is None
    assert gemini_schema({"type": "array", "items": {"oneOf": []}}) is None
    system, contents = to_contents(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    )
    assert system is None and [c["role"] for c in contents] == ["user", "model", "user"]


@pytest.mark.asyncio
async def test_bad_key_is_permanent_invalid_argument(fake):
    prov = Gemini(fake.url, "AIza-wrong")
    try:
        with pytest.raises(ProviderError) as err:
            await prov.complete(req())
    finally:
        await close_clients()
    assert not err.value.transient and err.value.status == 400
    assert err.value.message == "400 Bad Request: API key not valid. Please pass a valid API key."


@pytest.mark.asyncio
async def test_unknown_model_is_permanent_not_found(fake, provider):
    fake.configure(models=["gemini-fake"])
    with pytest.raises(ProviderError) as err:
        await provider.complete(req(model="models/gemini-nope"))
    assert not err.value.transient and err.value.status == 404
    assert "models/gemini-nope is not found" in err.value.message
    assert fake.stats()["recent"][-1]["model"] == "gemini-nope"


@pytest.mark.asyncio
async def test_resource_exhausted_uses_retry_delay_from_the_body(fake, provider):
    fake.configure(fail_status=429, fail_first_n=1, retry_after=1)
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("quota"))
    assert err.value.transient and err.value.status == 429
    assert err.value.retry_after == 1.0  # from details[].retryDelay "1s"
    started = time.monotonic()
    await complete_with_retries(provider, req("quota again"), backoff_base=5)
    assert 0.9 <= time.monotonic() - started < 2.5


@pytest.mark.asyncio
async def test_unavailable_is_transient_and_retried(fake, provider):
    fake.configure(fail_status=503, fail_first_n=2, error_message="The model is overloaded.")
    attempts = []
    out = await complete_with_retries(
        provider, req("later"), backoff_base=0.01, on_attempt=attempts.append
    )
    assert out.text
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert attempts[0]["error"] == "503 Service Unavailable: The model is overloaded."


@pytest.mark.asyncio
async def test_blocked_prompt_is_permanent(fake, provider):
    fake.configure(block_for=["forbidden"])
    with pytest.raises(ProviderError) as err:
        await provider.complete(req("a forbidden topic"))
    assert not err.value.transient and err.value.message == "the prompt was blocked (SAFETY)"


def test_build_and_urls():
    prov = build_provider("gemini", "https://generativelanguage.googleapis.com", "k", "m")
    assert isinstance(prov, Gemini)
    assert prov.url_for("models/gemini-2.0-flash") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    )
    assert Gemini("http://h/v1").url_for("x") == "http://h/v1/models/x:generateContent"
