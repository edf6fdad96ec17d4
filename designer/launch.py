"""Inputs and launch: one input typed in, or many from a CSV / JSONL file, then a run.

The page launches the pipeline's latest saved version. Its inputs come from a form
built from the first step's variables, or from an uploaded file whose columns the
person maps to those variables (a preview shows the first rows; `designer/uploads.py`
reads the file and maps its columns). Before launching, the page shows how many calls
the run will make, step by step, and what they cost with the chosen provider's prices
(both from `runner.spec.estimate`); an optional budget in
dollars pauses the run when its calls have cost that much. Launching calls
`runner.engine.launch_run` and opens the run's page.
"""

from dataclasses import dataclass
from decimal import Decimal

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect
from pydantic import ValidationError

from runner.engine import LaunchError, estimate_run, launch_run
from runner.models import Provider
from runner.models.workspaces import CONTROL
from runner.spec import PipelineSpec, SpecError
from runner.spec import estimate as estimator

from .access import pipeline_for
from .history import note
from .step_forms import plain_problem
from .uploads import (
    UploadError,
    default_mapping,
    limits,
    map_rows,
    read_table,
)

PREVIEW_ROWS = 5
MIN_BUDGET = Decimal("0.01")
NAMED_CHARS = 40  # of the input a run is named after
RUN_NAME_CHARS = 200  # Run.name


def run_name(pipeline_name, inputs, filename=""):
    """A run's name: "<pipeline> · <file name>", or "<pipeline> · <first input's first value>"."""
    after = filename
    if not after and inputs and inputs[0]:
        after = " ".join(str(next(iter(inputs[0].values()))).split())
    if len(after) > NAMED_CHARS:
        after = after[: NAMED_CHARS - 1].rstrip() + "…"
    name = f"{pipeline_name} · {after}" if after else pipeline_name
    return name[:RUN_NAME_CHARS]


# -- the estimate ---------------------------------------------------------------------
# The counts, tokens and cost come from the one estimator (`runner.spec.estimate`);
# this section only puts them in words for the page.


@dataclass
class CostEstimate:
    known: bool
    text: str
    sizes: str = ""  # the reply sizes the estimate assumed, in words


def cost_estimate(spec, inputs, owner, provider):
    """What the run would cost with `provider`'s prices, in words; None without a provider."""
    if provider is None or spec is None or not spec.steps:
        return None
    try:
        est = estimate_run(
            owner, spec, inputs or [{}], providers={"*": provider.pk}, workspace=provider.workspace
        )
    except (LaunchError, SpecError) as exc:
        problems = getattr(exc, "problems", None) or [str(exc)]
        return CostEstimate(False, "cost unknown: " + plain_problem(problems[0]))
    calls = f"{est.calls:,} call{'s' if est.calls != 1 else ''}"
    models = ", ".join(est.unpriced)
    if not est.priced:
        return CostEstimate(False, f"cost unknown: the provider has no price for {models}")
    text = f"about {est.cost_text} for {calls}"
    if est.unpriced:
        text += f", not counting {models}: the provider has no price for it"
    return CostEstimate(est.complete, text, ", ".join(est.reply_sizes))


# -- the form --------------------------------------------------------------------------


