"""Work on pipelines that spans models: forms validate, these apply."""

import asyncio
import time
from dataclasses import dataclass

from django.db import transaction

from runner.models import Provider
from runner.providers import CompletionRequest, ProviderError, build_provider, close_clients
from runner.spec import PipelineSpec

from .models import Pipeline, PipelineVersion


def create_pipeline(owner, spec: PipelineSpec, name=None, note="created", workspace=None):
    """A new pipeline whose first version is `spec` (which may still be incomplete), in
    `workspace` (the owner's first when not given)."""
    with transaction.atomic():
        pipeline = Pipeline.objects.create(owner=owner, workspace=workspace, name=name or spec.name)
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
        workspace=pipeline.workspace,
    )


def restore_version(pipeline, version):
    spec = PipelineSpec.model_validate(version.spec)
    return save_version(pipeline, spec, note=f"restored version {version.number}")


IMPORTED = " (imported)"


def import_pipeline(owner, spec: PipelineSpec, filename="", workspace=None):
    """A new pipeline of an imported spec, named "<its name> (imported)"."""
    note = f"imported from {filename}"[:200] if filename else "imported"
    name = (
        spec.name if spec.name.endswith(IMPORTED) else spec.name[: 200 - len(IMPORTED)] + IMPORTED
    )
    return create_pipeline(owner, spec, name=name, note=note, workspace=workspace)


def rename_run(run, name):
    run.name = name
    run.save(update_fields=["name"])


def pipeline_from_template(owner, template, workspace=None):
    note = f"from the template {template.title}"[:200]
    return create_pipeline(owner, template.spec, note=note, workspace=workspace)


def save_provider(owner, data, provider=None, workspace=None):
    """Create or update a provider from a ProviderForm's cleaned data.

    An empty key keeps the saved one; a new key is stored encrypted. Prices are
    {model: [input, output]} dollars per million tokens (see runner/costs.py).
    """
    if provider is None:
        provider = Provider(owner=owner, workspace=workspace)
    provider.name = data["name"]
    provider.kind = data["kind"]
    provider.base_url = data["base_url"]
    provider.default_model = data["default_model"]
    provider.models_list = data["models"]
    provider.concurrency = data["concurrency"]
    provider.rpm = data.get("rpm")
    provider.tpm = data.get("tpm")
    provider.max_reply_mb = data.get("max_reply_mb")
    provider.embedding_model = (data.get("embedding_model") or "").strip()
    if "prices" in data:  # {model: [input, output]}; {} clears them
        provider.prices = data["prices"]
    if data.get("api_key"):
        provider.set_api_key(data["api_key"])
    provider.save()
    return provider


@dataclass
class ConnectionCheck:
    ok: bool
    model: str = ""
    latency_ms: int = 0
    reply: str = ""
    error: str = ""
    hint: str = ""


def _hint(exc):
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return "Check the API key."
    if status == 404:
        return "Check the base URL (it usually ends in /v1) and the model name."
    if status == 429:
        return "The endpoint is busy or out of quota; try again later."
    if status is None and getattr(exc, "transient", False):
        return "Check the base URL and that the server is running and reachable from here."
    return ""


def check_provider(provider, timeout=10.0):
    """Make one tiny chat completion with `provider`; say how it went in plain words."""
    model = provider.default_model or next(iter(provider.models_list or []), "")
    if not model:
        return ConnectionCheck(
            ok=False,
            error="No model to test with.",
            hint="Set a default model or list a model name, save, and test again.",
        )
    try:
        key = provider.api_key
    except ValueError as exc:
        return ConnectionCheck(ok=False, model=model, error=str(exc))
    request = CompletionRequest(
        model=model,
        messages=[{"role": "user", "content": "Reply with OK"}],
        max_tokens=5,
        timeout=timeout,
    )

    async def call():
        try:
            llm = build_provider(provider.kind, provider.base_url, key, model)
            return await llm.complete(request)
        finally:
            await close_clients()

    started = time.perf_counter()
    try:
        completion = asyncio.run(call())
    except ProviderError as exc:
        return ConnectionCheck(ok=False, model=model, error=exc.message, hint=_hint(exc))
    except Exception as exc:  # anything else the endpoint did: say it, do not crash the page
        return ConnectionCheck(ok=False, model=model, error=str(exc) or type(exc).__name__)
    latency_ms = completion.latency_ms or int((time.perf_counter() - started) * 1000)
    return ConnectionCheck(
        ok=True,
        model=completion.model or model,
        latency_ms=latency_ms,
        reply=(completion.text or "").strip()[:200],
    )
