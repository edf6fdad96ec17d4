"""The estimate the launch page shows, against what a run then really does.

Each built-in template is launched with a priced provider on the fake
OpenAI-compatible server in its `realistic` mode: replies of a chat model's size
(lists of short phrases, one-sentence questions, answers of a paragraph) and token
usage counted as a tokenizer roughly does (75 words per 100 tokens). The fake
writes as many list items as the prompt asks for, so the estimated calls are
exact; the estimated cost is within 25 % of what the run's calls cost. A workflow
step makes several calls per task (its trace holds one entry a call); a list split
from text is counted by the tasks it makes.
"""

import pytest

from runner import engine
from runner.models import Run, Task
from runner.spec import library

from .helpers import provider_for, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PRICES = {"fake-model": [2.5, 10.0]}  # $/1M tokens in and out, as gpt-4o's


@pytest.mark.parametrize("slug", library.slugs())
def test_the_estimate_matches_the_run(owner, worker, fake_llm, slug):
    fake_llm.configure(realistic=True, follow_schema=True)  # judges get their schema
    provider = provider_for(owner, fake_llm, concurrency=8)
    provider.prices = PRICES
    provider.save()
    spec = library.get(slug).spec
    inputs = spec.inputs
    est = engine.estimate_run(owner, spec, inputs, providers={"*": provider.pk})
    assert est.complete and est.cost_micro > 0

    run = engine.launch_run(owner, spec, inputs, providers={"*": provider.pk})
    wait_for(run, timeout=120)
    assert run.status == Run.COMPLETED, run.error

    # the fake wrote as many items as each list prompt asked for...
    for step in est.steps:
        if step.items is not None:
            sizes = {
                len(t.parsed) if isinstance(t.parsed, list) else t.children.count()
                for t in Task.objects.filter(run=run, step=step.number - 1)
            }
            assert sizes == {step.items}, (step.name, sizes)
    # ...so every step made the calls the estimate counted
    made = [
        sum(len(t.trace) if t.trace else 1 for t in Task.objects.filter(run=run, step=i))
        for i in range(len(spec.steps))
    ]
    assert made == [s.calls for s in est.steps]
    assert fake_llm.stats()["total"] == est.calls

    spent = run.spent  # micro-dollars, from the fake's reported usage
    real_in = sum(Task.objects.filter(run=run).values_list("tokens_in", flat=True))
    real_out = sum(Task.objects.filter(run=run).values_list("tokens_out", flat=True))
    print(
        f"\n{slug}: calls estimated {est.calls}, made {fake_llm.stats()['total']}; "
        f"tokens in {est.tokens_in} vs {real_in}, out {est.tokens_out} vs {real_out}; "
        f"cost estimated {est.cost_micro} vs real {spent} micro-dollars "
        f"({est.cost_micro / spent - 1:+.0%})"
    )
    assert abs(est.cost_micro - spent) <= 0.25 * spent
