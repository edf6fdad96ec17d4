"""The designer page: build a pipeline by dragging steps, edit them, try one, save.

The working copy (the draft) is a whole pipeline spec kept in the page, in a hidden
field of the pipeline column. Every edit (add, move, remove, apply a step's form)
is an htmx POST carrying the draft; the view applies it on the server, checks it
with runner.spec, and answers with the re-rendered editor (the pipeline column and
the side panel) holding the new draft. Nothing is stored until Save, which writes
a new version when the draft differs from the latest one. The draft is always a
structurally valid `PipelineSpec`; what it means (variables that exist, callbacks
that fit) is reported beside the cards and the form fields, in plain words.
"""

import functools
import json
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET, require_POST
from pydantic import ValidationError
from redis.exceptions import RedisError

from runner.engine import trial
from runner.models import Provider
from runner.models.workspaces import EDIT, PIPELINES
from runner.spec import CallbackSpec, PipelineSpec, StepSpec, tables

from .access import pipeline_for
from .actions import save_version
from .history import note
from .quality_form import QualityStepForm as StepForm  # the step form: workflow, judge, quality
from .quality_form import known_fields, new_judge
from .quality_rows import judge_words, quality_words
from .step_forms import TryForm, output_format_label, plain_words, problems_by_step

PROMPT_START = 90
QUEUE_DOWN = "The workers' queue (Redis) cannot be reached right now; try again in a moment."


class BadRequest(Exception):
    pass


# -- the palette ------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    slug: str
    title: str
    hint: str
    name: str
    output_key: str
    prompt: str
    output_format: str = "text"
    callback: tuple = (("type", "default"),)
    button: str = "Add"


PALETTE = [
    Kind(
        "text",
        "Generate text",
        "One reply for each input (1 → 1).",
        "text",
        "text",
        "Write a short paragraph about {{%s}}.",
    ),
    Kind(
        "list",
        "Generate a list and fan it out",
        "A JSON list; every item becomes its own task (1 → N).",
        "list",
        "items",
        "List 5 ideas related to {{%s}}.\nReply with a JSON list of short strings and nothing else.",
        "json_list",
        (("type", "scatter"), ("item_key", "item")),
    ),
    Kind(
        "variants",
        "Generate n variants",
        "Each reply feeds n copies of the next step (1 → n).",
        "variants",
        "variant",
        "Write a short text about {{%s}}.",
        "text",
        (("type", "broadcast"), ("n", 3)),
    ),
    Kind(
        "combine",
        "Combine all results",
        "Every reply of this step goes, as one list, to one next task (N → 1).",
        "combine",
        "combined",
        "Summarize {{%s}} in one sentence.",
        "text",
        (("type", "aggregate"),),
    ),
    Kind(
        "transform",
        "Transform",
        "Split a reply into lines or by a delimiter, flatten lists, or pick a field.",
        "transform",
        "lines",
        "Write 5 short lines about {{%s}}, one per line.",
        "text",
        (("type", "split_lines"), ("item_key", "line")),
    ),
    Kind(
        "judge",
        "Judge with a rubric",
        "Scores each record on criteria you write; the scores become fields (1 → 1).",
        "judge",
        "judge",
        "",
        button="Add a judge step",
    ),
]
KINDS = {k.slug: k for k in PALETTE}


def _unique(base, taken, sep):
    if base not in taken:
        return base
    n = 2
    while f"{base}{sep}{n}" in taken:
        n += 1
    return f"{base}{sep}{n}"


def _taken_keys(spec):
    """Every key the pipeline already makes or reads, so a new step's names are its own."""
    contexts = spec.contexts()
    taken = set(spec.first_step_keys())
    for i, step in enumerate(spec.steps):
        taken.add(step.output_key)
        taken.update(step.result_keys())
        if contexts[i]:
            taken.update(contexts[i])
    return taken


def new_step(kind, spec, index):
    """A ready-to-edit step of a palette kind, for position `index` of `spec`."""
    k = KINDS[kind]
    taken_keys = _taken_keys(spec)
    output_key = _unique(k.output_key, taken_keys, "_")
    name = _unique(k.name, {s.name for s in spec.steps}, " ")
    if kind == "judge":
        score = _unique("score", taken_keys | {output_key}, "_")
        return new_judge(spec, index, name, output_key, score)
    if index > 0:
        variable = (spec.steps[index - 1].result_keys() or ["topic"])[0]
    else:
        variable = (spec.first_step_keys() or ["topic"])[0]
    callback = dict(k.callback)
    if callback.get("item_key"):
        callback["item_key"] = _unique(callback["item_key"], taken_keys | {output_key}, "_")
    return StepSpec(
        name=name,
        prompt=k.prompt % variable,
        output_format=k.output_format,
        output_key=output_key,
        callback=CallbackSpec(**callback),
    )