class LaunchForm(forms.Form):
    source = forms.ChoiceField(
        label="Inputs",
        choices=[("one", "One input, typed below"), ("file", "Many inputs from a file")],
        widget=forms.RadioSelect,
        initial="one",
    )
    file = forms.FileField(
        label="CSV or JSON Lines file",
        required=False,
        error_messages={"empty": "The file is empty."},
    )
    provider = forms.ModelChoiceField(
        label="Provider",
        queryset=Provider.objects.none(),
        to_field_name="code",
        empty_label="— choose a provider —",
        error_messages={
            "required": "Choose the provider the run calls.",
            "invalid_choice": "That provider no longer exists; choose another one.",
        },
    )
    budget = forms.DecimalField(
        label="Budget (dollars)",
        required=False,
        min_value=MIN_BUDGET,
        max_digits=12,
        decimal_places=4,
        help_text="Optional. The run pauses when its calls have cost this much; "
        "you can raise the budget then to let it go on.",
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0.01", "inputmode": "decimal"}),
        error_messages={
            "invalid": "Give the budget as a number of dollars, like 5 or 12.50.",
            "min_value": "The budget must be at least $0.01.",
            "max_digits": "That budget is too large.",
            "max_whole_digits": "That budget is too large.",
            "max_decimal_places": "Give the budget in dollars and cents, like 12.50.",
        },
    )

    def __init__(self, *args, workspace, variables, cost_url="", **kwargs):
        super().__init__(*args, **kwargs)
        self.variables = variables
        lim = limits()
        self.fields[
            "file"
        ].help_text = f"Up to {lim.max_bytes / 1024 / 1024:g} MB and {lim.max_rows:,} rows."
        if cost_url:  # choosing a provider shows what the run would cost with its prices
            self.fields["provider"].widget.attrs.update(
                {
                    "hx-post": cost_url,
                    "hx-trigger": "change",
                    "hx-target": "#cost-estimate",
                    "hx-swap": "outerHTML",
                }
            )
        providers = Provider.objects.filter(workspace=workspace).order_by("name")
        self.fields["provider"].queryset = providers
        if not self.is_bound:
            only = list(providers[:2])
            if len(only) == 1:  # one provider: it is the choice, and the cost shows at once
                self.initial.setdefault("provider", only[0].code)
        for var in variables:
            self.fields[f"input_{var}"] = forms.CharField(
                label=var, required=False, strip=False, widget=forms.Textarea(attrs={"rows": 2})
            )
        self.table = None
        self.mapping = {}
        self.inputs = []
        self.filename = ""  # of the inputs' file, when they come from one

    def input_fields(self):
        return [self[f"input_{var}"] for var in self.variables]

    def chosen_provider(self):
        """The provider chosen so far (valid or not yet validated), or None."""
        if self.is_bound:
            if hasattr(self, "cleaned_data") and "provider" in self.cleaned_data:
                return self.cleaned_data["provider"]
            code = self.data.get("provider")
        else:
            code = self.initial.get("provider")
        return _provider(self.fields["provider"].queryset, code)

    def clean(self):
        data = super().clean()
        if data.get("source") == "file":
            self._clean_file(data)
        elif data.get("source") == "one":
            item = {}
            for var in self.variables:
                value = data.get(f"input_{var}") or ""
                if not value.strip():
                    self.add_error(f"input_{var}", f"Give a value for {{{{{var}}}}}.")
                item[var] = value
            self.inputs = [item]
        return data

    def _clean_file(self, data):
        upload = data.get("file")
        if not upload:
            self.add_error("file", "Choose a CSV or JSON Lines file, or switch to one input.")
            return
        try:
            self.table = read_table(upload)
        except UploadError as exc:
            self.add_error("file", str(exc))
            return
        self.filename = upload.name
        chosen = {var: self.data.get(f"map_{var}") for var in self.variables}
        self.mapping = default_mapping(self.table.columns, self.variables, chosen)
        for var in self.variables:
            if var not in self.mapping:
                self.add_error(None, f"Choose the column that holds {{{{{var}}}}}.")
        if len(self.mapping) == len(self.variables):
            self.inputs, problems = map_rows(self.table, self.mapping)
            for problem in problems:
                self.add_error("file", problem)


# -- views ------------------------------------------------------------------------------
def _provider(queryset, code):
    if not code:
        return None
    try:
        return queryset.filter(code=code).first()
    except (ValueError, ValidationError, DjangoValidationError):
        return None


def _saved(pipeline):
    """(version, spec, problems in plain words) of the latest saved version."""
    version = pipeline.latest
    if version is None:
        return None, None, ["The pipeline has not been saved yet: save it in the designer."]
    try:
        return version, PipelineSpec.load(version.spec), []
    except SpecError as exc:
        try:
            spec = PipelineSpec.model_validate(version.spec)  # meaning problems only
        except ValidationError:
            spec = None
        return version, spec, [plain_problem(p) for p in exc.problems]


def _preview(table, variables, mapping):
    return {
        "table": table,
        "rows": [[row.get(c, "") for c in table.columns] for row in table.rows[:PREVIEW_ROWS]],
        "fields": [
            {"var": v, "options": [(c, mapping.get(v) == c) for c in table.columns]}
            for v in variables
        ],
    }


def _page(request, pipeline, version, spec, problems, form):
    variables = spec.first_step_keys() if spec else []
    context = {
        "pipeline": pipeline,
        "version": version,
        "spec": spec,
        "problems": problems,
        "form": form,
        "variables": variables,
        "has_providers": Provider.objects.filter(workspace=pipeline.workspace).exists(),
        "estimate": estimator.estimate(spec, [{}]) if spec and spec.steps else None,
        "one_input": [{}],
        "preview": _preview(form.table, variables, form.mapping) if form.table else None,
        "max_mb": f"{limits().max_bytes / 1024 / 1024:g}",
        "max_bytes": limits().max_bytes,
        "max_rows": f"{limits().max_rows:,}",
        "htmx": bool(request.htmx),
    }
    if form.table and form.inputs:
        context["estimate"] = estimator.estimate(spec, form.inputs)
        context["file_inputs"] = form.inputs
    context["cost"] = cost_estimate(spec, _cost_inputs(form), request.user, form.chosen_provider())
    template = "designer/launch_errors.html" if request.htmx else "designer/launch.html"
    return render(request, template, context)


