"""Trying one step on one sample input, now, through the workers.

`start()` writes a trial to Redis (the step, the sample values, who asked) and
enqueues the `try_step` Celery task after commit; `run()` is what that task does:
fill in the prompt, call the provider once (with retries on transient errors),
parse the reply the step's way, and store the prompt as sent, the raw reply, the
parsed result or why it did not parse, tokens and time. A trial lives for `TTL`
seconds; `get()` reads it back for the page that polls it.
"""

import json
import logging
import time
import uuid

from django.conf import settings

from runner.models import Provider
from runner.providers import ProviderError, build_provider, complete_with_retries
from runner.spec import StepSpec, templating
from runner.spec.parsing import ParseError, parse_output

from . import aio, keys, limits, workflows
from .calls import CallRunner
from .endpoints import endpoint_of
from .ports import enqueue

log = logging.getLogger("runner.trial")

TASK_NAME = "runner.try_step"  # the Celery task that runs a trial (runner/tasks.py)
TTL = 3600
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
ACTIVE = (QUEUED, RUNNING)


def _key(trial_id):
    return keys.trial(trial_id)


def _save(data):
    limits.client().set(_key(data["id"]), json.dumps(data, ensure_ascii=False), ex=TTL)


def get(trial_id):
    """The trial as a dict, or None when it does not exist (or has expired)."""
    raw = limits.client().get(_key(trial_id))
    return json.loads(raw) if raw else None


def create(owner_id, step, context, provider_id, pipeline_code=None, step_index=None):
    """Store a queued trial and return its id (nothing is enqueued)."""
    if isinstance(step, StepSpec):
        step = step.model_dump(mode="json")
    data = {
        "id": uuid.uuid4().hex,
        "owner": owner_id,
        "pipeline": str(pipeline_code) if pipeline_code else None,
        "step_index": step_index,
        "step": step,
        "context": context,
        "provider": provider_id,
        "status": QUEUED,
        "created": time.time(),
    }
    _save(data)
    return data["id"]


def start(owner_id, step, context, provider_id, pipeline_code=None, step_index=None):
    """Store a trial and hand it to the workers once the current transaction commits."""
    trial_id = create(owner_id, step, context, provider_id, pipeline_code, step_index)
    enqueue(TASK_NAME, trial_id)
    return trial_id


def run(trial_id):
    """Make the trial's call and store what came back. Safe to run twice: one run claims it."""
    data = get(trial_id)
    if data is None:
        log.warning("trial %s expired before it ran", trial_id)
        return None
    claimed = limits.client().set(f"{_key(trial_id)}:claim", "1", nx=True, ex=TTL)
    if not claimed or data["status"] != QUEUED:
        return data
    data["status"] = RUNNING
    _save(data)
    started = time.perf_counter()
    try:
        data.update(_call(data))
    except Exception as exc:  # anything unexpected is still an answer for the page
        log.exception("trial %s failed", trial_id)
        data.update(status=FAILED, error=f"the trial failed unexpectedly: {exc}")
    data["elapsed_ms"] = int((time.perf_counter() - started) * 1000)
    _save(data)
    return data


def _call(data):
    step = StepSpec.model_validate(data["step"])
    # a provider of a workspace the person trying belongs to
    provider = Provider.objects.filter(
        pk=data["provider"], workspace__members__user_id=data["owner"]
    ).first()
    if provider is None:
        return {"status": FAILED, "error": "the provider no longer exists; choose another one"}
    model = step.model.name or provider.default_model
    if not model:
        return {
            "status": FAILED,
            "error": "no model is chosen: set the step's model or the provider's default model",
        }
    if step.workflow is not None:
        return _workflow(step, data, provider, model)
    try:
        messages, request = workflows.request_for(
            step.as_workflow().tasks[0], data["context"], model, step.params
        )
    except templating.TemplateError as exc:
        return {"status": FAILED, "error": f"the prompt could not be filled in: {exc}"}
    out = {"messages": messages, "model": model}
    attempts = []

    async def call():
        llm = build_provider(
            provider.kind,
            provider.base_url,
            provider.api_key,
            model,
            (provider.max_reply_mb or 0) * 1024 * 1024,
        )
        return await complete_with_retries(
            llm,
            request,
            max_retries=settings.RUNNER_MAX_TRANSIENT_RETRIES,
            backoff_base=settings.RUNNER_BACKOFF_BASE,
            backoff_max=settings.RUNNER_BACKOFF_MAX,
            on_attempt=attempts.append,
        )

    budget = request.timeout * (settings.RUNNER_MAX_TRANSIENT_RETRIES + 1) + 60
    future = aio.submit(call())
    try:
        completion = future.result(timeout=budget)
    except ProviderError as exc:
        return {**out, "status": FAILED, "error": exc.message, "attempts": len(attempts)}
    except TimeoutError:
        future.cancel()
        return {**out, "status": FAILED, "error": f"no reply after {budget:g} seconds"}
    out.update(
        status=DONE,
        raw=completion.text,
        model=completion.model or model,
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
        latency_ms=completion.latency_ms,
        attempts=len(attempts),
    )
    try:
        parsed = parse_output(completion.text, step.output_format, step.output_schema)
        out["parsed"] = parsed
        out["parsed_json"] = json.dumps(parsed, indent=2, ensure_ascii=False)
    except ParseError as exc:
        out["parse_error"] = exc.reason
    return out


def _workflow(step, data, provider, model):
    """Run a workflow step's whole workflow on the sample: every sub-call, in order."""
    ep = endpoint_of(provider, step, model)
    calls = CallRunner([ep])
    plan = workflows.Plan(
        f"trial-{data['id']}",
        0,
        0,
        0,
        0,
        dict(data["context"]),
        step.workflow,
        ep,
        step.params,
        calls.estimate_tokens,
    )

    async def go():
        calls.setup()
        calls.resize(ep.pool, 1)
        try:
            return await workflows.execute(calls, workflows.prepare(plan))
        finally:
            await calls.close()

    limit = (step.params.timeout or 120.0) * step.workflow.max_steps + 60
    if step.workflow.max_time:
        limit = min(limit, step.workflow.max_time + 120)
    future = aio.submit(go())
    try:
        res = future.result(timeout=limit)
    except TimeoutError:
        future.cancel()
        return {"status": FAILED, "error": f"no reply after {limit:g} seconds", "model": model}
    out = {
        "status": DONE if res.ok else FAILED,
        "model": res.model or model,
        "messages": res.messages,
        "trace": res.trace or [],
        "warning": res.warning,
        "tokens_in": res.tokens_in,
        "tokens_out": res.tokens_out,
        "latency_ms": res.latency_ms,
        "attempts": len(res.attempts),
        "raw": res.text,
    }
    if res.ok:
        out["parsed"] = res.parsed
        out["parsed_json"] = json.dumps(res.parsed, indent=2, ensure_ascii=False)
    else:
        out["error"] = res.error
    return out
