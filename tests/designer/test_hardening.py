"""The web is hardened: log-in attempts are limited, static files carry the security
headers, error pages are in the product's layout with a way home."""

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import path

from config.urls import urlpatterns as product_urls

pytestmark = pytest.mark.django_db

LIMIT = 5  # LOGIN_FAILURE_LIMIT's default


def log_in(username, password, address="10.0.0.1", **extra):
    client = Client(REMOTE_ADDR=address, **extra)
    response = client.post("/accounts/login/", {"username": username, "password": password})
    return client, response


def logged_in(client):
    return client.get("/pipelines/").status_code == 200


def assert_locked_out(response):
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed log-ins" in page
    assert f"after {LIMIT} wrong passwords" in page and "Try again in 15 minutes" in page
    assert '<header class="top">' in page and 'href="/"' in page  # the product's layout


def test_the_right_password_is_refused_after_too_many_wrong_ones(owner):
    for _ in range(LIMIT - 1):
        _, response = log_in("owner", "wrong-password")
        assert response.status_code == 200
        assert "That name and password do not match an account" in response.content.decode()
    _, response = log_in("owner", "wrong-password")  # the last one allowed
    assert_locked_out(response)
    client, response = log_in("owner", "owner-pass-123")
    assert_locked_out(response)
    assert not logged_in(client)


def test_fewer_failures_than_the_limit_still_let_the_owner_in_and_start_again(owner):
    for _ in range(LIMIT - 1):
        log_in("owner", "wrong-password")
    client, response = log_in("owner", "owner-pass-123")
    assert response.status_code == 302 and logged_in(client)
    for _ in range(LIMIT - 1):  # the success reset the count
        log_in("owner", "wrong-password")
    client, _ = log_in("owner", "owner-pass-123")
    assert logged_in(client)


def test_an_address_that_guessed_too_often_is_refused_for_every_account(owner, other_user):
    for i in range(LIMIT):
        log_in(f"guess{i}", "wrong-password", address="10.0.0.9")
    client, response = log_in("other", "other-pass-123", address="10.0.0.9")
    assert_locked_out(response)
    assert not logged_in(client)
    client, _ = log_in("other", "other-pass-123", address="10.0.0.10")  # another address
    assert logged_in(client)


def test_an_account_guessed_from_many_addresses_is_refused_from_any(owner, other_user):
    for i in range(LIMIT):
        log_in("owner", "wrong-password", address=f"10.0.1.{i}")
    client, response = log_in("owner", "owner-pass-123", address="10.0.2.1")
    assert_locked_out(response)
    client, _ = log_in("other", "other-pass-123", address="10.0.2.1")  # another account
    assert logged_in(client)


def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(owner, other_user, settings):
    settings.TRUSTED_PROXIES = 1
    for i in range(LIMIT):
        log_in(f"guess{i}", "x", address="10.9.9.9", HTTP_X_FORWARDED_FOR="203.0.113.7")
    _, response = log_in(
        "other", "other-pass-123", address="10.9.9.9", HTTP_X_FORWARDED_FOR="203.0.113.7"
    )
    assert response.status_code == 429
    client, _ = log_in(
        "other", "other-pass-123", address="10.9.9.9", HTTP_X_FORWARDED_FOR="198.51.100.2"
    )
    assert logged_in(client)  # another visitor behind the same proxy


@pytest.mark.asyncio
async def test_static_files_carry_the_security_headers():
    from config.asgi import application

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/static/css/app.css",
        "raw_path": b"/static/css/app.css",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    body = b""
    while True:  # the file streams in chunks
        chunk = await communicator.receive_output(10)
        body += chunk.get("body", b"")
        if not chunk.get("more_body"):
            break
    assert start["status"] == 200 and b"body" in body
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"


# -- error pages ----------------------------------------------------------------------


def forbidden(request):
    raise PermissionDenied


def broken(request):
    raise RuntimeError("a bug")


urlpatterns = [path("forbidden/", forbidden), path("broken/", broken), *product_urls]


def assert_error_page(response, status, heading):
    assert response.status_code == status
    page = response.content.decode()
    assert heading in page
    assert '<header class="top">' in page and "Pipeline designer" in page
    assert 'id="back-home"' in page and 'href="/"' in page
    assert "Traceback" not in page


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.ROOT_URLCONF = __name__


def test_error_pages_are_in_the_layout_with_a_way_home(production, client, owner):
    client.force_login(owner)
    assert_error_page(client.get("/no/such/page/"), 404, "Page not found")
    assert_error_page(client.get("/pipelines/00000000-0000-0000-0000-000000000000/"), 404, "Page not found")  # fmt: skip
    assert_error_page(client.get("/forbidden/"), 403, "You can't open this page")
    assert 'class="user">owner' in client.get("/no/such/page/").content.decode()
    quiet = Client(raise_request_exception=False)
    assert_error_page(quiet.get("/broken/"), 500, "Something went wrong on our side")
    strict = Client(enforce_csrf_checks=True)
    assert_error_page(
        strict.post("/accounts/login/", {"username": "owner", "password": "x"}),
        403,
        "The form could not be sent",
    )
