"""The pipelines page: list, create, rename, duplicate, delete, import and export,
versions, and the gallery of built-in templates.

Views are adapters: an access helper finds the pipeline (another user's is a 404,
whatever the method), a form validates, designer/actions.py applies.
"""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import JSONField, Max, OuterRef, Subquery
from django.http import Http404, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.http import content_disposition_header
from django.utils.text import slugify

from runner.models.workspaces import EDIT, PIPELINES
from runner.spec import OutputFormat, PipelineSpec, SpecError, library

from . import actions
from .access import current, need, pipeline_for
from .assignments import GUIDELINES_CHARS, render_guidelines
from .history import note, of_pipeline
from .models import Pipeline, PipelineVersion
from .views import go

IMPORT_MAX_BYTES = 1024 * 1024


class PipelineNameForm(forms.Form):
    name = forms.CharField(
        max_length=200,
        error_messages={
            "required": "Give the pipeline a name.",
            "max_length": "Keep the name under 200 characters.",
        },
    )

    def clean_name(self):
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give the pipeline a name.")
        return name


class ImportForm(forms.Form):
    """A pipeline JSON file, checked by the spec; `spec` is set once the form is valid."""

    file = forms.FileField(
        label="Pipeline file (.json)",
        error_messages={
            "required": "Choose a pipeline file to import.",
            "empty": "The file is empty: choose a pipeline file exported from this designer.",
        },
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = None
        self.problems = []

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; a pipeline file can be at most "
                f"{filesizeformat(IMPORT_MAX_BYTES)}. Choose a smaller file."
            )
        data = upload.read(IMPORT_MAX_BYTES + 1)
        try:
            self.spec = PipelineSpec.load(data, max_depth=settings.JSON_MAX_DEPTH)
        except SpecError as exc:
            self.problems = exc.problems
            raise forms.ValidationError(
                "This file cannot be imported. Fix the problems listed below and try again."
            ) from None
        return upload


FORMAT_LABELS = {
    OutputFormat.TEXT: "text",
    OutputFormat.JSON_LIST: "JSON list",
    OutputFormat.JSON_OBJECT: "JSON object",
}


# -- helpers -------------------------------------------------------------------------


def open_url(pipeline):
    """Where a new or copied pipeline opens: the designer."""
    return reverse("designer:pipeline-edit", args=[pipeline.code])


def post_only(request):
    """None for a POST; else the 405 to return (checked after access, so strangers get 404)."""
    return None if request.method == "POST" else HttpResponseNotAllowed(["POST"])


def version_for(pipeline, number):
    return get_object_or_404(PipelineVersion, pipeline=pipeline, number=number)


def step_rows(spec: PipelineSpec):
    """What a person reads about each step, without opening the editor."""
    rows = []
    for i, step in enumerate(spec.steps, 1):
        cb = step.callback
        callback = cb.type
        if cb.type == "broadcast" and cb.n:
            callback = f"broadcast × {cb.n}"
        elif cb.type == "scatter":
            callback = f"scatter into {cb.item_key or step.output_key}"
        rows.append(
            {
                "number": i,
                "name": step.name,
                "prompt": step.prompt,
                "fan": step.fan,
                "format": FORMAT_LABELS.get(step.output_format, step.output_format),
                "output_key": step.output_key,
                "callback": callback,
                "model": step.model.name or "provider's default",
                "provider": step.model.provider,
            }
        )
    return rows


def spec_context(data):
    """Template context for a stored spec: summary rows, problems and pretty JSON."""
    spec = PipelineSpec.model_validate(data)
    return {
        "spec": spec,
        "steps": step_rows(spec),
        "inputs": spec.first_step_keys(),
        "problems": spec.problems(),
        "spec_json": spec.to_json(),
    }


def export_response(pipeline, version):
    spec = PipelineSpec.model_validate(version.spec)
    filename = f"{slugify(pipeline.name) or 'pipeline'}-v{version.number}.json"
    response = HttpResponse(spec.to_json() + "\n", content_type="application/json")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


# -- list, create, rename, duplicate, delete -----------------------------------------------


def _list_context(request, form=None):
    latest = PipelineVersion.objects.filter(pipeline=OuterRef("pk")).order_by("-number")
    pipelines = Pipeline.objects.filter(workspace=current(request).workspace).annotate(
        latest_number=Max("versions__number"),
        latest_spec=Subquery(latest.values("spec")[:1], output_field=JSONField()),
    )
    rows = []
    for p in pipelines:
        spec = p.latest_spec if isinstance(p.latest_spec, dict) else {}
        rows.append({"pipeline": p, "steps": len(spec.get("steps") or [])})
    return {
        "rows": rows,
        "form": form or PipelineNameForm(),
        "has_editor": True,  # the list links each pipeline to the designer
    }


