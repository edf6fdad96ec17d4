"""Two reviewers, each in a browser of their own, review the same run while it runs;
their progress appears live on the admin's run page."""

import pytest

from runner import engine
from runner.models import Member, Record, Review, ReviewPlan
from runner.spec import library
from tests.integration.helpers import provider_for

from .conftest import login

pytestmark = [pytest.mark.django_db(transaction=True)]


def reviewed_on(page, name):
    cell = page.locator(f'#reviewers tr[data-reviewer="{name}"] [data-col="reviewed"]')
    return int(cell.inner_text().replace(",", "") or 0)


def test_two_reviewers_review_while_the_run_goes_and_the_admin_sees_it_live(
    browser, live_stack, page, owner, django_user_model, fake_llm
):
    reviewers = []
    for name in ("ria", "sol"):
        user = django_user_model.objects.create_user(name, password=f"{name}-pass-123")
        reviewers.append(user)
    fake_llm.configure(latency=0.3)
    provider = provider_for(owner, fake_llm, concurrency=2)
    run = engine.launch_run(
        owner,
        library.get("qa-from-topics").spec,
        [{"topic": t} for t in ("Tea", "Rain", "Bees", "Tides")],
        providers={"*": provider.pk},
    )
    for user in reviewers:
        Member.objects.create(workspace=run.workspace, user=user, role="reviewer")

    # The admin assigns the review through the page, then watches the run.
    login(page, owner.username, "owner-pass-123")
    page.wait_for_url(lambda url: "/accounts/login/" not in url)
    page.goto(f"/runs/{run.code}/assign/")
    for user in reviewers:
        page.check(f'input[name="reviewers"][value="{user.pk}"]')
    page.fill('input[name="overlap"]', "1")
    page.click('#assign-form button[type="submit"]')
    page.wait_for_url(f"**/runs/{run.code}/")
    page.wait_for_selector('#conn[data-conn="open"]')
    page.wait_for_selector('#reviewers tr[data-reviewer="ria"]')
    assert ReviewPlan.objects.get(run=run).reviewers == [u.pk for u in reviewers]

    contexts = []
    try:
        for user in reviewers:
            ctx = browser.new_context(base_url=live_stack)
            contexts.append(ctx)
            rp = ctx.new_page()
            rp.console_errors = []
            rp.on(
                "console", lambda m, rp=rp: m.type == "error" and rp.console_errors.append(m.text)
            )
            login(rp, user.username, f"{user.username}-pass-123")
            rp.wait_for_url(lambda url: "/accounts/login/" not in url)
            rp.goto(f"/runs/{run.code}/queue/")
            user.page = rp
        first = reviewers[0].page
        first.wait_for_selector("#record", timeout=60000)
        first.keyboard.press("?")  # the list of keys
        assert first.locator("#cheat-sheet").is_visible()
        first.keyboard.press("Escape")
        assert first.locator("#cheat-sheet").is_hidden()
        for _ in range(2):  # each accepts two records from their queue, by keyboard
            for user in reviewers:
                rp = user.page
                rp.wait_for_selector("#record", timeout=60000)
                shown = rp.locator("#record").get_attribute("data-record")
                rp.keyboard.press("a")
                rp.wait_for_function(
                    f"() => !document.querySelector('#record') || "
                    f"document.querySelector('#record').dataset.record !== '{shown}'",
                    timeout=30000,
                )
        run.refresh_from_db()
        # The admin's page shows both reviewers' progress without a reload.
        page.wait_for_function(
            "() => ['ria', 'sol'].every(n => Number(document.querySelector("
            '`#reviewers tr[data-reviewer="${n}"] [data-col="reviewed"]`)?.textContent) >= 2)',
            timeout=30000,
        )
        for user in reviewers:
            assert (
                reviewed_on(page, user.username)
                == Review.objects.filter(reviewer=user, decision=Record.ACCEPTED).count()
                == 2
            )
            assert user.page.console_errors == []
        # Each reviewed only records assigned to them.
        plan = ReviewPlan.objects.get(run=run)
        for review in Review.objects.filter(record__run=run):
            assert plan.reviewers_of(review.record_id) == [review.reviewer_id]
        assert page.console_errors == []
    finally:
        for ctx in contexts:
            ctx.close()
