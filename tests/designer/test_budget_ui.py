"""Cost and budget in the pages: the launch page's cost estimate and budget, and a run
paused on its budget (its message, the spend, and raising the budget).

Everything here is the Django test client on the database: no worker runs, and the
drivers a resumed run would start are recorded instead of queued.
"""

import pytest
from django.urls import reverse

from designer.actions import create_pipeline
from runner.engine import estimate_run
from runner.models import Provider, Run, Task
from runner.spec import library
from runner.spec import money as costs

from .test_runs import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def qa(owner):
    return create_pipeline(owner, library.get("qa-from-topics").spec, name="QA")


def make_provider(owner, name="fake", prices=None, model="m"):
    p = Provider(
        owner=owner,
        name=name,
        base_url="http://127.0.0.1:9/v1",
        default_model=model,
        prices=prices or {},
    )
    p.set_api_key("sk-test-1234")
    p.save()
    return p


def launch_url(pipeline, suffix=""):
    return f"/pipelines/{pipeline.code}/launch/{suffix}"


def paused_run(owner, spent="1.25", budget="1.00"):
    budget = costs.parse_dollars(budget)
    run = make_run(owner, topics=1, status=Run.PAUSED, budget_micro=budget)
    micro = costs.parse_dollars(spent)
    Run.objects.filter(pk=run.pk).update(spent=micro, error=costs.paused_message(micro, budget))
    run.refresh_from_db()
    return run


# -- launch: cost estimate and budget ------------------------------------------------------


def test_the_launch_page_shows_the_cost_with_the_providers_prices(owner_client, owner, qa):
    provider = make_provider(owner, prices={"*": [1, 2]})
    page = owner_client.get(launch_url(qa)).text
    # the only provider is the choice, so the cost shows at once, next to the calls
    assert f'<option value="{provider.code}" selected>' in page
    assert 'id="cost-estimate"' in page and "Cost: <strong>about $" in page
    assert "cost unknown" not in page
    est = estimate_run(owner, qa.spec(), [{}], providers={"*": provider.pk})
    assert f"about {costs.fmt_dollars(est.cost_micro)} for {est.calls:,} calls" in page
    assert 'name="budget"' in page and "Budget (dollars)" in page
    # choosing a provider asks for its cost (htmx), for the inputs typed so far
    assert f'hx-post="{launch_url(qa, "cost/")}"' in page
    r = owner_client.post(
        launch_url(qa, "cost/"),
        {"source": "one", "input_topic": "Bees", "provider": str(provider.code)},
    )
    assert r.status_code == 200 and "Cost: <strong>about $" in r.text
    assert owner_client.get(launch_url(qa, "cost/")).status_code == 405


def test_a_provider_without_prices_says_the_cost_is_unknown(owner_client, owner, qa):
    make_provider(owner, name="a-priced", prices={"*": [1, 2]})
    unpriced = make_provider(owner, name="b-free", model="llama-3")
    page = owner_client.get(launch_url(qa)).text
    assert "Choose a provider to see what the run would cost" in page  # two: none chosen
    r = owner_client.post(
        launch_url(qa, "cost/"), {"source": "one", "provider": str(unpriced.code)}
    )
    assert "cost unknown: the provider has no price for llama-3" in r.text
    # a file's rows and the chosen provider: the preview updates the cost too
    from django.core.files.uploadedfile import SimpleUploadedFile

    f = SimpleUploadedFile("t.csv", b"topic\nBees\nAnts\n", content_type="text/csv")
    r = owner_client.post(
        launch_url(qa, "preview/"),
        {"file": f, "provider": str(unpriced.code)},
        HTTP_HX_REQUEST="true",
    )
    assert 'id="cost-estimate"' in r.text and 'hx-swap-oob="true"' in r.text
    assert "cost unknown: the provider has no price for llama-3" in r.text


def test_launching_with_a_budget_stores_it_in_dollars(owner_client, owner, qa, started):
    provider = make_provider(owner, prices={"*": [1, 2]})
    r = owner_client.post(
        launch_url(qa),
        {"source": "one", "input_topic": "Bees", "provider": str(provider.code), "budget": "2.50"},
    )
    run = Run.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/runs/{run.code}/"
    assert run.budget_micro == 2_500_000  # $2.50
    assert started == [run.pk]
    # no budget: none
    owner_client.post(
        launch_url(qa), {"source": "one", "input_topic": "Ants", "provider": str(provider.code)}
    )
    assert Run.objects.exclude(pk=run.pk).get().budget_micro is None