@login_required
def pipeline_list(request):
    need(request, PIPELINES)
    return render(request, "designer/pipelines.html", _list_context(request))


@login_required
def pipeline_create(request):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    member = need(request, EDIT)
    form = PipelineNameForm(request.POST)
    if form.is_valid():
        pipeline = actions.create_pipeline(
            request.user, PipelineSpec(name=form.cleaned_data["name"]), workspace=member.workspace
        )
        note(request.user, pipeline.workspace_id, "created the pipeline", pipeline=pipeline)
        messages.success(request, f"Created the pipeline “{pipeline.name}”.")
        return go(request, open_url(pipeline))
    if request.htmx:
        return render(request, "designer/pipelines_create_form.html", {"form": form})
    return render(request, "designer/pipelines.html", _list_context(request, form))


@login_required
def pipeline_detail(request, code):
    pipeline = pipeline_for(request.user, code)
    latest = pipeline.latest
    ctx = spec_context(latest.spec if latest else PipelineSpec(name=pipeline.name).to_dict())
    ctx.update(
        pipeline=pipeline,
        latest=latest,
        versions=pipeline.versions.all()[:5],
        edit_url=reverse("designer:pipeline-edit", args=[pipeline.code]),
        launch_url=reverse("designer:pipeline-launch", args=[pipeline.code]),
        guidelines=render_guidelines(pipeline.guidelines),
        can_edit=pipeline.member.can(EDIT),
        history=of_pipeline(pipeline),
    )
    return render(request, "designer/pipeline_detail.html", ctx)


@login_required
def pipeline_guidelines(request, code):
    """The pipeline's review guidelines (Markdown), shown beside each record in review."""
    pipeline = pipeline_for(request.user, code, EDIT)
    if refused := post_only(request):
        return refused
    text = request.POST.get("guidelines", "")
    if len(text) > GUIDELINES_CHARS:
        messages.error(
            request,
            f"Keep the guidelines under {GUIDELINES_CHARS:,} characters; nothing was saved.",
        )
    else:
        pipeline.guidelines = text
        pipeline.save(update_fields=["guidelines", "updated"])
        note(
            request.user, pipeline.workspace_id, "changed the review guidelines", pipeline=pipeline
        )
        messages.success(request, "Saved the review guidelines.")
    return redirect("designer:pipeline-detail", code=pipeline.code)


@login_required
def pipeline_rename(request, code):
    pipeline = pipeline_for(request.user, code, EDIT)
    if request.method == "POST":
        form = PipelineNameForm(request.POST)
        if form.is_valid():
            old = pipeline.name
            actions.rename_pipeline(pipeline, form.cleaned_data["name"])
            note(
                request.user,
                pipeline.workspace_id,
                f"renamed it from “{old}” to “{pipeline.name}”",
                pipeline=pipeline,
            )
            messages.success(request, f"Renamed “{old}” to “{pipeline.name}”.")
            return go(request, reverse("designer:pipeline-list"))
    else:
        form = PipelineNameForm(initial={"name": pipeline.name})
    ctx = {"pipeline": pipeline, "form": form}
    if request.htmx:
        return render(request, "designer/pipeline_rename_form.html", ctx)
    return render(request, "designer/pipeline_rename.html", ctx)


@login_required
def pipeline_duplicate(request, code):
    pipeline = pipeline_for(request.user, code, EDIT)
    if refused := post_only(request):
        return refused
    copy = actions.duplicate_pipeline(pipeline, request.user)
    note(request.user, copy.workspace_id, f"made it as a copy of “{pipeline.name}”", pipeline=copy)
    messages.success(request, f"Made “{copy.name}”, a copy of “{pipeline.name}”.")
    return go(request, reverse("designer:pipeline-list"))


@login_required
def pipeline_delete(request, code):
    pipeline = pipeline_for(request.user, code, EDIT)
    if request.method == "POST":
        name = pipeline.name
        pipeline.delete()
        messages.success(request, f"Deleted the pipeline “{name}” and its versions.")
        return go(request, reverse("designer:pipeline-list"))
    return render(
        request,
        "designer/pipeline_delete.html",
        {"pipeline": pipeline, "version_count": pipeline.versions.count()},
    )


# -- import and export -----------------------------------------------------------------------


@login_required
def pipeline_import(request):
    member = need(request, EDIT)
    form = ImportForm(*((request.POST, request.FILES) if request.method == "POST" else ()))
    if form.is_bound and form.is_valid():
        pipeline = actions.import_pipeline(
            request.user, form.spec, form.cleaned_data["file"].name, member.workspace
        )
        note(request.user, pipeline.workspace_id, "imported the pipeline", pipeline=pipeline)
        messages.success(request, f"Imported the pipeline “{pipeline.name}”.")
        return go(request, open_url(pipeline))
    return render(
        request,
        "designer/pipeline_import.html",
        {"form": form, "problems": form.problems, "max_bytes": IMPORT_MAX_BYTES},
    )


