"""The runs list, the run page, cancel/resume/retry, and the task inspector.

Runs here are written straight to the database (no workers): a question/answer
run with tasks in every state, failures with their reasons, and records.
"""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from designer.actions import create_pipeline
from runner.models import Record, Run, Task
from runner.spec import library

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def make_run(owner, topics=2, status=Run.RUNNING, name="QA run", **extra):
    """A qa-from-topics run: per topic a subtopics task, 2 questions, 2 answers, 2 records."""
    spec = library.get("qa-from-topics").spec
    now = timezone.now()
    run = Run.objects.create(
        owner=owner,
        name=name,
        spec=spec.to_dict(),
        inputs=[{"topic": f"Topic {i}"} for i in range(topics)],
        status=status,
        started=now - timedelta(seconds=90),
        finished=None if status in (Run.QUEUED, Run.RUNNING) else now,
        **extra,
    )
    for i in range(topics):
        topic = f"Topic {i}"
        seq0 = f"{i:08d}"
        subs = [f"{topic} sub {j}" for j in range(2)]
        t0 = Task.objects.create(
            run=run,
            step=0,
            key=f"in:{i}",
            seq=seq0,
            status=Task.DONE,
            context={"topic": topic},
            messages=[{"role": "user", "content": f"List subtopics of {topic}"}],
            raw_output=str(subs),
            parsed=subs,
            model="fake-model",
            attempts=1,
            attempt_log=[{"n": 1, "ok": True, "error": None, "status": 200, "latency_ms": 12}],
            tokens_in=10,
            tokens_out=5,
            latency_ms=12,
            finished=now,
        )
        for j, sub in enumerate(subs):
            ctx = {"topic": topic, "subtopic": sub}
            t1 = Task.objects.create(
                run=run,
                step=1,
                key=f"t{t0.pk}.{j}",
                seq=f"{seq0}.{j:06d}",
                parent=t0,
                status=Task.DONE,
                context=ctx,
                raw_output=f"What is {sub}?",
                parsed=f"What is {sub}?",
                model="fake-model",
                attempts=1,
                tokens_in=8,
                tokens_out=4,
                finished=now,
            )
            ctx = {**ctx, "question": f"What is {sub}?"}
            t2 = Task.objects.create(
                run=run,
                step=2,
                key=f"t{t1.pk}.0",
                seq=f"{seq0}.{j:06d}.000000",
                parent=t1,
                status=Task.DONE,
                context=ctx,
                raw_output=f"It is {sub}.",
                parsed=f"It is {sub}.",
                model="fake-model",
                attempts=1,
                tokens_in=9,
                tokens_out=6,
                finished=now,
            )
            Record.objects.create(
                run=run,
                task=t2,
                key=f"t{t2.pk}.0",
                seq=f"{seq0}.{j:06d}.000000.000000",
                data={**ctx, "answer": f"It is {sub}."},
            )
    return run


def add_failures(run, n, reason="reply was not a JSON list, so it cannot be scattered", step=0):
    base = Task.objects.filter(run=run).count()
    Task.objects.bulk_create(
        [
            Task(
                run=run,
                step=step,
                key=f"bad:{base + k}",
                seq=f"9{base + k:07d}",
                status=Task.FAILED,
                context={"topic": f"Bad {k}"},
                raw_output="I would rather not",
                error=reason,
                attempts=3,
                finished=timezone.now(),
            )
            for k in range(n)
        ]
    )


def shown_forms(page):
    """Which of cancel (active), resume and retry-failed forms the page shows."""
    tags = re.findall(r'<form [^>]*data-show="(\w+)"[^>]*>', page)
    forms = re.findall(r'<form [^>]*data-show="\w+"[^>]*>', page)
    return {name: " hidden" not in tag for name, tag in zip(tags, forms, strict=True)}


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


# -- the runs list ---------------------------------------------------------------------


