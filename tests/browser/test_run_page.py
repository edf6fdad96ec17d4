"""The run page in a real browser on the real stack (daphne, a Celery worker, Redis, a fake LLM).

A run's counts move live while it runs; a failed task's reason is shown and
"retry failed" finishes it; LLM output with markup arrives as text, never as script.
"""

import re
import time

import pytest

from runner import engine
from runner.events import progress
from runner.models import Record, Run, Task
from runner.spec import library
from tests.integration.helpers import provider_for, wait_for

from ..designer.test_runs import XSS, add_failures, make_run
from .conftest import login

pytestmark = [pytest.mark.django_db(transaction=True)]


def launch(owner, fake_llm, topics, latency=0.0):
    fake_llm.configure(latency=latency)
    provider = provider_for(owner, fake_llm, concurrency=3)
    return engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": t} for t in topics],
        providers={"*": provider.pk},
    )


def done_count(page):
    return int(page.locator('[data-bind="finished_tasks"]').inner_text())


def logged_in(page, owner):
    login(page, owner.username, "owner-pass-123")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def test_counts_move_live_while_the_run_goes(page, owner, fake_llm):
    run = launch(owner, fake_llm, ["Tea", "Rain", "Volcanoes", "Tides", "Bees"], latency=0.3)
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/")
    page.wait_for_selector('#conn[data-conn="open"]')
    page.wait_for_function(
        "() => Number(document.querySelector('[data-bind=\"finished_tasks\"]').textContent) > 0"
    )
    first = done_count(page)
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-bind=\"finished_tasks\"]').textContent) > {first}"
    )
    assert done_count(page) > first
    assert page.locator('[data-bind="status"]').inner_text() in ("running", "completed")
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]').textContent === 'completed'",
        timeout=60000,
    )
    # 5 subtopic lists, 25 questions, 25 answers: every step's done count is in the page
    done = page.locator('tr[data-step] [data-col="done"]').all_inner_texts()
    assert done == ["5", "25", "25"]
    assert page.locator('[data-bind="records"]').first.inner_text() == "25"
    assert page.locator('[data-show="active"]').is_hidden()  # no cancel once it is over
    run.refresh_from_db()
    assert run.status == Run.COMPLETED
    assert page.console_errors == []


GRAPH_TEXTS = "(els) => els.map(e => e.textContent)"  # SVG text has no innerText


def test_the_drawing_counts_move_live_and_end_at_the_final_counts(page, owner, fake_llm):
    run = launch(owner, fake_llm, ["Tea", "Rain", "Volcanoes", "Tides", "Bees"], latency=0.3)
    page.set_viewport_size({"width": 800, "height": 900})
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/")
    page.wait_for_selector('#conn[data-conn="open"]')
    chain = page.locator('#run-graph [data-bind="chain"]')
    first = chain.inner_text()
    assert first.startswith("5 → ")
    # the drawing moves while the run goes: its chain changes before the run ends
    page.wait_for_function(
        "(first) => document.querySelector('#run-graph [data-bind=\"chain\"]').textContent !== first",
        arg=first,
    )
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]').textContent === 'completed'",
        timeout=60000,
    )
    # 5 topics → 25 subtopics → 25 questions → 25 answers, as the estimator planned
    page.wait_for_function("() => document.querySelector('#run-graph [data-bind=\"chain\"]').textContent === '5 → 25 → 25 → 25'")  # fmt: skip
    made = page.locator("#run-graph [data-graph-made]").evaluate_all(GRAPH_TEXTS)
    assert made == ["25 made", "25 made", "25 made"]
    planned = page.locator("#run-graph figcaption .muted").inner_text()
    assert planned == "(planned: 5 topics → 25 subtopics → 25 questions → 25 answers)"
    words = page.locator('#run-graph [data-graph-bind="words"]').evaluate_all(GRAPH_TEXTS)
    assert words == ["5 of 5 done", "25 of 25 done", "25 of 25 done"]
    # the drawing scrolls inside its own box; the page does not scroll sideways
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")  # fmt: skip
    box = page.locator("#run-graph")
    assert box.evaluate("e => e.scrollWidth > e.clientWidth")  # wider than the window: it scrolls
    assert page.console_errors == []


