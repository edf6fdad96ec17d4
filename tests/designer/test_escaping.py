"""LLM output that holds HTML or script is shown as text on every page, never as markup."""

import pytest
from django.urls import reverse

from runner.models import Record, Task

from .test_runs import XSS, add_failures, make_run

pytestmark = pytest.mark.django_db

ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"


@pytest.fixture
def hostile_run(owner):
    """A run whose replies, parsed outputs, prompts, errors and records all carry markup."""
    run = make_run(owner, topics=1, name=f"Run {XSS}")
    Task.objects.filter(run=run).update(
        raw_output=XSS,
        parsed=XSS,
        model=XSS,
        context={"topic": XSS},
        messages=[{"role": "user", "content": XSS}],
        attempt_log=[{"n": 1, "ok": False, "error": XSS, "status": 500}],
    )
    add_failures(run, 2, reason=f"the provider said: {XSS}")
    for rec in Record.objects.filter(run=run):
        Record.objects.filter(pk=rec.pk).update(data={**rec.data, "answer": XSS, XSS: "key"})
    return run


def pages(run):
    task = Task.objects.filter(run=run, step=2).first()
    record = Record.objects.filter(run=run).first()
    c = run.code
    return {
        "runs list": reverse("designer:run-list"),
        "run page": reverse("designer:run-detail", args=[c]),
        "tasks": reverse("designer:run-tasks", args=[c]),
        "failed tasks": reverse("designer:run-tasks", args=[c]) + "?status=failed",
        "task": reverse("designer:task-detail", args=[c, task.pk]),
        "records table": reverse("designer:run-records", args=[c]),
        "review": reverse("designer:run-review", args=[c]) + f"?record={record.pk}",
        "export": reverse("designer:run-export", args=[c]),
    }


def test_markup_in_llm_output_is_escaped_on_every_page(client, owner, hostile_run):
    client.force_login(owner)
    for name, url in pages(hostile_run).items():
        page = client.get(url).content.decode()
        assert "<script>alert" not in page, name
        assert "<img src=x" not in page, name
        assert "onerror=alert(2)>" not in page, name
        assert ESCAPED in page or "\\u003Cscript\\u003E" in page, name


def test_run_page_failures_and_state_are_escaped(client, owner, hostile_run):
    client.force_login(owner)
    page = client.get(reverse("designer:run-detail", args=[hostile_run.code])).content.decode()
    assert f'<strong>2</strong> &times; <span class="reason">the provider said: {ESCAPED}' in page
    # the state the script starts from is JSON in a non-executable tag, with < escaped
    start = page.index('<script id="run-state" type="application/json">')
    blob = page[start : page.index("</script>", start)]
    assert "<script>" not in blob[10:] and "\\u003Cscript\\u003E" in blob


def test_inspector_and_review_show_the_markup_as_text(client, owner, hostile_run):
    client.force_login(owner)
    urls = pages(hostile_run)
    task_page = client.get(urls["task"]).content.decode()
    assert f'<pre id="raw-output">{ESCAPED}</pre>' in task_page
    assert f'<pre id="prompt-1">{ESCAPED}</pre>' in task_page
    review = client.get(urls["review"]).content.decode()
    assert f'<pre class="value">{ESCAPED}</pre>' in review
    assert f"<dt>{ESCAPED}</dt>" in review  # a field name from a reply, too
    table = client.get(urls["records table"]).content.decode()
    assert f"<th>{ESCAPED}</th>" in table


def test_no_template_marks_output_safe():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "templates" / "runs"
    for path in root.glob("*.html"):
        text = path.read_text()
        assert "|safe" not in text and "autoescape off" not in text, path.name
    for name in ("run.js", "review.js"):
        js = (root.parents[1] / "static" / "js" / name).read_text()
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js and "eval(" not in js