def test_runs_list_shows_every_run_of_the_user_with_pipeline_version_and_progress(
    owner_client, owner, other_user
):
    pipeline = create_pipeline(owner, library.get("qa-from-topics").spec, name="My QA")
    mine = make_run(owner, pipeline_code=pipeline.code, pipeline_version=3)
    Task.objects.create(run=mine, step=1, key="p", seq="x", status=Task.PENDING)
    done = make_run(owner, topics=1, status=Run.COMPLETED, name="Old run")
    make_run(other_user, name="Not yours")
    page = owner_client.get(reverse("designer:run-list")).content.decode()
    assert "QA run" in page and "Old run" in page and "Not yours" not in page
    assert "My QA" in page and "v3" in page
    assert "running" in page and "completed" in page
    assert "10 / 11" in page  # 10 of its 11 tasks finished
    assert "5 / 5" in page
    assert f"/runs/{mine.code}/" in page and f"/runs/{done.code}/" in page
    assert "1m 30s" in page  # the duration of the completed run


def test_runs_list_queries_do_not_grow_with_runs(
    owner_client, owner, django_assert_max_num_queries
):
    for i in range(8):
        make_run(owner, topics=1, name=f"run {i}")
    with django_assert_max_num_queries(8):
        response = owner_client.get(reverse("designer:run-list"))
    assert response.content.decode().count("data-run=") == 8


# -- the run page -----------------------------------------------------------------------


def test_run_page_shows_counts_per_step_tokens_and_failures_by_reason(owner_client, owner):
    run = make_run(owner, topics=2)
    Task.objects.create(run=run, step=1, key="q1", seq="z1", status=Task.PENDING)
    Task.objects.create(run=run, step=2, key="q2", seq="z2", status=Task.RUNNING)
    add_failures(run, 3)
    add_failures(run, 1, reason="HTTP 500: upstream down", step=2)
    response = owner_client.get(reverse("designer:run-detail", args=[run.code]))
    assert response.status_code == 200
    page = response.content.decode()
    state = response.context["state"]
    subtopics, question, answer = state["steps"]
    assert subtopics["counts"] == {
        "pending": 0,
        "running": 0,
        "done": 2,
        "failed": 3,
        "cancelled": 0,
    }
    assert question["counts"]["pending"] == 1 and question["counts"]["done"] == 4
    assert answer["counts"]["running"] == 1 and answer["counts"]["failed"] == 1
    assert state["tokens_in"] == 2 * 10 + 4 * 8 + 4 * 9
    assert "<strong>3</strong> &times;" in page
    assert "reply was not a JSON list, so it cannot be scattered" in page
    assert "HTTP 500: upstream down" in page
    assert 'data-col="done">2<' in page
    assert 'id="run-state"' in page  # the initial state the script starts from
    assert f'data-ws-path="/ws/runs/{run.code}/"' in page
    # a running run can be cancelled and its failures retried, not resumed
    assert shown_forms(page) == {"active": True, "resumable": False, "failed": True}


def test_run_state_rates_elapsed_and_time_left(owner):
    from runner.events.stats import run_state

    run = make_run(owner, topics=2)
    Task.objects.bulk_create(
        [Task(run=run, step=1, key=f"more{i}", seq=f"m{i}", status=Task.PENDING) for i in range(20)]
    )
    state = run_state(run)
    assert state["elapsed_seconds"] >= 89
    # 10 tasks finished "now", within the last 10 seconds
    assert state["calls_per_second"] == pytest.approx(1.0)
    # 20 questions waiting, each makes an answer: 40 tasks left at one per second
    assert state["expected_tasks"] == 10 + 20 + 20
    assert state["eta_seconds"] == 40
    assert state["records"] == 4 and state["reviewed"] == 0


def test_run_page_after_a_reload_matches_the_database(owner_client, owner):
    run = make_run(owner, topics=1, status=Run.COMPLETED)
    page = owner_client.get(reverse("designer:run-detail", args=[run.code])).content.decode()
    assert 'data-bind="status">completed<' in page
    assert 'data-bind="records">2<' in page
    assert "No task has failed." in page
    assert shown_forms(page) == {"active": False, "resumable": False, "failed": False}


