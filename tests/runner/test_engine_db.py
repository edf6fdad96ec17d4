"""The engine's bookkeeping against the database, without a worker: finish, fan out, settle."""

import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from runner import engine
from runner.engine.calls import Result
from runner.engine.writer import finish, settle
from runner.models import Provider, Record, Run, Task
from runner.spec.builder import PipelineBuilder, Step

pytestmark = pytest.mark.django_db


def launch(owner, spec, inputs):
    provider = Provider(owner=owner, name="p", base_url="http://127.0.0.1:9/v1", default_model="m")
    provider.save()
    run = engine.launch_run(owner, spec, inputs, providers={"*": provider.pk})
    Run.objects.filter(pk=run.pk).update(status=Run.RUNNING)
    run.refresh_from_db()
    return run


def complete(run, spec, step, parsed_by_topic):
    tasks = list(Task.objects.filter(run=run, step=step))
    Task.objects.filter(pk__in=[t.pk for t in tasks]).update(status=Task.RUNNING)
    results = [
        Result(
            t.pk,
            True,
            [{"role": "user", "content": "x"}],
            text="x",
            parsed=parsed_by_topic(t.context),
        )
        for t in tasks
    ]
    finish(run, spec, results)


def qa_spec():
    p = PipelineBuilder("qa")
    (
        p
        << Step("List 5 {{topic}}", name="subs", output="json_list", output_key="subs").scatter(
            "sub"
        )
        << Step("Q {{sub}}", name="q", output_key="question")
    )
    return p.build()


def test_scatter_of_an_empty_list_ends_the_branch_and_the_run_completes(owner):
    spec = qa_spec()
    run = launch(owner, spec, [{"topic": "empty"}, {"topic": "full"}])
    complete(run, spec, 0, lambda ctx: [] if ctx["topic"] == "empty" else ["a", "b"])
    assert Task.objects.filter(run=run, step=1).count() == 2
    assert not settle(run, spec)  # two questions still to make
    complete(run, spec, 1, lambda ctx: f"why {ctx['sub']}?")
    assert settle(run, spec)
    run.refresh_from_db()
    assert run.status == Run.COMPLETED
    assert sorted(r.data["question"] for r in Record.objects.filter(run=run)) == [
        "why a?",
        "why b?",
    ]
    assert not Task.objects.filter(run=run, status="failed").exists()


def test_finishing_a_task_twice_does_not_make_its_children_twice(owner):
    spec = qa_spec()
    run = launch(owner, spec, [{"topic": "t"}])
    complete(run, spec, 0, lambda ctx: ["a", "b", "c"])
    task = Task.objects.get(run=run, step=0)
    Task.objects.filter(pk=task.pk).update(
        status=Task.RUNNING
    )  # as if a lease ran out and it was run again
    finish(run, spec, [Result(task.pk, True, [], text="x", parsed=["a", "b", "c"])])
    assert Task.objects.filter(run=run, step=1).count() == 3


def test_children_can_be_written_already_claimed(owner):
    spec = qa_spec()
    run = launch(owner, spec, [{"topic": "t"}])
    task = Task.objects.get(run=run, step=0)
    Task.objects.filter(pk=task.pk).update(status=Task.RUNNING)
    claimed = finish(
        run,
        spec,
        [Result(task.pk, True, [], text="x", parsed=["a", "b", "c"])],
        claim="drv:1",
        claim_max=2,
    )
    assert len(claimed) == 2 and {c["context"]["sub"] for c in claimed} <= {"a", "b", "c"}
    assert Task.objects.filter(run=run, step=1, status="running", claim="drv:1").count() == 2
    assert Task.objects.filter(run=run, step=1, status="pending").count() == 1


def test_launch_refuses_missing_inputs_and_unknown_providers(owner):
    spec = qa_spec()
    with pytest.raises(engine.LaunchError) as info:
        engine.launch_run(owner, spec, [{"subject": "x"}])
    assert info.value.problems == ["input 1 has no value for topic"]
    p = PipelineBuilder() << Step("{{x}}", output_key="y", provider="nowhere", model="m")
    with pytest.raises(engine.LaunchError) as info:
        engine.launch_run(owner, p.build(), [{"x": 1}])
    assert "no provider named 'nowhere'" in info.value.problems[0]
    assert not Run.objects.exists()


