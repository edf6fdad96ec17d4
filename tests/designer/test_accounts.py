"""Accounts: the first account made in the browser, logging in and out, anonymous visitors."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PAGES = ["/", "/pipelines/", "/templates/", "/providers/", "/pipelines/import/"]


def test_with_no_account_every_page_leads_to_setup(client):
    for url in PAGES + ["/accounts/login/"]:
        response = client.get(url, follow=True)
        assert response.redirect_chain, url
        assert response.redirect_chain[-1][0].startswith("/setup/"), url
        assert b"Create the account" in response.content


def test_setup_creates_a_superuser_logs_in_and_opens_pipelines(client, django_user_model):
    response = client.post(
        "/setup/",
        {"username": "ada", "password1": "a-long-password-1", "password2": "a-long-password-1"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/pipelines/"
    user = django_user_model.objects.get()
    assert user.username == "ada"
    assert user.is_superuser and user.is_staff
    assert user.check_password("a-long-password-1")
    page = client.get("/pipelines/")
    assert page.status_code == 200
    assert b"ada" in page.content


def test_setup_checks_the_passwords(client, django_user_model):
    response = client.post(
        "/setup/", {"username": "ada", "password1": "a-long-password-1", "password2": "other-one"}
    )
    assert response.status_code == 200
    assert "password fields didn’t match" in response.content.decode()
    response = client.post(
        "/setup/", {"username": "ada", "password1": "password", "password2": "password"}
    )
    assert "This password is too common" in response.content.decode()
    response = client.post("/setup/", {"username": "", "password1": "", "password2": ""})
    assert "This field is required" in response.content.decode()
    assert not django_user_model.objects.exists()


def test_setup_is_refused_once_an_account_exists(client, owner, django_user_model):
    assert client.get("/setup/")["Location"] == "/accounts/login/"
    response = client.post(
        "/setup/",
        {"username": "mallory", "password1": "a-long-password-1", "password2": "a-long-password-1"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert list(django_user_model.objects.values_list("username", flat=True)) == ["owner"]


def test_anonymous_visitors_are_sent_to_log_in(client, owner):
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/"), url
    assert client.get("/accounts/login/").status_code == 200


def test_log_in_and_out(client, owner):
    response = client.post(
        "/accounts/login/?next=/pipelines/",
        {"username": "owner", "password": "owner-pass-123", "next": "/pipelines/"},
    )
    assert response.status_code == 302 and response["Location"] == "/pipelines/"
    assert client.get("/pipelines/").status_code == 200
    wrong = Client().post("/accounts/login/", {"username": "owner", "password": "nope"})
    assert wrong.status_code == 200
    assert b"That name and password do not match an account" in wrong.content
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert client.get("/pipelines/").status_code == 302


def test_csrf_is_enforced(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = client.post("/pipelines/new/", {"name": "No token"})
    assert response.status_code == 403
    anonymous = Client(enforce_csrf_checks=True)
    response = anonymous.post("/accounts/login/", {"username": "owner", "password": "x"})
    assert response.status_code == 403


def test_pages_carry_the_content_security_policy_and_no_inline_code(client, owner):
    client.force_login(owner)
    for url in PAGES:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "script-src 'self'" in response["Content-Security-Policy"]
        html = response.content.decode()
        assert "<script>" not in html and 'style="' not in html and "hx-on" not in html, url
