"""The first account is made in the browser, on an empty database."""

import pytest

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_create_the_first_account_and_land_on_pipelines(page, django_user_model):
    assert not django_user_model.objects.exists()
    page.goto("/")
    page.wait_for_url("**/setup/")
    page.fill("input[name=username]", "grace")
    page.fill("input[name=password1]", "short")
    page.fill("input[name=password2]", "short")
    page.click("button[type=submit]")
    assert "This password is too short" in page.locator("main").inner_text()
    assert not django_user_model.objects.exists()

    page.fill("input[name=password1]", "a-long-password-1")
    page.fill("input[name=password2]", "a-long-password-1")
    page.click("button[type=submit]")
    page.wait_for_url("**/pipelines/")
    assert "grace" in page.locator("header").inner_text()
    assert page.locator("h1").inner_text() == "Pipelines"
    assert django_user_model.objects.get().is_superuser

    page.goto("/setup/")  # refused once an account exists: the log-in page sends you home
    assert "/setup/" not in page.url and "/accounts/login/" not in page.url
    assert "Hello, grace" in page.locator("h1").inner_text()
    assert page.console_errors == []
