"""One task's workflow, run as a sequence of calls on the process's asyncio loop.

For every input that reaches a step, the step's workflow (`runner.spec.workflow`)
runs here: each prompt in turn is rendered from the memory, made as a call through
the driver's `CallRunner` (the same rate limits, retries, parse re-asks, fallback
models and cost as any call), its reply written to memory, and the next prompt
chosen by the edges. A one-prompt step is a workflow of one task and takes the same
path.

Every sub-call has its own cache key (the run, the prompt as sent, its place in the
workflow), and the reply is cached before anything else: a worker killed between
two sub-calls resumes the workflow from its start, every finished sub-call is
answered from the cache, and none is paid for twice.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field

from runner.providers import CompletionRequest
from runner.spec import OutputFormat, templating
from runner.spec import memory as memory_rules
from runner.spec import workflow as wf

from . import keys
from .calls import Job, Result, cache_key, completion_from_json

MEMORY_VALUE_CHARS = 2000  # a value longer than this is cut in the trace's memory snapshot


# Shared by every JSON-list call (read, never changed): providers that encode a schema
# once (OpenAICompatible._tail) know it again by its identity.
ARRAY_SCHEMA = {"type": "array"}


def request_for(task, values, model, params, max_tokens=None):
    """The messages and the completion request of one prompt rendered with `values`."""
    messages = []
    if task.system:
        messages.append({"role": "system", "content": templating.render(task.system, values)})
    messages.append({"role": "user", "content": templating.render(task.prompt, values)})
    fmt = str(task.output_format)
    if fmt == OutputFormat.JSON_LIST:
        json_schema = ARRAY_SCHEMA
    elif fmt == OutputFormat.JSON_OBJECT:
        json_schema = task.output_schema or {"type": "object"}
    else:
        json_schema = None
    return messages, CompletionRequest(
        model=model,
        messages=messages,
        temperature=params.temperature,
        max_tokens=params.max_tokens or max_tokens,
        top_p=params.top_p,
        json_mode=json_schema is not None,
        json_schema=json_schema,
        timeout=params.timeout or 120.0,
    )


@dataclass
class Plan:
    """What the driver hands over for one claimed task."""

    run_code: str  # the run's UUID code (hex): its replies are cached under it
    task_id: int
    step: int
    variant: int
    round: int
    context: dict
    workflow: object  # WorkflowSpec
    endpoint: object  # Endpoint
    params: object  # ModelParams
    estimate_tokens: object  # CallRunner.estimate_tokens
    first: Job | None = None  # the first sub-call, built (and its cache looked up) by the driver
    memory: dict = field(default_factory=dict)  # the memory after the first prompt's inputs
    first_error: str = ""  # the first prompt could not be filled in
    single: bool = False  # a one-prompt step: its one call is the task
    row: dict | None = None  # the claimed row (id, step, key, seq, variant, context): saved with


def _dumps(value):
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


_PREFIXES: dict = {}  # (id(endpoint), id(params)) -> (endpoint, params, encoded start)


def call_digest(plan, messages, fmt, n, task_id):
    """What identifies a call (its reply is cached under it): the sha256 of the JSON list
    [base URL, model, params, messages, output format, variant, round(, n, prompt id)].
    The part that is the same for every call of a step is encoded once a step."""
    ep, p = plan.endpoint, plan.params
    held = _PREFIXES.get((id(ep), id(p)))
    if held is None or held[0] is not ep or held[1] is not p:
        if len(_PREFIXES) > 1024:
            _PREFIXES.clear()
        start = "[" + ", ".join(_dumps(v) for v in (ep.base_url, ep.model, p.model_dump()))
        held = _PREFIXES[(id(ep), id(p))] = (ep, p, start)
    tail = (
        [fmt, plan.variant, plan.round]
        if plan.single
        else [fmt, plan.variant, plan.round, n, task_id]
    )
    text = f"{held[2]}, {_dumps(messages)}, {_dumps(tail)[1:]}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sub_call(plan, task, memory, n):
    """(Job, memory after its inputs) for the n-th prompt made; TemplateError or MissingValue."""
    values = memory_rules.context_for(task, memory)
    ep, p = plan.endpoint, plan.params
    messages, request = request_for(task, values, ep.model, p, plan.workflow.max_tokens)
    fmt = str(task.output_format)
    digest = call_digest(plan, messages, fmt, n, task.id)
    chars = sum(len(m["content"]) for m in messages)
    return Job(
        plan.task_id,
        plan.step,
        plan.variant,
        messages,
        request,
        fmt,
        task.output_schema,
        keys.call(plan.run_code, digest),
        ep.pool,
        fallbacks=ep.fallbacks,
        tokens=plan.estimate_tokens(ep.pool, request, chars),
    )


def prepare(plan):
    """Build the first sub-call (the driver looks its reply up in the cache for a whole chunk)."""
    first = plan.workflow.tasks[0]
    memory = dict(plan.context)
    try:
        plan.first = sub_call(plan, first, memory, 0)
        plan.memory = memory
    except (templating.TemplateError, memory_rules.MissingValue) as exc:
        plan.first_error = str(exc)
    return plan


def _snapshot(memory):
    def cut(v):
        if isinstance(v, str) and len(v) > MEMORY_VALUE_CHARS:
            return v[:MEMORY_VALUE_CHARS] + "…"
        if isinstance(v, list):
            return [cut(x) for x in v]
        return v

    return {k: cut(v) for k, v in memory.items()}


async def _cached(calls, job):
    """A sub-call's reply already paid for (a killed worker's), looked up before calling."""
    try:
        raw = await calls.cache_get(cache_key(job, 0))
    except Exception:  # the cache is down: the call is made (and paid) again
        return
    if raw:
        job.cached = completion_from_json(raw)


async def execute(calls, plan):
    """Run the task's workflow; one Result for the task, with every sub-call in `trace`."""
    flow = plan.workflow
    if plan.single and plan.first is not None:  # one prompt: the call is the task
        return await calls.execute(plan.first)
    if plan.single:
        return Result(
            plan.task_id, False, [], error=f"the prompt could not be filled in: {plan.first_error}"
        )
    started = time.monotonic()
    memory = plan.memory if plan.first is not None else dict(plan.context)
    total = Result(plan.task_id, True, plan.first.messages if plan.first else [])
    total.trace, total.cached = [], True
    current, n, last_text = flow.tasks[0].id, 0, ""
    while current != wf.END:
        if n >= flow.max_steps:
            total.warning = (
                f"stopped after {n} prompts: the workflow's limit (max_steps {flow.max_steps})"
            )
            break
        if flow.max_time and time.monotonic() - started > flow.max_time:
            total.warning = f"stopped after {flow.max_time:g}s: the workflow's time limit"
            break
        task = flow.task(current)
        error = ""
        if n == 0 and plan.first is not None:
            job = plan.first
        else:
            try:
                job = sub_call(plan, task, memory, n)
            except (templating.TemplateError, memory_rules.MissingValue) as exc:
                job, error = None, f"prompt '{task.id}' could not be filled in: {exc}"
            if job is not None:
                await _cached(calls, job)
        if n == 0 and plan.first is None:
            error = f"prompt '{task.id}' could not be filled in: {plan.first_error}"
        n += 1
        if job is not None:
            res = await calls.execute(job)
            _add(total, task, res, memory)
            if res.ok:
                memory_rules.store(memory, task, res.parsed)
                last_text = res.text
                total.trace[-1]["memory"] = _snapshot(memory)
                current = memory_rules.next_task(flow, current, memory)
                continue
            error = f"prompt '{task.id}' failed: {res.error}"
        else:
            total.trace.append({"task": task.id, "ok": False, "error": error})
        edge = flow.edge_from(current)
        if edge is None or not edge.fallback:
            total.ok, total.error, total.text = False, error, last_text
            return total
        current = edge.fallback
    total.text = last_text
    total.parsed = memory_rules.returned(flow, memory)
    if memory_rules.is_empty(total.parsed):
        why = f" ({total.warning})" if total.warning else ""
        keys = ", ".join(flow.return_value)
        total.ok, total.parsed = False, None
        total.error = f"the workflow ended{why} with nothing in its return value ({keys})"
    return total


def _add(total, task, res, memory):
    """Count one sub-call into the task's result and its trace."""
    total.tokens_in += res.tokens_in
    total.tokens_out += res.tokens_out
    total.latency_ms += res.latency_ms
    total.cost += res.cost
    total.cached = total.cached and res.cached
    total.model = res.model or total.model
    total.attempts += [{**a, "task": task.id} for a in res.attempts]
    total.trace.append(
        {
            "task": task.id,
            "ok": res.ok,
            "messages": res.messages,
            "reply": res.text,
            "parsed": res.parsed if res.ok else None,
            "error": res.error,
            "model": res.model,
            "tokens_in": res.tokens_in,
            "tokens_out": res.tokens_out,
            "ms": res.latency_ms,
            "cached": res.cached,
            "memory": _snapshot(memory),
        }
    )
