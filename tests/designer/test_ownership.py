"""Another user gets a 404 for every pipeline and provider URL, whatever the method.

The URLs are read from the designer's URL patterns, so pages added later (the editor's,
for example) are covered without editing this file.
"""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from designer import actions
from runner.models import Provider
from runner.spec import library

pytestmark = pytest.mark.django_db

# Pages served by these modules check ownership before the method: a stranger gets
# 404 on GET and POST alike. Other modules' POST-only views may answer 405 to a GET.
STRICT_MODULES = ("designer.pipelines", "designer.providers")


def owned_patterns(prefix):
    """(name, converters, module) of every designer URL under `prefix` that takes a `code`."""
    out = []

    def walk(patterns, namespace):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, p.namespace or namespace)
            elif isinstance(p, URLPattern) and namespace == "designer":
                route = str(p.pattern)
                if route.startswith(prefix) and "code" in p.pattern.converters:
                    out.append((p.name, p.pattern.converters, p.callback.__module__))

    walk(get_resolver().url_patterns, None)
    return out


def fill(converters, code):
    kwargs = {}
    for key, conv in converters.items():
        kind = type(conv).__name__
        if key == "code":
            kwargs[key] = code
        elif kind == "IntConverter":
            kwargs[key] = 1
        else:
            kwargs[key] = "x"
    return kwargs


@pytest.fixture
def pipeline(owner):
    return actions.create_pipeline(owner, library.get("qa-from-topics").spec, name="Owner's")


@pytest.fixture
def provider(owner):
    p = Provider(owner=owner, name="local", base_url="http://127.0.0.1:9/v1", default_model="m")
    p.set_api_key("sk-owner-secret-1234")
    p.save()
    return p


def check(client, prefix, code):
    patterns = owned_patterns(prefix)
    assert patterns, f"no URL under {prefix}"
    for name, converters, module in patterns:
        url = reverse(f"designer:{name}", kwargs=fill(converters, code))
        for method in ("get", "post"):
            status = getattr(client, method)(url).status_code
            if module in STRICT_MODULES:
                assert status == 404, f"{method.upper()} {url} answered {status}"
            else:
                assert status in (404, 405), f"{method.upper()} {url} answered {status}"
        assert client.get(url).status_code == 404 or client.post(url).status_code == 404, url


def test_another_user_gets_404_on_every_pipeline_url(client, other_user, owner, pipeline):
    client.force_login(other_user)
    check(client, "pipelines/<uuid:code>", pipeline.code)
    pipeline.refresh_from_db()
    assert pipeline.name == "Owner's"
    assert pipeline.versions.count() == 1


def test_another_user_gets_404_on_every_provider_url(client, other_user, owner, provider):
    client.force_login(other_user)
    check(client, "providers/<uuid:code>", provider.code)
    provider.refresh_from_db()
    assert provider.name == "local" and provider.api_key == "sk-owner-secret-1234"


def test_the_owner_can_open_the_same_pages(client, owner, pipeline, provider):
    client.force_login(owner)
    for prefix, code in (
        ("pipelines/<uuid:code>", pipeline.code),
        ("providers/<uuid:code>", provider.code),
    ):
        for name, converters, module in owned_patterns(prefix):
            if module not in STRICT_MODULES or name.endswith("-delete"):
                continue
            url = reverse(f"designer:{name}", kwargs=fill(converters, code))
            get = client.get(url).status_code
            assert get in (200, 405), f"GET {url} answered {get} to its owner"


def test_a_stranger_cannot_see_anothers_pipelines_or_providers_in_lists(
    client, other_user, pipeline, provider
):
    client.force_login(other_user)
    for url in ("/pipelines/", "/providers/", "/"):
        page = client.get(url).content.decode()
        assert "Owner&#x27;s" not in page and str(pipeline.code) not in page
        assert str(provider.code) not in page
