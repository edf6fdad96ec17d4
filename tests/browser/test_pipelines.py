"""Pipelines in the browser: create, rename, duplicate, delete, and use a template."""

import re

import pytest

from designer.models import Pipeline

from .conftest import login

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("lin", password="a-long-password-1")


def row(page, name):
    return page.locator("#pipelines tbody tr", has=page.locator("a.pipeline-name", has_text=name))


def landed(page):
    """A new pipeline opens in the editor (or on its page before the editor exists).

    Only the address is checked: the editor has its own tests, so what it loads is
    not counted against these pages.
    """
    page.wait_for_url(re.compile(r"/pipelines/[0-9a-f-]{36}/(edit/)?$"), wait_until="commit")
    page.wait_for_load_state("load")
    page.console_errors.clear()


def test_create_rename_duplicate_and_delete(page, user):
    login(page, "lin", "a-long-password-1")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto("/pipelines/")

    page.click("#create-pipeline button[type=submit]")  # no name: the error shows beside the field
    page.locator("#create-pipeline .errorlist").wait_for()
    assert "Give the pipeline a name." in page.locator("#create-pipeline").inner_text()

    page.fill("#create-pipeline input[name=name]", "Trivia")
    page.click("#create-pipeline button[type=submit]")
    landed(page)
    pipeline = Pipeline.objects.get(owner=user)
    assert str(pipeline.code) in page.url

    page.goto("/pipelines/")
    row(page, "Trivia").get_by_role("link", name="Rename").click()
    page.fill("#rename-pipeline input[name=name]", "Trivia questions")
    page.click("#rename-pipeline button[type=submit]")
    page.wait_for_url("**/pipelines/")
    assert row(page, "Trivia questions").count() == 1

    row(page, "Trivia questions").get_by_role("button", name="Duplicate").click()
    page.wait_for_url("**/pipelines/")
    assert row(page, "Copy of Trivia questions").count() == 1

    row(page, "Copy of Trivia questions").get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete the pipeline").click()
    page.wait_for_url("**/pipelines/")
    assert "Deleted the pipeline “Copy of Trivia questions”" in page.locator("main").inner_text()
    assert row(page, "Copy of Trivia questions").count() == 0
    assert list(Pipeline.objects.values_list("name", flat=True)) == ["Trivia questions"]
    assert page.console_errors == []


def test_use_a_template(page, user):
    login(page, "lin", "a-long-password-1")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto("/templates/")
    card = page.locator("article[data-template=qa-from-topics]")
    assert "subtopics (1 → N)" in card.inner_text()
    card.get_by_role("button", name="Use this template").click()
    landed(page)
    pipeline = Pipeline.objects.get(owner=user)
    assert str(pipeline.code) in page.url
    assert [s.name for s in pipeline.spec().steps] == ["subtopics", "question", "answer"]
    page.goto("/pipelines/")
    assert row(page, "Questions and answers from topics").locator("td").nth(1).inner_text() == "3"
    assert page.console_errors == []