@login_required
def pipeline_export(request, code):
    pipeline = pipeline_for(request.user, code)
    latest = pipeline.latest
    if latest is None:
        raise Http404("this pipeline has no saved version")
    return export_response(pipeline, latest)


@login_required
def version_export(request, code, number):
    pipeline = pipeline_for(request.user, code)
    return export_response(pipeline, version_for(pipeline, number))


# -- versions -----------------------------------------------------------------------------------


@login_required
def pipeline_versions(request, code):
    pipeline = pipeline_for(request.user, code)
    rows = []
    latest_number = None
    for v in pipeline.versions.all():
        latest_number = latest_number or v.number
        steps = v.spec.get("steps") if isinstance(v.spec, dict) else None
        names = [s.get("name", "?") for s in steps or [] if isinstance(s, dict)]
        rows.append({"version": v, "step_names": names, "is_latest": v.number == latest_number})
    return render(request, "designer/pipeline_versions.html", {"pipeline": pipeline, "rows": rows})


@login_required
def version_detail(request, code, number):
    pipeline = pipeline_for(request.user, code)
    version = version_for(pipeline, number)
    ctx = spec_context(version.spec)
    ctx.update(
        pipeline=pipeline,
        version=version,
        is_latest=version.number == pipeline.versions.aggregate(n=Max("number"))["n"],
    )
    return render(request, "designer/pipeline_version.html", ctx)


@login_required
def version_restore(request, code, number):
    pipeline = pipeline_for(request.user, code, EDIT)
    version = version_for(pipeline, number)
    if refused := post_only(request):
        return refused
    before = pipeline.latest
    restored = actions.restore_version(pipeline, version)
    if before is not None and restored.pk == before.pk:
        messages.info(request, f"Version {version.number} is already the current content.")
    else:
        note(
            request.user,
            pipeline.workspace_id,
            f"restored version {version.number} as version {restored.number}",
            pipeline=pipeline,
        )
        messages.success(
            request, f"Restored version {version.number} as version {restored.number}."
        )
    return go(request, reverse("designer:pipeline-versions", args=[pipeline.code]))


# -- templates gallery ---------------------------------------------------------------------------


@login_required
def template_list(request):
    need(request, PIPELINES)
    cards = [
        {"template": t, "steps": step_rows(t.spec), "inputs": t.spec.first_step_keys()}
        for t in library.templates()
    ]
    return render(request, "designer/templates.html", {"cards": cards})


@login_required
def template_use(request, slug):
    template = library.get(slug)
    if template is None:
        raise Http404("no such template")
    if refused := post_only(request):
        return refused
    member = need(request, EDIT)
    pipeline = actions.pipeline_from_template(request.user, template, member.workspace)
    note(
        request.user,
        pipeline.workspace_id,
        f"made it from the template {template.title}",
        pipeline=pipeline,
    )
    messages.success(request, f"Made “{pipeline.name}”, your own copy of the template.")
    return go(request, open_url(pipeline))


urlpatterns = [
    path("pipelines/", pipeline_list, name="pipeline-list"),
    path("pipelines/new/", pipeline_create, name="pipeline-create"),
    path("pipelines/import/", pipeline_import, name="pipeline-import"),
    path("pipelines/<uuid:code>/", pipeline_detail, name="pipeline-detail"),
    path("pipelines/<uuid:code>/rename/", pipeline_rename, name="pipeline-rename"),
    path("pipelines/<uuid:code>/duplicate/", pipeline_duplicate, name="pipeline-duplicate"),
    path("pipelines/<uuid:code>/delete/", pipeline_delete, name="pipeline-delete"),
    path("pipelines/<uuid:code>/export/", pipeline_export, name="pipeline-export"),
    path("pipelines/<uuid:code>/versions/", pipeline_versions, name="pipeline-versions"),
    path("pipelines/<uuid:code>/guidelines/", pipeline_guidelines, name="pipeline-guidelines"),
    path(
        "pipelines/<uuid:code>/versions/<int:number>/",
        version_detail,
        name="pipeline-version",
    ),
    path(
        "pipelines/<uuid:code>/versions/<int:number>/export/",
        version_export,
        name="pipeline-version-export",
    ),
    path(
        "pipelines/<uuid:code>/versions/<int:number>/restore/",
        version_restore,
        name="pipeline-version-restore",
    ),
    path("templates/", template_list, name="template-list"),
    path("templates/<slug:slug>/use/", template_use, name="template-use"),
]
