"""How a run executes: launch, claim, call, finish, fan out, settle; pause, resume, cancel.

A run's tasks live in the database. Drivers (Celery tasks, one or more per run,
`runner/driver.py`) claim pending tasks in chunks with an atomic update and a
lease, make the chunk's LLM calls concurrently on the process's asyncio loop
(`runner/calls.py`), and write results in bulk (`runner/results.py`); each
finished task makes its children at once, and only waiting callbacks (aggregate,
flatten, python) wait for their step. Every reply is put in a run-scoped Redis
cache before anything else, so a call whose worker died before saving is not
paid for twice, and identical calls inside a run are made once.

This module holds what the rest of the product calls: launch, cancel, resume,
retry, set a budget; and re-exports the pieces tests and workers use.
"""

import logging
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import costs, limits, progress
from .callbacks import Child, StepResult, root_seq
from .calls import CallRunner, Job, Result
from .driver import Driver, stopping
from .endpoints import Endpoint, LaunchError, resolve_endpoints
from .models import Run, Task
from .results import finish, insert_records, insert_tasks, settle
from .spec import PipelineSpec, SpecError

log = logging.getLogger("runner.engine")


# -- launch, cancel, resume -----------------------------------------------------------


def launch_run(
    owner,
    spec,
    inputs,
    *,
    providers=None,
    model="",
    concurrency=None,
    name="",
    pipeline_code=None,
    pipeline_version=None,
    drivers=None,
    budget=None,
):
    """Validate, write the run and its first tasks, and hand it to the workers.

    `budget` (dollars, optional): the run pauses when its calls have cost that much."""
    if not isinstance(spec, PipelineSpec):
        spec = PipelineSpec.load(spec)
    else:
        problems = spec.problems()
        if problems:
            raise SpecError(problems)
    problems = spec.check_inputs(inputs)
    if problems:
        raise LaunchError(problems)
    run = Run(
        owner=owner,
        name=name or spec.name,
        spec=spec.to_dict(),
        inputs=inputs,
        providers=providers or {},
        model_override=model or "",
        concurrency=concurrency,
        pipeline_code=pipeline_code,
        pipeline_version=pipeline_version,
        budget=_money(budget),
    )
    resolve_endpoints(run, spec)
    with transaction.atomic():
        run.save()
        now = timezone.now()
        Task.objects.bulk_create(
            [
                Task(run=run, step=0, key=f"in:{i}", seq=root_seq(i), context=row, created=now)
                for i, row in enumerate(inputs)
            ],
            batch_size=500,
        )
        start_drivers(run, drivers)
    return run


def start_drivers(run, count=None):
    from .tasks import drive_run

    count = count or settings.RUNNER_DRIVERS_PER_RUN
    try:
        limits.client().set(
            f"pd:run-alive:{run.pk}", "queued", ex=max(60, settings.RUNNER_HEARTBEAT_TTL)
        )
    except Exception:  # Redis down: the watchdog starts the driver later
        log.warning("could not mark run %s as queued in Redis", run.pk)
    for _ in range(count):
        drive_run.delay_on_commit(run.pk)


def cancel_run(run):
    """Stop new claims; calls in flight finish and are saved; the rest stays pending."""
    Run.objects.filter(pk=run.pk, status__in=[Run.QUEUED, Run.RUNNING, Run.PAUSED]).update(
        status=Run.CANCELLED, finished=timezone.now()
    )
    run.refresh_from_db()
    progress.announce(run)
    return run


def resume_run(run, *, failed=True):
    """Re-queue what is pending (and failed, unless told not to); finished calls are kept."""
    with transaction.atomic():
        if failed:
            # A new round gets fresh calls: the cached replies that failed are not reused.
            Task.objects.filter(run=run, status=Task.FAILED).release(error="", round=F("round") + 1)
        Task.objects.filter(run=run, status__in=[Task.CANCELLED, Task.RUNNING]).release()
        Run.objects.filter(pk=run.pk).update(status=Run.QUEUED, finished=None, error="")
        start_drivers(run)
    run.refresh_from_db()
    progress.announce(run)
    return run


def retry_failed(run):
    return resume_run(run, failed=True)


def _money(amount):
    if amount is None or amount == "":
        return None
    amount = Decimal(str(amount))
    if amount < 0:
        raise ValueError("a budget cannot be negative")
    return amount


def set_budget(run, amount):
    """Set (or, with None, remove) a run's budget in dollars; a paused run resumes if it now fits.

    A run paused on its budget stays paused, with the message updated, while the new
    budget is still spent; otherwise it is queued again and its drivers start."""
    amount = _money(amount)
    with transaction.atomic():
        Run.objects.filter(pk=run.pk).update(budget=amount)
        run.refresh_from_db()
        if run.status == Run.PAUSED:
            if costs.over_budget(run):
                run.error = costs.paused_message(run.spent, run.budget)
                Run.objects.filter(pk=run.pk).update(error=run.error)
            else:
                Run.objects.filter(pk=run.pk, status=Run.PAUSED).update(
                    status=Run.QUEUED, error="", finished=None
                )
                start_drivers(run)
    run.refresh_from_db()
    progress.announce(run)
    return run


def orphaned_runs():
    """Runs that should be moving but that no live driver is driving."""
    out = []
    for run_id in Run.objects.filter(status__in=[Run.QUEUED, Run.RUNNING]).values_list(
        "pk", flat=True
    ):
        if not limits.client().exists(f"pd:run-alive:{run_id}"):
            out.append(run_id)
    return out


__all__ = [
    "CallRunner",
    "Child",
    "Driver",
    "Endpoint",
    "Job",
    "LaunchError",
    "Result",
    "StepResult",
    "cancel_run",
    "finish",
    "insert_records",
    "insert_tasks",
    "launch_run",
    "orphaned_runs",
    "resolve_endpoints",
    "resume_run",
    "retry_failed",
    "set_budget",
    "settle",
    "start_drivers",
    "stopping",
]