# -- the draft --------------------------------------------------------------------------


def _providers(request):
    """The providers a step of the pipeline being edited can use: its workspace's."""
    workspace = request.editing.workspace
    return list(Provider.objects.filter(workspace=workspace).order_by("name"))


def read_draft(request, pipeline):
    """The draft the page sent, or the latest saved spec when it sent none."""
    raw = request.POST.get("draft")
    if raw is None:
        return pipeline.spec()
    try:
        return PipelineSpec.model_validate(tables.load_json(raw, settings.JSON_MAX_DEPTH))
    except (ValueError, ValidationError):
        raise BadRequest("the page sent a pipeline that could not be read; reload it") from None


def _index(request, name, size):
    try:
        value = int(request.POST.get(name, ""))
    except ValueError:
        raise BadRequest(f"{name} is not a number") from None
    if not 0 <= value < size:
        raise BadRequest(f"there is no step {value + 1}")
    return value


def _normal(pipeline, spec):
    return spec.model_copy(update={"name": pipeline.name}).to_dict()


def _dirty(pipeline, spec, latest):
    if latest is None:
        return True
    try:
        saved = PipelineSpec.model_validate(latest.spec).to_dict()
    except ValidationError:
        return True
    return _normal(pipeline, spec) != saved


def _with_step(spec, index, step):
    steps = list(spec.steps)
    steps[index] = step
    return spec.model_copy(update={"steps": steps})


# -- rendering ----------------------------------------------------------------------


def _cards(spec, per_step):
    cards = []
    for i, step in enumerate(spec.steps):
        cb = step.callback
        fan = step.fan.replace("n", str(cb.n)) if cb.type == "broadcast" and cb.n else step.fan
        prompt = " ".join(step.prompt.split())
        provider = "chosen at launch" if step.model.provider == "default" else step.model.provider
        prev = spec.steps[i - 1] if i else None
        cards.append(
            {
                "index": i,
                "step": step,
                "prompt_start": prompt[:PROMPT_START] + ("…" if len(prompt) > PROMPT_START else ""),
                "model": f"{step.model.name or 'default model'} ({provider})",
                "format": output_format_label(step.output_format),
                "fan": fan,
                "fan_words": cb.words,
                "arrow": f"{prev.fan}: {prev.callback.words}" if prev else "",
                "problems": [plain_words(p) for p in per_step.get(i, [])],
                "judge": judge_words(step.judge) if step.judge else "",
                "adds": step.judge.result_keys() if step.judge else [],
                "quality": quality_words(step),
            }
        )
    return cards


def _chips(spec, index):
    contexts = spec.contexts()
    ctx = contexts[index] if index < len(contexts) else None
    return sorted(ctx) if ctx else []


def render_editor(request, pipeline, spec, *, panel=None, message="", full=False):
    latest = pipeline.latest
    per_step, general = problems_by_step(spec)
    context = {
        "pipeline": pipeline,
        "spec": spec,
        "draft_json": json.dumps(spec.to_dict(), ensure_ascii=False),
        "dirty": _dirty(pipeline, spec, latest),
        "latest": latest,
        "cards": _cards(spec, per_step),
        # a pipeline with no steps yet is not a mistake: the empty list says what to do
        "general_problems": general if spec.steps else [],
        "inputs": spec.first_step_keys(),
        "panel": panel,
        "message": message,
        "palette": PALETTE,
    }
    template = "designer/editor.html" if full else "designer/editor_body.html"
    return render(request, template, context)


def _step_panel(request, spec, index, form=None, applied=False):
    step = spec.steps[index]
    if form is None:
        form = StepForm.for_step(step, index, _providers(request), fields=known_fields(spec, index))
    per_step, _ = problems_by_step(spec)
    form.show_problems(per_step.get(index, []))
    return {
        "kind": "step",
        "index": index,
        "step": step,
        "form": form,
        "chips": _chips(spec, index),
        "first": index == 0 and not spec.input_keys,
        "applied": applied,
    }