def test_cost_shows_only_when_the_run_has_prices(owner_client, owner):
    from runner.models import Provider

    run = make_run(owner, topics=1)
    page = owner_client.get(reverse("designer:run-detail", args=[run.code])).content.decode()
    assert "<dt>Cost</dt>" in page and 'data-show="cost" hidden' in page
    provider = Provider.objects.create(
        owner=owner, name="priced", base_url="http://x/v1", prices={"*": [1, 2]}
    )
    run.providers = {"*": provider.pk}
    run.save()
    Task.objects.filter(run=run).update(cost=2500)  # micro-dollars
    response = owner_client.get(reverse("designer:run-detail", args=[run.code]))
    assert response.context["state"]["cost_micro"] == 5 * 2500  # $0.0125
    assert response.context["state"]["cost_text"] == "$0.0125"
    assert "$0.0125" in response.content.decode()


def test_a_run_of_100000_tasks_loads_in_bounded_queries(
    owner_client, owner, django_assert_max_num_queries
):
    run = make_run(owner, topics=1)
    statuses = [Task.DONE, Task.DONE, Task.PENDING, Task.RUNNING, Task.FAILED]
    now = timezone.now()
    Task.objects.bulk_create(
        (
            Task(
                run=run,
                step=i % 3,
                key=f"bulk:{i}",
                seq=f"b{i:08d}",
                status=statuses[i % 5],
                error="reply was not a JSON list" if i % 5 == 4 else "",
                tokens_in=3,
                finished=now if i % 5 in (0, 1, 4) else None,
            )
            for i in range(100_000)
        ),
        batch_size=5000,
    )
    with django_assert_max_num_queries(14):  # two are the review plan and the history
        response = owner_client.get(reverse("designer:run-detail", args=[run.code]))
    assert response.status_code == 200
    state = response.context["state"]
    assert sum(sum(s["counts"].values()) for s in state["steps"]) == 100_005
    assert state["failed"] == 20_000
    assert "<strong>20000</strong> &times;" in response.content.decode()
    with django_assert_max_num_queries(8):
        response = owner_client.get(reverse("designer:run-tasks", args=[run.code]) + "?page=3")
    assert response.content.decode().count("/tasks/") >= 50
    assert "page 3 of 2001" in response.content.decode()


# -- cancel, resume, retry ------------------------------------------------------------


def test_cancel_resume_and_retry_call_the_engine(owner_client, owner, started):
    calls = started
    run = make_run(owner, topics=1)
    add_failures(run, 2)
    url = reverse("designer:run-cancel", args=[run.code])
    assert owner_client.get(url).status_code == 405  # a change is a POST
    response = owner_client.post(url)
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == Run.CANCELLED

    owner_client.post(reverse("designer:run-resume", args=[run.code]))
    run.refresh_from_db()
    assert run.status == Run.QUEUED and calls == [run.pk]
    assert Task.objects.filter(run=run, status=Task.FAILED).count() == 2  # resume keeps them

    Run.objects.filter(pk=run.pk).update(status=Run.COMPLETED)
    owner_client.post(reverse("designer:run-retry-failed", args=[run.code]))
    assert Task.objects.filter(run=run, status=Task.FAILED).count() == 0
    assert Task.objects.filter(run=run, key__startswith="bad:", round=1).count() == 2
    run.refresh_from_db()
    assert run.status == Run.QUEUED


# -- the task inspector ---------------------------------------------------------------


def test_task_list_filters_by_step_and_status_and_pages(owner_client, owner):
    run = make_run(owner, topics=1)
    add_failures(run, 60)
    url = reverse("designer:run-tasks", args=[run.code])
    page = owner_client.get(url + "?status=failed").content.decode()
    assert page.count("I would rather not") == 50
    assert "page 1 of 2 (60 in all)" in page
    assert "reply was not a JSON list" in page
    page = owner_client.get(url + "?step=2").content.decode()
    assert "It is Topic 0 sub 0." in page
    assert page.count("<td>answer</td>") == 2 and "<td>question</td>" not in page
    page = owner_client.get(url + "?step=1&status=done").content.decode()
    assert page.count('class="badge status-done"') == 2


