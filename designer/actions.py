"""Work on pipelines that spans models: forms validate, these apply."""

from django.db import transaction

from runner.spec import PipelineSpec

from .models import Pipeline, PipelineVersion


def create_pipeline(owner, spec: PipelineSpec, name=None, note="created"):
    """A new pipeline whose first version is `spec` (which may still be incomplete)."""
    with transaction.atomic():
        pipeline = Pipeline.objects.create(owner=owner, name=name or spec.name)
        data = spec.model_copy(update={"name": pipeline.name}).to_dict()
        PipelineVersion.objects.create(pipeline=pipeline, number=1, spec=data, note=note)
    return pipeline


def save_version(pipeline, spec: PipelineSpec, note=""):
    """Save `spec` as a new version when it differs from the latest; return the latest version."""
    data = spec.model_copy(update={"name": pipeline.name}).to_dict()
    with transaction.atomic():
        latest = pipeline.versions.select_for_update().order_by("-number").first()
        if latest is not None and latest.spec == data:
            return latest
        number = (latest.number if latest else 0) + 1
        version = PipelineVersion.objects.create(
            pipeline=pipeline, number=number, spec=data, note=note
        )
        pipeline.save(update_fields=["updated"])
    return version


def rename_pipeline(pipeline, name):
    pipeline.name = name
    pipeline.save(update_fields=["name", "updated"])
    spec = pipeline.spec()
    return save_version(pipeline, spec, note="renamed")


def duplicate_pipeline(pipeline, owner):
    return create_pipeline(
        owner,
        pipeline.spec(),
        name=f"Copy of {pipeline.name}"[:200],
        note=f"copied from {pipeline.name}",
    )


def restore_version(pipeline, version):
    spec = PipelineSpec.model_validate(version.spec)
    return save_version(pipeline, spec, note=f"restored version {version.number}")