def _try_panel(request, spec, index, form=None, trial_data=None):
    step = spec.steps[index]
    if form is None:
        form = TryForm(initial={"index": index}, step=step, providers=_providers(request))
    active = bool(trial_data) and trial_data["status"] in trial.ACTIVE
    return {
        "kind": "try",
        "index": index,
        "step": step,
        "form": form,
        "trial": trial_data,
        "active": active,
    }


def _editor_view(fn):
    """Owner only; POST-only edits answer 400 on a draft the page could not have sent."""

    @functools.wraps(fn)
    @login_required
    def view(request, code, *args, **kwargs):
        pipeline = pipeline_for(request.user, code, EDIT if request.method == "POST" else PIPELINES)
        request.editing = pipeline
        try:
            return fn(request, pipeline, *args, **kwargs)
        except BadRequest as exc:
            return HttpResponseBadRequest(str(exc))

    return view


def _apply_step_form(request, spec):
    """Apply the step form the request carries, if any: (spec, form or None, ok)."""
    if request.POST.get("step-index") is None:
        return spec, None, True
    index = _index(request, "step-index", len(spec.steps))
    form = StepForm(
        request.POST,
        providers=_providers(request),
        step=spec.steps[index],
        fields=known_fields(spec, index),
    )
    if not form.is_valid() or form.step is None:
        return spec, form, False
    return _with_step(spec, index, form.step), form, True


# -- views ------------------------------------------------------------------------------


@require_GET
@_editor_view
def editor(request, pipeline):
    """The designer page with the latest saved version."""
    return render_editor(request, pipeline, pipeline.spec(), full=True)


@require_POST
@_editor_view
def add_step(request, pipeline):
    """A step of a palette kind, dropped at `index` (the end when absent); opens its form."""
    spec = read_draft(request, pipeline)
    kind = request.POST.get("kind", "")
    if kind not in KINDS:
        raise BadRequest(f"unknown step kind {kind!r}")
    index = len(spec.steps)
    if request.POST.get("index") not in (None, ""):
        index = _index(request, "index", len(spec.steps) + 1)
    steps = list(spec.steps)
    steps.insert(index, new_step(kind, spec, index))
    spec = spec.model_copy(update={"steps": steps})
    return render_editor(request, pipeline, spec, panel=_step_panel(request, spec, index))


@require_POST
@_editor_view
def move_step(request, pipeline):
    spec = read_draft(request, pipeline)
    src = _index(request, "from", len(spec.steps))
    dst = _index(request, "to", len(spec.steps))
    steps = list(spec.steps)
    steps.insert(dst, steps.pop(src))
    spec = spec.model_copy(update={"steps": steps})
    return render_editor(request, pipeline, spec)


@require_POST
@_editor_view
def remove_step(request, pipeline):
    spec = read_draft(request, pipeline)
    index = _index(request, "index", len(spec.steps))
    steps = list(spec.steps)
    removed = steps.pop(index)
    spec = spec.model_copy(update={"steps": steps})
    return render_editor(
        request, pipeline, spec, message=f"Removed the step “{removed.name}”. Save to keep this."
    )


@require_POST
@_editor_view
def save(request, pipeline):
    """Save the draft (with the open step form applied) as a new version when it changed."""
    spec = read_draft(request, pipeline)
    spec, form, ok = _apply_step_form(request, spec)
    panel = None
    if form is not None:
        index = int(request.POST["step-index"])
        panel = _step_panel(request, spec, index, form=None if ok else form)
        if not ok:
            message = "Not saved: the open step has mistakes (see the form)."
            return render_editor(request, pipeline, spec, panel=panel, message=message)
    latest = pipeline.latest
    version = save_version(pipeline, spec, note="edited in the designer")
    if latest is not None and version.pk == latest.pk:
        message = f"No changes since version {version.number}."
    else:
        message = f"Saved as version {version.number}."
        note(
            request.user,
            pipeline.workspace_id,
            f"edited it (version {version.number})",
            pipeline=pipeline,
        )
    if spec.problems():
        message += " Fix the problems shown before launching it."
    return render_editor(request, pipeline, spec, panel=panel, message=message)


@require_POST
@_editor_view
def edit_step(request, pipeline):
    """Open a step's form in the side panel."""
    spec = read_draft(request, pipeline)
    index = _index(request, "index", len(spec.steps))
    return render_editor(request, pipeline, spec, panel=_step_panel(request, spec, index))