def test_task_detail_shows_inputs_prompt_reply_attempts_and_lineage(owner_client, owner):
    run = make_run(owner, topics=1)
    root = Task.objects.get(run=run, step=0)
    Task.objects.filter(pk=root.pk).update(
        attempt_log=[
            {"n": 1, "ok": False, "error": "HTTP 429: slow down", "status": 429, "latency_ms": 5},
            {"n": 2, "ok": True, "error": None, "status": 200, "latency_ms": 12},
            {"n": 3, "ok": False, "error": "reply was not a JSON list", "parse": True},
        ]
    )
    page = owner_client.get(
        reverse("designer:task-detail", args=[run.code, root.pk])
    ).content.decode()
    assert "List subtopics of Topic 0" in page  # the prompt as sent
    assert "&quot;topic&quot;: &quot;Topic 0&quot;" in page  # inputs
    assert "HTTP 429: slow down" in page and "could not parse" in page
    assert "fake-model" in page and "10 in · 5 out" in page
    assert "input row 1" in page  # where the task came from, in words
    children = Task.objects.filter(parent=root)
    for child in children:
        assert f"/tasks/{child.pk}/" in page
    leaf = Task.objects.filter(run=run, step=2).first()
    page = owner_client.get(
        reverse("designer:task-detail", args=[run.code, leaf.pk])
    ).content.decode()
    assert f"/tasks/{root.pk}/" in page and f"/tasks/{leaf.parent_id}/" in page
    assert f"result 1 of task {leaf.parent_id}" in page
    assert ">Record " in page  # the record it made
    other = make_run(owner, topics=1)
    stranger = Task.objects.filter(run=other).first()
    # a task of another run is not found under this run
    assert (
        owner_client.get(reverse("designer:task-detail", args=[run.code, stranger.pk])).status_code
        == 404
    )


# -- ownership ---------------------------------------------------------------------------


def run_urls(run):
    record = Record.objects.filter(run=run).first()
    task = Task.objects.filter(run=run).first()
    c = run.code
    gets = [
        reverse("designer:run-detail", args=[c]),
        reverse("designer:run-tasks", args=[c]),
        reverse("designer:task-detail", args=[c, task.pk]),
        reverse("designer:run-records", args=[c]),
        reverse("designer:run-review", args=[c]),
        reverse("designer:run-export", args=[c]),
        reverse("designer:run-export-download", args=[c]) + "?type=jsonl&field=topic",
    ]
    posts = [
        reverse("designer:run-cancel", args=[c]),
        reverse("designer:run-resume", args=[c]),
        reverse("designer:run-retry-failed", args=[c]),
        reverse("designer:run-budget", args=[c]),
        reverse("designer:records-bulk", args=[c]),
        reverse("designer:record-review", args=[c, record.pk]),
        reverse("designer:record-edit", args=[c, record.pk]),
    ]
    return gets, posts


def test_another_user_gets_404_on_every_run_url(client, owner, other_user):
    run = make_run(owner, topics=1)
    add_failures(run, 1)
    client.force_login(other_user)
    gets, posts = run_urls(run)
    for url in gets:
        assert client.get(url).status_code == 404, url
    for url in posts:
        response = client.post(url, {"action": "accept", "filters": ""})
        assert response.status_code == 404, url
    run.refresh_from_db()
    assert run.status == Run.RUNNING
    assert not Record.objects.filter(run=run).exclude(review=Record.UNREVIEWED).exists()


def test_anonymous_visitors_are_sent_to_log_in(client, owner):
    run = make_run(owner, topics=1)
    gets, posts = run_urls(run)
    for url in gets + [reverse("designer:run-list")]:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    for url in posts:
        assert client.post(url).status_code == 302, url