def test_tasks_and_records_are_written_back_exactly_whatever_they_hold(owner):
    # The launch and the fan-out write rows in bulk (on PostgreSQL as one JSON document):
    # quotes, non-Latin text, nested values, nulls, numbers and emoji come back as given.
    odd = [
        {"topic": 'it\'s "quoted" \\ back\\slash', "n": 3, "none": None},
        {"topic": "Ünïcödé 日本語 🌋", "nested": {"a": [1, 2.5, {"b": True}]}},
    ]
    spec = qa_spec()
    run = launch(owner, spec, odd)
    tasks = Task.objects.filter(run=run, step=0).order_by("seq")
    assert [t.context for t in tasks] == odd
    assert all(t.status == Task.PENDING and t.created is not None for t in tasks)
    complete(run, spec, 0, lambda ctx: ["same 'sub' ✓", 'other "sub"'])
    subs = sorted(
        (t.context["topic"], t.context["sub"]) for t in Task.objects.filter(run=run, step=1)
    )
    assert subs == sorted(
        (row["topic"], sub) for row in odd for sub in ["same 'sub' ✓", 'other "sub"']
    )
    complete(run, spec, 1, lambda ctx: f"why {ctx['sub']}? «{ctx['topic']}»")
    assert settle(run, spec)
    answers = sorted(r.data["question"] for r in Record.objects.filter(run=run))
    assert answers == sorted(
        f"why {sub}? «{row['topic']}»" for row in odd for sub in ["same 'sub' ✓", 'other "sub"']
    )


def test_a_finished_tasks_reply_and_accounts_are_saved_exactly(owner):
    # Finished calls are saved in bulk (on PostgreSQL one UPDATE fed by a JSON document):
    # what the run page and the export show must be what the provider said, to the byte.
    spec = qa_spec()
    run = launch(owner, spec, [{"topic": "a"}, {"topic": "b"}, {"topic": "c"}])
    a, b, c = Task.objects.filter(run=run, step=0).order_by("seq")
    Task.objects.filter(run=run).update(status=Task.RUNNING, attempts=1)
    text = 'Here: ["it\'s", "\\"q\\"", "日本語 🌋"] \\ done\n'
    attempts = [{"n": 1, "ok": False, "status": 429, "error": "slow down"}, {"n": 2, "ok": True}]
    trace = [{"prompt": [{"role": "user", "content": "«x»"}], "reply": "ok", "memory": {"k": [1]}}]
    results = [
        Result(a.pk, True, [{"role": "user", "content": "List «a»"}], text=text,
               parsed=["it's", '"q"', "日本語 🌋"], model="m-1", tokens_in=12, tokens_out=34,
               latency_ms=567, attempts=attempts, cost=1_250, trace=trace, warning="cut short"),
        Result(b.pk, False, [{"role": "user", "content": "List b"}], error="HTTP 500: «no»",
               attempts=[{"n": 1, "ok": False, "latency_ms": 40}, {"n": 2, "ok": False, "latency_ms": 2}]),
        Result(c.pk, True, [{"role": "user", "content": "List c"}], text="[]", parsed=[],
               cached=True),
    ]  # fmt: skip
    finish(run, spec, results)
    a, b, c = (Task.objects.get(pk=t.pk) for t in (a, b, c))
    assert (a.status, a.raw_output, a.parsed, a.model) == (
        Task.DONE,
        text,
        results[0].parsed,
        "m-1",
    )
    assert a.messages == [{"role": "user", "content": "List «a»"}]
    assert (a.tokens_in, a.tokens_out, a.latency_ms, a.cost) == (12, 34, 567, 1_250)
    assert (a.attempt_log, a.trace, a.warning) == (attempts, trace, "cut short")
    assert a.attempts == 1 + 2 and a.finished is not None and a.lease_until is None
    assert (b.status, b.error, b.parsed, b.latency_ms) == (Task.FAILED, "HTTP 500: «no»", None, 42)
    assert (c.status, c.cached, c.attempts, c.trace) == (Task.DONE, True, 1, None)
    run.refresh_from_db()
    assert run.spent == 1_250
    # finishing the same tasks again (a lease ran out meanwhile) changes nothing
    finish(run, spec, [Result(a.pk, False, [], error="late")])
    assert Task.objects.get(pk=a.pk).status == Task.DONE


