"""Noting what people do (`note`) and reading it back for a run, a pipeline or a record."""

from runner.models import Event

SHOWN = 30  # events a page lists


def note(user, workspace_id, text, *, run=None, pipeline=None, record=None):
    Event.objects.create(
        workspace_id=workspace_id,
        actor=user if getattr(user, "is_authenticated", False) else None,
        text=text[:300],
        run=run,
        pipeline_code=getattr(pipeline, "code", None),
        record=record,
    )


def _listed(events):
    return list(events.select_related("actor").order_by("-at", "-pk")[:SHOWN])


def of_run(run):
    return _listed(Event.objects.filter(run_id=run.pk))


def of_pipeline(pipeline):
    return _listed(Event.objects.filter(pipeline_code=pipeline.code))


def of_record(record):
    return _listed(Event.objects.filter(record_id=record.pk))
