"""The providers page: add and edit endpoints, keys never shown again, test the connection."""

import socket

import pytest

from runner.models import Provider
from runner.spec.money import price_for

pytestmark = pytest.mark.django_db

KEY = "sk-test-0123456789abcdefWXYZ"


@pytest.fixture
def logged_in(client, owner):
    client.force_login(owner)
    return client


def form(**overrides):
    data = {
        "name": "local",
        "kind": "openai",
        "base_url": "http://127.0.0.1:8001/v1/",
        "default_model": "small",
        "models": "small, big ,, small",
        "api_key": KEY,
        "concurrency": "8",
    }
    data.update(overrides)
    return data


def make_provider(owner, base_url="http://127.0.0.1:9/v1", key=KEY, model="small"):
    p = Provider(owner=owner, name="local", base_url=base_url, default_model=model)
    p.set_api_key(key)
    p.save()
    return p


def test_add_a_provider_stores_the_key_encrypted_and_never_shows_it(logged_in, owner):
    response = logged_in.post("/providers/new/", form(), follow=True)
    assert KEY not in response.content.decode()
    provider = Provider.objects.get(owner=owner)
    assert provider.base_url == "http://127.0.0.1:8001/v1"
    assert provider.models_list == ["small", "big"]
    assert provider.concurrency == 8
    assert provider.api_key == KEY
    assert KEY not in provider.api_key_encrypted
    for url in (
        "/providers/",
        f"/providers/{provider.code}/",
        "/",
        f"/providers/{provider.code}/delete/",
    ):
        page = logged_in.get(url).content.decode()
        assert KEY not in page, url
        assert KEY[:-4] not in page, url
    assert "…WXYZ" in logged_in.get("/providers/").content.decode()
    assert "Saved key: …WXYZ" in logged_in.get(f"/providers/{provider.code}/").content.decode()


def test_key_is_not_echoed_back_when_the_form_has_errors(logged_in, owner):
    response = logged_in.post("/providers/new/", form(concurrency="0"))
    assert response.status_code == 200
    assert KEY not in response.content.decode()
    assert "Enter a whole number from 1 to 10000." in response.content.decode()
    assert not Provider.objects.exists()