def test_a_reply_holding_a_nul_character_is_saved_and_its_children_made(owner):
    # PostgreSQL keeps no NUL in text or JSON: a model's stray \0 must not fail the chunk
    # (and the run, each time the cached reply is read again). It is saved as U+FFFD there.
    from django.db import connection

    spec = qa_spec()
    run = launch(owner, spec, [{"topic": "a"}])
    task = Task.objects.get(run=run, step=0)
    Task.objects.filter(pk=task.pk).update(status=Task.RUNNING)
    text = '["one\x00two", "three"]'
    finish(run, spec, [Result(task.pk, True, [{"role": "user", "content": "x"}], text=text,
                              parsed=["one\x00two", "three"], model="m\x00")])  # fmt: skip
    kept = (lambda v: v.replace("\x00", "\ufffd")) if connection.vendor == "postgresql" else str
    task.refresh_from_db()
    assert (task.status, task.raw_output, task.model) == (Task.DONE, kept(text), kept("m\x00"))
    assert task.parsed == [kept("one\x00two"), "three"]
    subs = sorted(t.context["sub"] for t in Task.objects.filter(run=run, step=1))
    assert subs == sorted([kept("one\x00two"), "three"])


def test_a_claim_takes_tasks_ahead_only_from_a_queue_long_enough_for_the_other_drivers(owner):
    run = launch(owner, qa_spec(), [{"topic": f"t{i}"} for i in range(30)])
    lease = timezone.now() + timedelta(seconds=60)
    assert len(Task.objects.claim(run.pk, 5, "a:1", lease, ahead=5)) == 10  # 30 >= 2 x 10
    # 20 left: 5 ahead would need 2 x 10 and the 1 another driver is about to claim
    assert len(Task.objects.claim(run.pk, 5, "b:1", lease, ahead=5, reserve=1)) == 5
    assert len(Task.objects.claim(run.pk, 2, "c:1", lease, ahead=3, reserve=5)) == 5  # 15 >= 15
    assert len(Task.objects.claim(run.pk, 0, "d:1", lease, ahead=10)) == 0  # 10 < 2 x 10
    assert Task.objects.filter(run=run, status="pending").count() == 10


@pytest.mark.django_db(transaction=True)
def test_drivers_claiming_at_once_get_no_task_twice_and_no_more_than_they_asked(owner):
    run = launch(owner, qa_spec(), [{"topic": f"t{i}"} for i in range(300)])
    lease = timezone.now() + timedelta(seconds=60)
    got = {}  # claim token -> the rows it got
    start = threading.Barrier(6)

    def driver(k):
        try:
            start.wait()
            for j in range(12):  # 6 x 12 claims of up to 5: more than the queue holds
                got[f"d{k}:{j}"] = Task.objects.claim(run.pk, 3, f"d{k}:{j}", lease, ahead=2)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=driver, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [row["id"] for rows in got.values() for row in rows]
    assert len(got) == 72 and max(len(rows) for rows in got.values()) <= 5
    assert len(ids) == len(set(ids))  # no task went to two claims
    assert len(ids) == 300  # the queue ran dry: every task was taken
    for token, rows in got.items():
        assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)  # the claim's order
        assert {r["id"] for r in rows} == set(
            Task.objects.filter(claim=token, status="running").values_list("id", flat=True)
        )
        assert all(r["context"]["topic"].startswith("t") for r in rows)
    assert not Task.objects.filter(run=run, status="pending").exists()
