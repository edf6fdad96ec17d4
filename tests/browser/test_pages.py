"""Every page, as a person would open it, at a wide and a narrow window.

On each page: nothing runs past the right edge (no horizontal scrolling), the
console shows no error (a blocked inline style counts), and axe-core, run in the
page, finds no serious or critical accessibility problem, in the light and the dark
theme. A screenshot of each page is saved to var/screenshots/ for a person to look at.
"""

from pathlib import Path

import pytest

from designer.actions import create_pipeline, save_version
from runner.models import Provider, Record, Run, Task
from runner.spec import PipelineSpec, library

from ..designer.test_runs import add_failures, make_run
from .conftest import login
from .test_designer import drag, drop_at_end

pytestmark = [pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
# Loaded by the test into each page from the server's static files (the strict CSP
# refuses an inline script); no page of the product names it.
AXE = "/static/vendor/axe-core-4.14.1/axe.min.js"
SHOTS = ROOT / "var" / "screenshots"
WIDTHS = [1280, 800]
HEIGHT = 900

OVERFLOW = """() => {
  const doc = document.documentElement;
  if (doc.scrollWidth <= doc.clientWidth) return null;
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > doc.clientWidth + 1)
    .slice(0, 5)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
              (e.className && typeof e.className === 'string' ? '.' + e.className.split(' ').join('.') : ''));
  return {scrollWidth: doc.scrollWidth, clientWidth: doc.clientWidth, wide};
}"""

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 4).map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
}"""


def site(owner, fake_llm):
    """A provider, an empty pipeline, a pipeline from a template with two versions, and a
    finished run with records, a failed task and a flagged record: the pages' addresses."""
    provider = Provider(owner=owner, name="Local fake", base_url=fake_llm.url, default_model="m")
    provider.set_api_key("sk-test-1234")
    provider.save()
    empty = create_pipeline(owner, PipelineSpec(name="Empty"), name="A new pipeline")
    spec = library.get("qa-from-topics").spec
    qa = create_pipeline(owner, spec, name="QA from topics")
    save_version(qa, spec.model_copy(update={"description": "Second version"}), note="edited")
    run = make_run(owner, topics=2, status=Run.COMPLETED_WITH_FAILURES, name="QA run")
    add_failures(run, 1)
    make_run(owner, topics=1, status=Run.FAILED, name="Broken run", error="No provider answered.")
    record = Record.objects.filter(run=run).order_by("seq").first()
    task = Task.objects.filter(run=run, step=1).order_by("seq").first()
    return {
        "home": "/",
        "pipelines": "/pipelines/",
        "import": "/pipelines/import/",
        "templates": "/templates/",
        "pipeline": f"/pipelines/{qa.code}/",
        "rename": f"/pipelines/{qa.code}/rename/",
        "delete": f"/pipelines/{qa.code}/delete/",
        "editor-new": f"/pipelines/{empty.code}/edit/",
        "editor": f"/pipelines/{qa.code}/edit/",
        "versions": f"/pipelines/{qa.code}/versions/",
        "version": f"/pipelines/{qa.code}/versions/1/",
        "launch": f"/pipelines/{qa.code}/launch/",
        "runs": "/runs/",
        "run": f"/runs/{run.code}/",
        "tasks": f"/runs/{run.code}/tasks/",
        "task": f"/runs/{run.code}/tasks/{task.pk}/",
        "records": f"/runs/{run.code}/records/",
        "review": f"/runs/{run.code}/review/?record={record.pk}",
        "export": f"/runs/{run.code}/export/",
        "providers": "/providers/",
        "provider-new": "/providers/new/",
        "provider": f"/providers/{provider.code}/",
        "provider-delete": f"/providers/{provider.code}/delete/",
        "people": "/people/",
        "assign": f"/runs/{run.code}/assign/",
        "agreement": f"/runs/{run.code}/agreement/",
        "not-found": "/no-such-page/",
    }


# The browser's own line for a page answered with an error status, which that page means to be.
REFUSED = "Failed to load resource: the server responded with a status of {}"


