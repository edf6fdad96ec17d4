"""`Pipeline.execute()`: launch a run on the workers, as `runpipeline` does, and wait for it."""

import time
import warnings

from django.conf import settings

from runner import engine
from runner.engine import adhoc
from runner.events import stats
from runner.models import Provider, Record, Run, Workspace


class DriaRunError(RuntimeError):
    """The run could not start, failed, or did not end in time (`run` is the Run, if any)."""

    def __init__(self, message, run=None):
        super().__init__(message)
        self.run = run


def execute(
    pipeline,
    return_output=True,
    *,
    inputs=None,
    base_url=None,
    model=None,
    api_key="",
    provider=None,
    user=None,
    concurrency=None,
    budget=None,
    timeout=3600,
    start_timeout=30,
    poll=0.25,
):
    spec = pipeline.spec
    inputs = [dict(r) for r in (inputs if inputs is not None else spec.inputs)]
    if not inputs:
        keys = ", ".join(spec.first_step_keys()) or "none"
        raise ValueError(f"the pipeline has no inputs: call .input(...) first (keys: {keys})")
    owner = user if user is not None and not isinstance(user, str) else adhoc.owner_for(user)
    if model:  # the model of every step that did not choose one with set_models
        spec = spec.model_copy(deep=True)
        for step in spec.steps:
            if not step.model.name:
                step.model.name = model
    providers = {}
    if base_url:
        providers = {"*": adhoc.provider_for_url(owner, base_url, api_key, model, concurrency).pk}
    elif provider:
        workspace = Workspace.personal(owner)
        saved = Provider.objects.filter(workspace=workspace, name=provider).first()
        if saved is None:
            raise ValueError(f"{workspace.name} has no provider named '{provider}'")
        providers = {"*": saved.pk}
    elif not settings.DEFAULT_LLM_BASE_URL:
        raise ValueError(
            "no LLM provider: pass execute(base_url='http://.../v1', model='...', api_key='...') "
            "(an OpenAI-compatible endpoint), provider='a saved provider', or set "
            "DEFAULT_LLM_BASE_URL and DEFAULT_LLM_MODEL"
        )
    run = engine.launch_run(
        owner, spec, inputs, providers=providers, concurrency=concurrency, budget=budget
    )
    pipeline.run = run
    run = _wait(run, timeout, start_timeout, poll)
    pipeline.run = run
    if run.status not in (Run.COMPLETED, Run.COMPLETED_WITH_FAILURES):
        reason = run.error or ", ".join(f"{n} x {r}" for n, r in stats.failure_summary(run, 5))
        raise DriaRunError(f"run {run.code} ended {run.status}: {reason or 'no reason given'}", run)
    failures = stats.failure_summary(run, 5)
    if failures:
        total = sum(n for n, _ in failures)
        warnings.warn(
            f"run {run.code}: {total} task(s) failed ("
            + "; ".join(f"{n} x {r}" for n, r in failures)
            + "); the records of the others are returned",
            RuntimeWarning,
            stacklevel=3,
        )
    if not return_output:
        return str(run.code)
    return [r.data for r in Record.objects.filter(run=run).kept().order_by("seq", "pk")]


def _wait(run, timeout, start_timeout, poll):
    started = time.monotonic()
    while True:
        run.refresh_from_db()
        if not run.is_active:
            return run
        waited = time.monotonic() - started
        if run.status == Run.QUEUED and start_timeout and waited > start_timeout:
            engine.cancel_run(run)
            raise DriaRunError(
                f"no worker picked up run {run.code} within {start_timeout:g}s, so it was "
                "cancelled: start the workers (`make run`, or a Celery worker) and try again",
                run,
            )
        if timeout and waited > timeout:
            engine.cancel_run(run)
            raise DriaRunError(
                f"run {run.code} did not end within {timeout:g}s, so it was cancelled; "
                "resume it from the run page",
                run,
            )
        time.sleep(poll)