# -- the websocket: coalesced updates ----------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_burst_of_announcements_reaches_the_page_as_few_messages_ending_with_the_latest(
    owner, settings
):
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from runner.events.consumer import MIN_INTERVAL, RunConsumer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    run = await sync_to_async(make_run)(owner, topics=1)
    comm = WebsocketCommunicator(RunConsumer.as_asgi(), f"/ws/runs/{run.code}/")
    comm.scope["user"] = owner
    comm.scope["url_route"] = {"kwargs": {"code": run.code}}
    connected, _ = await comm.connect()
    assert connected
    first = await comm.receive_json_from(timeout=5)
    assert first["state"]["run"] == str(run.code)
    layer = get_channel_layer()
    for n in range(30):  # 30 announcements in a burst, as several drivers would send
        await layer.group_send(run.group_name, {"type": "run.progress", "state": {"n": n}})
    seen = []
    while not await comm.receive_nothing(timeout=2 * MIN_INTERVAL + 0.2):
        seen.append((await comm.receive_json_from())["state"]["n"])
    assert 1 <= len(seen) <= 3
    assert seen[-1] == 29  # the latest state is never lost
    await comm.disconnect()


def _every_task_failed(owner):
    spec = library.get("qa-from-topics").spec
    run = Run.objects.create(
        owner=owner, name="Doomed", spec=spec.to_dict(), inputs=[{"topic": "Tea"}], status="running"
    )
    for i in range(3):
        Task.objects.create(
            run=run,
            step=0,
            key=f"in:{i}",
            seq=f"{i:08d}",
            status=Task.FAILED,
            context={"topic": f"Tea {i}"},
            error="HTTP 500: the server is down",
            finished=timezone.now(),
        )
    return run


def test_a_run_whose_every_task_failed_ends_failed_and_says_why(client, owner):
    from runner.engine.writer import settle

    run = _every_task_failed(owner)
    assert settle(run, run.spec_obj)
    run.refresh_from_db()
    assert run.status == Run.FAILED
    reason = (
        "No record could be made: 3 of 3 tasks failed (most often: HTTP 500: the server is down)."
    )
    assert run.error == reason
    client.force_login(owner)
    page = client.get(reverse("designer:run-detail", args=[run.code])).content.decode()
    assert 'class="badge status-failed" data-bind="status">failed<' in page
    assert 'class="bar-failed"' in page  # the bar says so too, not a green 100 %
    assert reason in page
    listing = client.get(reverse("designer:run-list")).content.decode()
    assert 'status-failed">failed</span>' in listing
    assert "No record could be made: 3 of 3 tasks failed" in listing


def test_a_run_with_some_failed_tasks_is_completed_with_failures(client, owner):
    from runner.engine.writer import settle

    run = make_run(owner, topics=2)
    Task.objects.filter(run=run).update(status=Task.DONE)
    last = Task.objects.filter(run=run, step=2).order_by("seq").last()
    Task.objects.filter(pk=last.pk).update(status=Task.FAILED, error="HTTP 500: try later")
    assert settle(run, run.spec_obj)
    run.refresh_from_db()
    assert run.status == Run.COMPLETED_WITH_FAILURES
    assert "tasks failed, so their records are missing" in run.error
    client.force_login(owner)
    page = client.get(reverse("designer:run-detail", args=[run.code])).content.decode()
    assert 'data-bind="status">completed with failures<' in page
    listing = client.get(reverse("designer:run-list")).content.decode()
    assert 'status-completed_with_failures">completed with failures</span>' in listing


def test_a_huge_reply_is_cut_on_the_task_page_with_a_way_to_see_it_all(owner_client, owner):
    run = make_run(owner, topics=1)
    task = Task.objects.filter(run=run, step=2).first()
    Task.objects.filter(pk=task.pk).update(raw_output="word " * 200_000)  # a million characters
    url = reverse("designer:task-detail", args=[run.code, task.pk])
    page = owner_client.get(url).content.decode()
    assert len(page) < 100_000  # not a million characters of HTML
    assert "980,000 more characters not shown" in page and "Show all" in page
    full = owner_client.get(url + "?all=1").content.decode()
    assert full.count("word ") >= 200_000