def test_edit_with_an_empty_key_keeps_the_old_one(logged_in, owner):
    provider = make_provider(owner)
    response = logged_in.post(
        f"/providers/{provider.code}/", form(api_key="", name="renamed", concurrency="10000")
    )
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.name == "renamed" and provider.concurrency == 10000
    assert provider.api_key == KEY
    logged_in.post(f"/providers/{provider.code}/", form(api_key="sk-new-key-1234"))
    provider.refresh_from_db()
    assert provider.api_key == "sk-new-key-1234"
    assert provider.api_key_last4 == "1234"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"concurrency": "10001"}, "Enter a whole number from 1 to 10000."),
        ({"concurrency": "many"}, "Enter a whole number from 1 to 10000."),
        ({"base_url": "ftp://example.com"}, "Enter a web address starting with http://"),
        ({"base_url": ""}, "Enter the endpoint&#x27;s base URL"),
        ({"kind": "carrier-pigeon"}, "Choose one of the protocols in the list."),
        ({"rpm": "0"}, "Enter at least 1, or leave it empty for no limit."),
        ({"name": "default"}, "is reserved"),
        ({"name": ""}, "Give the provider a name"),
    ],
)
def test_errors_are_shown_beside_the_field(logged_in, overrides, message):
    response = logged_in.post("/providers/new/", form(**overrides), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    assert 'id="provider-form"' in page and "<html" not in page
    assert not Provider.objects.exists()


def test_names_are_unique_per_owner(logged_in, owner, other_user):
    make_provider(other_user)  # another user's "local" does not count
    assert logged_in.post("/providers/new/", form()).status_code == 302
    response = logged_in.post("/providers/new/", form())
    assert "This workspace already has a provider named" in response.content.decode()
    assert Provider.objects.filter(owner=owner).count() == 1


def test_rate_limits_and_other_protocols(logged_in, owner):
    logged_in.post("/providers/new/", form(kind="anthropic", base_url="", rpm="50", tpm="40000"))
    provider = Provider.objects.get(owner=owner)
    assert provider.kind == "anthropic"
    assert provider.base_url == "https://api.anthropic.com/v1"
    assert (provider.rpm, provider.tpm) == (50, 40000)
    logged_in.post(f"/providers/{provider.code}/", form(kind="anthropic", rpm="", tpm=""))
    provider.refresh_from_db()
    assert (provider.rpm, provider.tpm) == (None, None)
    assert provider.base_url == "http://127.0.0.1:8001/v1"


def test_hostnames_without_a_dot_are_accepted(logged_in, owner):
    logged_in.post("/providers/new/", form(base_url="http://ollama:11434/v1"))
    assert Provider.objects.get(owner=owner).base_url == "http://ollama:11434/v1"


def test_connection_succeeds_with_latency(logged_in, owner, fake_llm):
    fake_llm.state.api_key = KEY
    provider = make_provider(owner, base_url=fake_llm.url)
    response = logged_in.post(f"/providers/{provider.code}/test/", HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200
    assert "Connected: small answered in" in page and " ms" in page
    assert KEY not in page
    stats = fake_llm.stats()
    assert stats["total"] == 1  # one tiny call
    call = stats["recent"][-1]
    assert call["prompt"] == "Reply with OK" and call["max_tokens"] == 5
    assert call["model"] == "small" and call["authorization"] == f"Bearer {KEY}"


def test_connection_with_a_wrong_key_says_so(logged_in, owner, fake_llm):
    fake_llm.state.api_key = "sk-the-right-one"
    provider = make_provider(owner, base_url=fake_llm.url)
    page = logged_in.post(f"/providers/{provider.code}/test/", HTTP_HX_REQUEST="true")
    page = page.content.decode()
    assert "Connection failed with small" in page
    assert "401" in page and "Incorrect API key provided." in page
    assert "Check the API key." in page


def test_connection_to_nothing_says_so(logged_in, owner):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = make_provider(owner, base_url=f"http://127.0.0.1:{port}/v1")
    page = logged_in.post(f"/providers/{provider.code}/test/", HTTP_HX_REQUEST="true")
    page = page.content.decode()
    assert "Connection failed" in page and "connection error" in page
    assert "that the server is running" in page


def test_connection_without_a_model_says_what_to_do(logged_in, owner):
    provider = make_provider(owner, model="")
    page = logged_in.post(f"/providers/{provider.code}/test/", HTTP_HX_REQUEST="true")
    assert "Set a default model or list a model name" in page.content.decode()
    assert logged_in.get(f"/providers/{provider.code}/test/").status_code == 405


def test_connection_without_htmx_reports_in_a_message(logged_in, owner):
    provider = make_provider(owner, model="")
    response = logged_in.post(f"/providers/{provider.code}/test/", follow=True)
    assert "did not answer: No model to test with." in response.content.decode()


def test_delete_asks_first(logged_in, owner):
    provider = make_provider(owner)
    assert (
        "Delete the provider “local”?"
        in logged_in.get(f"/providers/{provider.code}/delete/").content.decode()
    )
    assert Provider.objects.filter(pk=provider.pk).exists()
    response = logged_in.post(f"/providers/{provider.code}/delete/")
    assert response["Location"] == "/providers/"
    assert not Provider.objects.filter(pk=provider.pk).exists()


PRICES = """gpt-4o-mini: 0.15 / 0.60

llama3:8b: 0 / 0
gpt-4o: $2.50 / $10
*: 1 / 2"""


def test_prices_are_saved_shown_in_the_list_and_filled_back_in(logged_in, owner):
    response = logged_in.post("/providers/new/", form(prices=PRICES))
    assert response.status_code == 302
    provider = Provider.objects.get(owner=owner)
    assert provider.prices == {
        "gpt-4o-mini": [0.15, 0.6],
        "llama3:8b": [0.0, 0.0],  # a colon in the name: the prices follow the last one
        "gpt-4o": [2.5, 10.0],
        "*": [1.0, 2.0],
    }
    assert price_for(provider.prices, "gpt-4o-mini-2024-07-18") == (0.15, 0.6)
    assert price_for(provider.prices, "anything") == (1.0, 2.0)

    listing = logged_in.get("/providers/").content.decode()
    assert "<code>gpt-4o-mini</code>: $0.15 / $0.6" in listing
    assert "any other model: $1 / $2" in listing

    page = logged_in.get(f"/providers/{provider.code}/").content.decode()
    assert "Prices (dollars per million tokens)" in page
    assert "gpt-4o: 2.5 / 10\ngpt-4o-mini: 0.15 / 0.6\nllama3:8b: 0 / 0\n*: 1 / 2" in page

    # saving the edit form as shown keeps the same prices; emptying it removes them
    logged_in.post(
        f"/providers/{provider.code}/",
        form(
            api_key="",
            prices="gpt-4o: 2.5 / 10\ngpt-4o-mini: 0.15 / 0.6\nllama3:8b: 0 / 0\n*: 1 / 2",
        ),
    )
    provider.refresh_from_db()
    assert provider.prices["gpt-4o-mini"] == [0.15, 0.6] and len(provider.prices) == 4
    logged_in.post(f"/providers/{provider.code}/", form(api_key="", prices="  \n"))
    provider.refresh_from_db()
    assert provider.prices == {}
    assert "no prices" in logged_in.get("/providers/").content.decode()


@pytest.mark.parametrize(
    "prices, message",
    [
        (
            "gpt-4o-mini: 0.15 / 0.60\ngpt-4o 2.50 10",
            "line 2: write it as “model: input / output”, for example “gpt-4o-mini: 0.15 / 0.60”",
        ),
        ("gpt-4o-mini: 0.15", "line 1: write it as “model: input / output”"),
        (": 1 / 2", "line 1: write it as “model: input / output”"),
        ("gpt-4o-mini: cheap / 0.60", "line 1: the prices must be numbers"),
        ("gpt-4o-mini: nan / 0.60", "line 1: the prices must be numbers"),
        ("\n\ngpt-4o-mini: 0.15 / -0.60", "line 3: a price cannot be negative"),
        ("a: 1 / 2\na: 3 / 4", "line 2: “a” is already priced on line 1"),
    ],
)
def test_a_bad_price_line_is_refused_beside_the_field(logged_in, prices, message):
    response = logged_in.post("/providers/new/", form(prices=prices), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page
    assert 'id="provider-form"' in page
    assert not Provider.objects.exists()


def test_a_bad_price_line_leaves_the_saved_prices_alone(logged_in, owner):
    provider = make_provider(owner)
    provider.prices = {"small": [0.1, 0.2]}
    provider.save()
    response = logged_in.post(
        f"/providers/{provider.code}/", form(api_key="", name="renamed", prices="small: 1 / -2")
    )
    assert response.status_code == 200
    assert "line 1: a price cannot be negative" in response.content.decode()
    provider.refresh_from_db()
    assert provider.name == "local" and provider.prices == {"small": [0.1, 0.2]}


def test_a_provider_keeps_its_own_reply_limit_and_a_bad_one_is_explained(logged_in, owner):
    logged_in.post("/providers/new/", form(max_reply_mb="2"), follow=True)
    provider = Provider.objects.get(owner=owner)
    assert provider.max_reply_mb == 2
    page = logged_in.get(f"/providers/{provider.code}/").content.decode()
    assert 'name="max_reply_mb" value="2"' in page
    response = logged_in.post(f"/providers/{provider.code}/", form(max_reply_mb="0"))
    assert "Enter a whole number of megabytes from 1 to 1000" in response.content.decode()
    provider.refresh_from_db()
    assert provider.max_reply_mb == 2  # nothing saved


def test_an_embeddings_model_is_saved_for_openai_compatible_endpoints_only(logged_in, owner):
    logged_in.post("/providers/new/", form(embedding_model=" text-embedding-3-small "))
    provider = Provider.objects.get(owner=owner)
    assert provider.embedding_model == "text-embedding-3-small"
    page = logged_in.get(f"/providers/{provider.code}/").content.decode()
    assert 'value="text-embedding-3-small"' in page

    response = logged_in.post(
        "/providers/new/", form(name="claude", kind="anthropic", base_url="", embedding_model="x")
    )
    assert response.status_code == 200
    assert "Only OpenAI-compatible endpoints have an /embeddings" in response.content.decode()
    assert not Provider.objects.filter(name="claude").exists()