def check(page, name, width, problems, status=None):
    """Check the page in the browser now; add what is wrong to `problems`, save a screenshot."""
    page.wait_for_load_state("load")
    if status:
        page.console_errors[:] = [
            e for e in page.console_errors if not e.startswith(REFUSED.format(status))
        ]
    overflow = page.evaluate(OVERFLOW)
    if overflow:
        problems.append(f"{name} at {width}px scrolls sideways: {overflow}")
    if page.console_errors:
        problems.append(f"{name} at {width}px logged errors: {page.console_errors}")
        page.console_errors.clear()
    if not page.evaluate("typeof axe !== 'undefined'"):
        page.add_script_tag(url=AXE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("dark", "light"):
        page.emulate_media(color_scheme=scheme)
        violations = page.evaluate(AXE_RUN)
        if violations:
            problems.append(f"{name} at {width}px ({scheme}), axe: {violations}")
        suffix = "-dark" if scheme == "dark" else ""
        page.screenshot(path=str(SHOTS / f"{name}-{width}{suffix}.png"), full_page=True)


def report(problems):
    print(f"\nscreenshots: {SHOTS}")
    return "\n".join(problems)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_and_is_accessible(page, owner, fake_llm, width):
    addresses = site(owner, fake_llm)
    page.set_viewport_size({"width": width, "height": HEIGHT})
    login(page, "owner", "owner-pass-123")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    problems = []
    for name, url in addresses.items():
        response = page.goto(url)
        check(page, name, width, problems, status=404 if name == "not-found" else None)
        assert response.status == (404 if name == "not-found" else 200), name
    # the designer's side panel with a step's form open
    page.goto(addresses["editor"])
    page.locator("#steps .edit-step").first.click()
    page.wait_for_selector("#step-form")
    check(page, "editor-step", width, problems)
    assert problems == [], report(problems)
    report(problems)


@pytest.mark.parametrize("width", WIDTHS)
def test_pages_without_an_account_fit_and_are_accessible(page, django_user_model, width):
    page.set_viewport_size({"width": width, "height": HEIGHT})
    problems = []
    page.goto("/setup/")  # no account yet
    check(page, "setup", width, problems)
    django_user_model.objects.create_user("owner", password="owner-pass-123")
    page.goto("/accounts/login/")
    check(page, "login", width, problems)
    page.fill("input[name=password]", "wrong")
    page.fill("input[name=username]", "owner")
    page.click("button[type=submit]")
    page.wait_for_selector(".errorlist, .problems")
    check(page, "login-error", width, problems)
    page.context.clear_cookies()  # the form's CSRF cookie is gone: the server refuses it
    page.fill("input[name=password]", "owner-pass-123")
    page.click("button[type=submit]")
    page.wait_for_selector("#error-page")
    check(page, "forbidden", width, problems, status=403)
    assert problems == [], report(problems)
    report(problems)


def test_dragging_steps_logs_no_error(page, owner):
    """Dragging writes no style attribute the CSP would refuse: SortableJS styles its copy
    through the CSSOM, and htmx is told not to copy style attributes when it swaps."""
    qa = create_pipeline(owner, library.get("qa-from-topics").spec, name="QA from topics")
    page.set_viewport_size({"width": 1280, "height": HEIGHT})
    login(page, "owner", "owner-pass-123")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/pipelines/{qa.code}/edit/")
    page.locator("#steps .edit-step").first.click()
    page.wait_for_selector("#step-form")
    drop_at_end(page, "text")  # from the palette, with a step's form open
    cards = page.locator("#steps > li.step-card")
    names = cards.locator(".step-name").all_inner_texts()
    drag(page, cards.nth(0).locator(".card-head"), cards.nth(2).bounding_box())
    page.wait_for_function(
        "first => document.querySelector('#steps .step-name').textContent !== first",
        arg=names[0],
    )
    assert page.locator("#steps .step-name").all_inner_texts() != names
    assert page.console_errors == []
