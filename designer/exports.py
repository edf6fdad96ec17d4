"""Export a run's records from the browser: the options page and the download.

The download streams: JSONL and CSV rows (plain or zipped) are written batch by
batch as the response goes out, Parquet row group by row group; nothing holds a
whole run in memory. Under ASGI the rows are produced in a worker thread one
chunk at a time (an async iterator), so the download does not block the server.
The same options drive `manage.py exportrun`.
"""

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.text import slugify

from runner import export
from runner.models.workspaces import EXPORT

from .access import run_for
from .review import counter
from .runs import pipeline_label

TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/octet-stream"}
PACKAGES = ("data", "zip", "card")


def options_from(params, keys, run):
    """(Options, file type, package, problems) from the export form's fields."""
    problems = []
    kind = params.get("type", "jsonl")
    if kind not in TYPES:
        problems.append(f"choose a file type: {', '.join(TYPES)}")
    package = params.get("package", "data")
    if package not in PACKAGES:
        problems.append("choose the data file, a .zip with the README, or the README alone")
    shape = params.get("shape", "plain")
    fields = None
    if shape == "plain":
        chosen = [k for k in params.getlist("field") if k]
        renamed = {k: (params.get(f"rename:{k}") or "").strip() for k in chosen}
        if not chosen:
            problems.append("choose at least one field to export")
        elif set(chosen) != set(keys) or any(v and v != k for k, v in renamed.items()):
            spec = ",".join(f"{k}:{renamed[k]}" if renamed[k] else k for k in chosen)
            try:
                fields = export.parse_fields(spec)
            except export.ExportError as exc:
                problems += exc.problems
    options = export.Options(
        shape=shape,
        accepted_only=params.get("records") == "accepted",
        fields=fields,
        meta=bool(params.get("meta")),
        prompt_field=params.get("prompt_field", ""),
        answer_field=params.get("answer_field", ""),
        system=params.get("system", "").strip(),
        choose=params.get("choose") or export.default_choose(run),
        set_aside=bool(params.get("set_aside")),
        decision="majority" if params.get("decision") == "majority" else "decided",
    )
    problems += options.problems(keys)
    return options, kind, package, problems


def _form(request, run, keys, params=None, problems=None):
    prompt, answer = export.default_chat_fields(run)
    params = params or {}
    chosen = set(params.getlist("field")) if hasattr(params, "getlist") else set(keys)
    return render(
        request,
        "runs/export.html",
        {
            "run": run,
            "pipeline": pipeline_label(run),
            "keys": [
                {
                    "key": k,
                    "checked": k in chosen or not params,
                    "rename": params.get(f"rename:{k}", ""),
                }
                for k in keys
            ],
            "values": {
                "type": params.get("type", "jsonl"),
                "records": params.get("records", "all"),
                "shape": params.get("shape", "plain"),
                "package": params.get("package", "data"),
                "meta": bool(params.get("meta")) if params else True,
                "prompt_field": params.get("prompt_field", prompt),
                "answer_field": params.get("answer_field", answer),
                "choose": params.get("choose") or export.default_choose(run),
                "set_aside": bool(params.get("set_aside")),
                "decision": params.get("decision", "decided"),
                "system": params.get("system", ""),
            },
            "choices": export.CHOICES,
            "count": counter(run),
            "problems": problems or [],
        },
    )


@login_required
def export_page(request, code):
    run = run_for(request.user, code, EXPORT)
    return _form(request, run, export.record_keys(run))


async def _async_chunks(chunks):
    """Pull a sync generator (it queries the database) one chunk at a time in a thread."""
    done = object()
    pull = sync_to_async(lambda: next(chunks, done), thread_sensitive=True)
    while True:
        chunk = await pull()
        if chunk is done:
            return
        yield chunk


@login_required
def export_download(request, code):
    run = run_for(request.user, code, EXPORT)
    keys = export.record_keys(run)
    options, kind, package, problems = options_from(request.GET, keys, run)
    if problems:
        return _form(request, run, keys, request.GET, problems)
    job = export.Export(run, options)
    card = {"pipeline_name": pipeline_label(run)}
    stem = f"{slugify(run.name)[:40] or 'run'}-{run.code.hex[:8]}"
    if package == "card":
        job.count()
        text = job.card(data_name=f"data.{kind}", **card)
        response = HttpResponse(text, content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{stem}-README.md"'
        return response
    reason = job.empty_reason()  # say why, rather than send an empty file
    if reason:
        return _form(request, run, keys, request.GET, [reason])
    if package == "zip":
        chunks, content_type, name = job.zip_chunks(kind, card), "application/zip", f"{stem}.zip"
    else:
        chunks, content_type, name = job.chunks(kind), TYPES[kind], f"{stem}.{kind}"
    if isinstance(request, ASGIRequest):
        chunks = _async_chunks(chunks)
    response = StreamingHttpResponse(chunks, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


urlpatterns = [
    path("runs/<uuid:code>/export/", export_page, name="run-export"),
    path("runs/<uuid:code>/export/download/", export_download, name="run-export-download"),
]