def test_a_failed_task_shows_its_reason_and_retry_failed_finishes_it(page, owner, fake_llm):
    fake_llm.configure(never_json_for=["Volcanoes"])
    provider = provider_for(owner, fake_llm, concurrency=3)
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": "Tea"}, {"topic": "Volcanoes"}],
        providers={"*": provider.pk},
    )
    wait_for(run)
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/")
    failures = page.locator("#failures li")
    assert failures.count() == 1
    assert re.search(r"1\s*×\s*reply was not a JSON list", failures.first.inner_text())
    assert page.locator('tr[data-step="0"] [data-col="failed"]').inner_text() == "1"

    fake_llm.configure()  # the provider behaves again
    page.click("#retry-failed")
    page.wait_for_url(f"**/runs/{run.code}/")
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]').textContent === 'completed'"
        " && document.querySelectorAll('#failures li').length === 0",
        timeout=60000,
    )
    assert page.locator('tr[data-step="0"] [data-col="failed"]').inner_text() == "0"
    assert page.locator('tr[data-step="2"] [data-col="done"]').inner_text() == "10"
    assert not Task.objects.filter(run=run, status=Task.FAILED).exists()
    assert page.console_errors == []


def test_markup_from_the_llm_is_shown_as_text_and_never_runs(page, owner):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    run = make_run(owner, topics=1, name="Hostile")
    Task.objects.filter(run=run).update(raw_output=XSS, context={"topic": XSS})
    Record.objects.filter(run=run).update(data={"topic": XSS, "answer": XSS})
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/")
    page.wait_for_selector('#conn[data-conn="open"]')
    # a failure with markup arrives over the websocket and is rendered by the script
    add_failures(run, 2, reason=f"bad reply {XSS}")
    progress.announce(run)
    page.wait_for_selector("#failures li")
    item = page.locator("#failures li").first
    assert item.inner_text().endswith(f"bad reply {XSS}")
    assert page.locator("#failures img, #failures script").count() == 0

    task = Task.objects.filter(run=run, step=2).first()
    page.goto(f"/runs/{run.code}/tasks/{task.pk}/")
    assert page.locator("#raw-output").inner_text() == XSS
    page.goto(f"/runs/{run.code}/tasks/")
    page.goto(f"/runs/{run.code}/records/")
    page.goto(f"/runs/{run.code}/review/")
    assert page.locator('[data-field="answer"] pre.value').inner_text() == XSS
    time.sleep(0.3)  # give any injected handler a moment to fire
    assert dialogs == []
    assert page.locator("main img").count() == 0
    assert page.console_errors == []


def test_the_page_reconnects_by_itself_and_catches_up(page, owner):
    # keep a handle on the page's sockets so the test can drop the connection
    page.add_init_script(
        "const Native = window.WebSocket; window.__sockets = [];"
        "window.WebSocket = function (url) { const s = new Native(url);"
        " window.__sockets.push(s); return s; };"
    )
    run = make_run(owner, topics=1)
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/")
    page.wait_for_selector('#conn[data-conn="open"]')
    page.evaluate("window.__sockets.forEach((s) => s.close())")
    page.wait_for_selector('#conn[data-conn="retry"]')
    # something changes while the page is away, and nobody announces it
    add_failures(run, 3, reason="changed while away")
    page.wait_for_function("() => window.__sockets.length > 1")
    page.wait_for_selector('#conn[data-conn="open"]')
    page.wait_for_selector("#failures li")
    assert "3 × changed while away" in page.locator("#failures li").first.inner_text()
    assert page.console_errors == []


def test_the_quality_panel_shows_duplicates_and_the_calls_they_saved(page, owner, fake_llm):
    from tests.integration.test_quality import DEDUP, KINDS, POOL

    fake_llm.configure(latency=0.05, pool_for={"Write questions about": POOL})
    provider = provider_for(owner, fake_llm, concurrency=4)
    topics = [{"topic": f"volcano {i}"} for i in range(4)]
    run = engine.launch_run(owner, DEDUP, topics, providers={"*": provider.pk})
    logged_in(page, owner)
    page.goto(f"/runs/{run.code}/")
    page.wait_for_function(
        "() => document.querySelector('[data-bind=\"status\"]').textContent === 'completed'",
        timeout=60000,
    )
    aside = Record.objects.filter(run=run).set_aside().count()
    assert aside == 4 * 6 - KINDS
    # The measure of the ended run reaches the page (now, or with the next state).
    line = page.locator("#quality .dedup-line")
    page.reload()
    line.wait_for()
    assert f"saving about {aside} call(s)" in line.inner_text()
    cells = page.locator("#quality-fields tbody tr").first.locator("td").all_inner_texts()
    assert cells[0] == "question" and cells[3] == "0"  # no duplicate left among the kept
    assert page.console_errors == []