def _posted_step_form(request, pipeline):
    """The draft with the posted step form applied: (spec, form, ok, step index)."""
    spec, form, ok = _apply_step_form(request, read_draft(request, pipeline))
    if form is None:
        raise BadRequest("no step form was sent")
    return spec, form, ok, int(request.POST["step-index"])


@require_POST
@_editor_view
def apply_step(request, pipeline):
    """Apply the step form to the draft; mistakes stay beside their fields."""
    spec, form, ok, index = _posted_step_form(request, pipeline)
    # Applied: a fresh form of the new step, with the new draft's problems beside its fields.
    panel = _step_panel(request, spec, index, form=None if ok else form, applied=ok)
    return render_editor(request, pipeline, spec, panel=panel)


@require_POST
@_editor_view
def check_step(request, pipeline):
    """What Apply would mark in the open step form, while one types; nothing is applied."""
    spec, form, ok, index = _posted_step_form(request, pipeline)
    if ok:
        per_step, _ = problems_by_step(spec)
        form.show_problems(per_step.get(index, []))
    problems = [
        (form[name].label if name in form.fields else "", error)
        for name, errors in form.errors.items()
        for error in errors
    ]
    return render(request, "designer/step_check.html", {"problems": problems})


@require_POST
@_editor_view
def open_try(request, pipeline):
    """The form that tries a step on one sample (the open step form is applied first)."""
    spec = read_draft(request, pipeline)
    spec, form, ok = _apply_step_form(request, spec)
    if not ok:
        index = int(request.POST["step-index"])
        return render_editor(request, pipeline, spec, panel=_step_panel(request, spec, index, form))
    index = _index(request, "index", len(spec.steps))
    return render_editor(request, pipeline, spec, panel=_try_panel(request, spec, index))


@require_POST
@_editor_view
def start_try(request, pipeline):
    """Hand the step and the sample to the workers; the panel then polls for the result."""
    spec = read_draft(request, pipeline)
    index = _index(request, "try-index", len(spec.steps))
    step = spec.steps[index]
    form = TryForm(request.POST, step=step, providers=_providers(request))
    trial_data = None
    if form.is_valid():
        try:
            trial_id = trial.start(
                request.user.pk,
                step,
                form.context,
                form.provider.pk,
                pipeline_code=pipeline.code,
                step_index=index,
            )
            trial_data = trial.get(trial_id)
        except RedisError:
            form.add_error(None, QUEUE_DOWN)
    panel = _try_panel(request, spec, index, form=form, trial_data=trial_data)
    return render_editor(request, pipeline, spec, panel=panel)


@require_GET
@_editor_view
def try_result(request, pipeline, trial_id):
    """The trial's result so far; polled every second until it is done."""
    try:
        data = trial.get(trial_id) or {"id": trial_id, "status": "expired"}
    except RedisError:
        data = {"id": trial_id, "status": "failed", "error": QUEUE_DOWN}
    mine = data.get("owner") == request.user.pk and data.get("pipeline") == str(pipeline.code)
    if "owner" in data and not mine:
        raise Http404("no such trial")
    return render(
        request,
        "designer/try_result.html",
        {"pipeline": pipeline, "trial": data, "active": data["status"] in trial.ACTIVE},
    )


urlpatterns = [
    path("pipelines/<uuid:code>/edit/", editor, name="pipeline-edit"),
    path("pipelines/<uuid:code>/edit/add/", add_step, name="editor-add"),
    path("pipelines/<uuid:code>/edit/move/", move_step, name="editor-move"),
    path("pipelines/<uuid:code>/edit/remove/", remove_step, name="editor-remove"),
    path("pipelines/<uuid:code>/edit/save/", save, name="editor-save"),
    path("pipelines/<uuid:code>/edit/step/", edit_step, name="step-edit"),
    path("pipelines/<uuid:code>/edit/step/apply/", apply_step, name="step-apply"),
    path("pipelines/<uuid:code>/edit/step/check/", check_step, name="step-check"),
    path("pipelines/<uuid:code>/edit/try/", open_try, name="try-open"),
    path("pipelines/<uuid:code>/edit/try/start/", start_try, name="try-start"),
    path("pipelines/<uuid:code>/edit/try/<slug:trial_id>/", try_result, name="try-result"),
]
