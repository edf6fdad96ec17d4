"""The pages load in a real browser, with nothing from outside the server."""

import pytest

from .conftest import login

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_login_and_home_page(page, django_user_model):
    django_user_model.objects.create_user("ada", password="a-long-password-1")
    page.goto("/")
    assert "/accounts/login/" in page.url  # anonymous visitors are sent to log in
    login(page, "ada", "a-long-password-1")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    assert page.locator("header .user").inner_text() == "ada"
    assert page.locator("#workspace-choice").inner_text() == "ada's workspace"
    assert page.console_errors == []