@pytest.mark.parametrize(
    "value, message",
    [
        ("0", "The budget must be at least $0.01."),
        ("-3", "The budget must be at least $0.01."),
        ("lots", "Give the budget as a number of dollars, like 5 or 12.50."),
        ("1.23456", "Give the budget in dollars and cents, like 12.50."),
    ],
)
def test_a_bad_launch_budget_is_refused_in_plain_words(owner_client, owner, qa, value, message):
    provider = make_provider(owner, prices={"*": [1, 2]})
    r = owner_client.post(
        launch_url(qa),
        {"source": "one", "input_topic": "Bees", "provider": str(provider.code), "budget": value},
    )
    assert r.status_code == 200
    assert message in r.text
    assert Run.objects.count() == 0


# -- a run paused on its budget ----------------------------------------------------------------


def test_a_paused_run_shows_its_message_the_spend_and_the_raise_budget_form(owner_client, owner):
    run = paused_run(owner)
    page = owner_client.get(reverse("designer:run-detail", args=[run.code])).text
    assert 'class="paused-box" id="paused-box" data-show="paused" role="status" >' in page
    assert "Paused: spent $1.25 of the $1.00 budget; raise the budget to continue" in page
    assert f'action="/runs/{run.code}/budget/"' in page and "Raise budget" in page
    assert '<span data-bind="spent">$1.25</span> of a <span id="budget">$1.00</span> budget' in page
    # the message is not shown twice, and resuming is not offered: raising the budget is
    assert 'class="run-error" data-bind="error" hidden' in page
    assert 'data-show="resumable" hidden' in page


def test_a_running_run_hides_the_paused_box_and_shows_live_spend(owner_client, owner):
    provider = make_provider(owner, prices={"*": [1, 2]})
    run = make_run(owner, topics=1, budget_micro=5_000_000, providers={"*": provider.pk})
    Task.objects.filter(run=run).update(cost=100_000)  # 5 tasks x $0.10
    page = owner_client.get(reverse("designer:run-detail", args=[run.code])).text
    assert 'data-show="paused" role="status" hidden' in page
    assert '<span data-bind="spent">$0.50</span> of a <span id="budget">$5.00</span>' in page
    run = make_run(owner, topics=1, name="no budget")
    page = owner_client.get(reverse("designer:run-detail", args=[run.code])).text
    assert '<span data-bind="spent">$0.00</span> <span class="muted">(no budget)</span>' in page


def test_raising_the_budget_resumes_the_paused_run(owner_client, owner, started):
    run = paused_run(owner)
    url = reverse("designer:run-budget", args=[run.code])
    assert url == f"/runs/{run.code}/budget/"
    assert owner_client.get(url).status_code == 405
    r = owner_client.post(url, {"budget": "3"}, follow=True)
    run.refresh_from_db()
    assert run.status == Run.QUEUED and run.budget_micro == 3_000_000 and run.error == ""
    assert started == [run.pk]
    assert "The budget is now $3.00: the run goes on." in r.text


def test_a_budget_still_spent_keeps_the_run_paused(owner_client, owner, started):
    run = paused_run(owner, spent="1.25")
    r = owner_client.post(
        reverse("designer:run-budget", args=[run.code]), {"budget": "1.10"}, follow=True
    )
    run.refresh_from_db()
    assert run.status == Run.PAUSED and run.budget_micro == 1_100_000 and started == []
    assert "it stays paused" in r.text
    assert "Paused: spent $1.25 of the $1.10 budget" in r.text


@pytest.mark.parametrize(
    "value, message",
    [
        ("", "Give the new budget in dollars, like 5 or 12.50."),
        ("ten", "“ten” is not an amount of dollars; write it like 5 or 12.50."),
        ("0", "The budget must be at least $0.01."),
        ("-5", "The budget must be at least $0.01."),
        ("nan", "Give the new budget in dollars, like 5 or 12.50."),
        ("1.23456", "Give the budget in dollars and cents, like 12.50."),
    ],
)
def test_a_bad_budget_is_refused_in_plain_words(owner_client, owner, started, value, message):
    run = paused_run(owner)
    r = owner_client.post(
        reverse("designer:run-budget", args=[run.code]), {"budget": value}, follow=True
    )
    assert f"The budget was not changed: {message}" in r.text
    run.refresh_from_db()
    assert run.status == Run.PAUSED and run.budget_micro == 1_000_000 and started == []


def test_another_user_gets_404_on_the_budget_url(client, owner, other_user, started):
    run = paused_run(owner)
    url = reverse("designer:run-budget", args=[run.code])
    assert client.post(url, {"budget": "10"}).status_code == 302  # anonymous: log in
    client.force_login(other_user)
    assert client.post(url, {"budget": "10"}).status_code == 404
    run.refresh_from_db()
    assert run.status == Run.PAUSED and run.budget_micro == 1_000_000 and started == []