def _cost_inputs(form):
    """The inputs a cost estimate counts: the form's, else one per file row, else one."""
    if form.inputs:
        return form.inputs
    if form.table:
        return [{}] * len(form.table.rows)
    return [{}]


def _form(request, pipeline, variables, bound=True):
    cost_url = reverse("designer:launch-cost", args=[pipeline.code])
    if not bound:
        return LaunchForm(workspace=pipeline.workspace, variables=variables, cost_url=cost_url)
    return LaunchForm(
        request.POST,
        request.FILES,
        workspace=pipeline.workspace,
        variables=variables,
        cost_url=cost_url,
    )


@login_required
def launch(request, code):
    """The inputs form (GET) and the launch itself (POST), which opens the run's page."""
    pipeline = pipeline_for(request.user, code, CONTROL)
    version, spec, problems = _saved(pipeline)
    variables = spec.first_step_keys() if spec else []
    if request.method != "POST":
        form = _form(request, pipeline, variables, bound=False)
        return _page(request, pipeline, version, spec, problems, form)
    form = _form(request, pipeline, variables)
    if problems or not form.is_valid():
        return _page(request, pipeline, version, spec, problems, form)
    try:
        run = launch_run(
            request.user,
            spec,
            form.inputs,
            providers={"*": form.cleaned_data["provider"].pk},
            pipeline_code=pipeline.code,
            pipeline_version=version.number,
            budget=form.cleaned_data.get("budget"),  # dollars, as launch_run takes it
            workspace=pipeline.workspace,
            name=run_name(pipeline.name, form.inputs, form.filename),
        )
    except (SpecError, LaunchError) as exc:
        for problem in exc.problems:
            form.add_error(None, plain_problem(problem))
        return _page(request, pipeline, version, spec, problems, form)
    inputs = len(form.inputs)
    note(
        request.user,
        pipeline.workspace_id,
        f"launched a run of version {version.number} on {inputs:,} input(s)",
        run=run,
        pipeline=pipeline,
    )
    url = reverse("designer:run-detail", args=[run.code])
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


@require_POST
@login_required
def preview(request, code):
    """The first rows of an uploaded file, the column for each variable, and the estimate."""
    pipeline = pipeline_for(request.user, code, CONTROL)
    version, spec, problems = _saved(pipeline)
    variables = spec.first_step_keys() if spec else []
    context = {"pipeline": pipeline, "variables": variables, "error": "", "preview": None}
    upload = request.FILES.get("file")
    if upload is None:
        context["error"] = "Choose a CSV or JSON Lines file."
    else:
        try:
            table = read_table(upload)
        except UploadError as exc:
            context["error"] = str(exc)
        else:
            chosen = {var: request.POST.get(f"map_{var}") for var in variables}
            mapping = default_mapping(table.columns, variables, chosen)
            context["preview"] = _preview(table, variables, mapping)
            if spec and spec.steps:
                inputs = [{}] * len(table.rows)
                if len(mapping) == len(variables):
                    inputs = map_rows(table, mapping)[0]
                context["estimate"] = estimator.estimate(spec, inputs)
                context["spec"], context["file_inputs"] = spec, inputs
                provider = _provider(
                    Provider.objects.filter(workspace=pipeline.workspace),
                    request.POST.get("provider"),
                )
                context["cost"] = cost_estimate(spec, inputs, request.user, provider)
                context["cost_oob"] = True  # the cost next to the provider follows the file
    return render(request, "designer/launch_preview.html", context)


@require_POST
@login_required
def cost(request, code):
    """What the run would cost with the chosen provider, for the inputs given so far."""
    pipeline = pipeline_for(request.user, code, CONTROL)
    version, spec, problems = _saved(pipeline)
    variables = spec.first_step_keys() if spec else []
    form = _form(request, pipeline, variables)
    form.is_valid()  # fills the inputs; the problems show when launching
    context = {
        "cost": None
        if problems
        else cost_estimate(spec, _cost_inputs(form), request.user, form.chosen_provider())
    }
    return render(request, "designer/launch_cost.html", context)


urlpatterns = [
    path("pipelines/<uuid:code>/launch/", launch, name="pipeline-launch"),
    path("pipelines/<uuid:code>/launch/preview/", preview, name="launch-preview"),
    path("pipelines/<uuid:code>/launch/cost/", cost, name="launch-cost"),
]
