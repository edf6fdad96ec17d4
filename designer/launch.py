"""Inputs and launch: one input typed in, or many from a CSV / JSONL file, then a run.

The page launches the pipeline's latest saved version. Its inputs come from a form
built from the first step's variables, or from an uploaded file whose columns the
person maps to those variables (a preview shows the first rows). Before launching,
the page shows how many calls the run will make, step by step, and what they cost
with the chosen provider's prices (both from `runner.spec.estimate`); an optional budget in
dollars pauses the run when its calls have cost that much. Launching calls
`runner.engine.launch_run` and opens the run's page.
"""

import csv
import io
import json
from dataclasses import dataclass
from decimal import Decimal

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST
from pydantic import ValidationError

from runner.engine import LaunchError, estimate_run, launch_run
from runner.models import Provider
from runner.spec import PipelineSpec, SpecError
from runner.spec import estimate as estimator

from .access import pipeline_for
from .step_forms import plain_problem

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
PREVIEW_ROWS = 5
MAX_ROW_PROBLEMS = 5
MIN_BUDGET = Decimal("0.01")


class UploadError(ValueError):
    pass


# -- reading files ------------------------------------------------------------------


@dataclass
class Table:
    columns: list
    rows: list  # dicts, column -> value
    kind: str  # "CSV", "JSON Lines", "JSON"


def read_table(upload):
    """The columns and rows of an uploaded CSV, JSON Lines or JSON file; UploadError says why not."""
    if upload.size > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"The file is {upload.size / 1024 / 1024:.1f} MB; files up to "
            f"{MAX_UPLOAD_BYTES // 1024 // 1024} MB are accepted. Split it into smaller files."
        )
    raw = upload.read()
    if not raw.strip():
        raise UploadError("The file is empty.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UploadError(
            "The file is not UTF-8 text. Save it as “CSV UTF-8” or JSON Lines and try again."
        ) from None
    name = (upload.name or "").lower()
    head = text.lstrip()[:1]
    if name.endswith((".jsonl", ".ndjson")) or (not name.endswith(".csv") and head == "{"):
        table = _read_jsonl(text)
    elif name.endswith(".json") or head == "[":
        table = _read_json(text)
    else:
        table = _read_csv(text, tab=name.endswith(".tsv"))
    if not table.rows:
        raise UploadError("The file has no rows under its header.")
    return table


def _too_many():
    return UploadError(
        f"The file has more than {MAX_ROWS:,} rows; up to {MAX_ROWS:,} are accepted. "
        "Split it into smaller files."
    )


def _read_csv(text, tab=False):
    if tab:
        dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise UploadError("The first line of the file should name the columns.")
        columns = [h.strip() or f"column {i + 1}" for i, h in enumerate(header)]
        if len(set(columns)) != len(columns):
            dup = next(c for c in columns if columns.count(c) > 1)
            raise UploadError(f"Two columns are named “{dup}”: give each column its own name.")
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            if len(rows) >= MAX_ROWS:
                raise _too_many()
            extra = [v for v in values[len(columns) :] if v.strip()]
            if extra:
                raise UploadError(
                    f"Line {reader.line_num} has {len(values)} values but the header names "
                    f"{len(columns)} column{'s' if len(columns) > 1 else ''}. "
                    "Check the separators and quotes on that line."
                )
            values = values + [""] * (len(columns) - len(values))
            rows.append(dict(zip(columns, values, strict=False)))
    except csv.Error as exc:
        raise UploadError(
            f"The file could not be read as CSV (line {reader.line_num}): {exc}."
        ) from None
    return Table(columns, rows, "CSV")


def _columns_of(rows):
    columns = {}
    for row in rows[:1000]:
        for key in row:
            columns.setdefault(str(key), None)
    return list(columns)


def _read_jsonl(text):
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(rows) >= MAX_ROWS:
            raise _too_many()
        try:
            row = json.loads(line)
        except ValueError:
            raise UploadError(
                f"Line {lineno} is not valid JSON. In a JSON Lines file every line is one "
                'object, like {"topic": "Volcanoes"}.'
            ) from None
        if not isinstance(row, dict):
            raise UploadError(
                f'Line {lineno} is not a JSON object; write each line like {{"topic": "Volcanoes"}}.'
            )
        rows.append(row)
    return Table(_columns_of(rows), rows, "JSON Lines")


def _read_json(text):
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UploadError(f"The file is not valid JSON: {exc}.") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UploadError(
            'A JSON file should hold a list of objects, like [{"topic": "Volcanoes"}].'
        )
    if len(data) > MAX_ROWS:
        raise _too_many()
    return Table(_columns_of(data), data, "JSON")


def default_mapping(columns, variables, chosen=None):
    """Variable -> column: what the person chose, else a column of the same name."""
    chosen = chosen or {}
    out = {}
    lower = {c.lower(): c for c in columns}
    for var in variables:
        col = chosen.get(var)
        if col in columns:
            out[var] = col
        elif var in columns:
            out[var] = var
        elif var.lower() in lower:
            out[var] = lower[var.lower()]
        elif len(columns) == 1 and len(variables) == 1:
            out[var] = columns[0]
    return out


def map_rows(table, mapping):
    """Inputs for a run, one per row, and the problems with them (empty values)."""
    inputs, problems, more = [], [], 0
    for n, row in enumerate(table.rows, 1):
        item = {}
        for var, col in mapping.items():
            value = row.get(col)
            if value is None or (isinstance(value, str) and not value.strip()):
                if len(problems) < MAX_ROW_PROBLEMS:
                    problems.append(
                        f"Row {n} has no value in the column “{col}” (used for {{{{{var}}}}})."
                    )
                else:
                    more += 1
            item[var] = value
        inputs.append(item)
    if more:
        problems.append(f"… and {more} more empty values.")
    return inputs, problems


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
        est = estimate_run(owner, spec, inputs or [{}], providers={"*": provider.pk})
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
        help_text=f"Up to {MAX_UPLOAD_BYTES // 1024 // 1024} MB and {MAX_ROWS:,} rows.",
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

    def __init__(self, *args, user, variables, cost_url="", **kwargs):
        super().__init__(*args, **kwargs)
        self.variables = variables
        if cost_url:  # choosing a provider shows what the run would cost with its prices
            self.fields["provider"].widget.attrs.update(
                {
                    "hx-post": cost_url,
                    "hx-trigger": "change",
                    "hx-target": "#cost-estimate",
                    "hx-swap": "outerHTML",
                }
            )
        providers = Provider.objects.filter(owner=user).order_by("name")
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
        "has_providers": Provider.objects.filter(owner=request.user).exists(),
        "estimate": estimator.estimate(spec, [{}]) if spec and spec.steps else None,
        "preview": _preview(form.table, variables, form.mapping) if form.table else None,
        "max_mb": MAX_UPLOAD_BYTES // 1024 // 1024,
        "max_bytes": MAX_UPLOAD_BYTES,
        "max_rows": f"{MAX_ROWS:,}",
        "htmx": _htmx(request),
    }
    if form.table and form.inputs:
        context["estimate"] = estimator.estimate(spec, form.inputs)
    context["cost"] = cost_estimate(spec, _cost_inputs(form), request.user, form.chosen_provider())
    template = "designer/launch_errors.html" if _htmx(request) else "designer/launch.html"
    return render(request, template, context)


def _htmx(request):
    return request.headers.get("HX-Request") == "true"


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
        return LaunchForm(user=request.user, variables=variables, cost_url=cost_url)
    return LaunchForm(
        request.POST, request.FILES, user=request.user, variables=variables, cost_url=cost_url
    )


@login_required
def launch(request, code):
    """The inputs form (GET) and the launch itself (POST), which opens the run's page."""
    pipeline = pipeline_for(request.user, code)
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
        )
    except (SpecError, LaunchError) as exc:
        for problem in exc.problems:
            form.add_error(None, plain_problem(problem))
        return _page(request, pipeline, version, spec, problems, form)
    url = reverse("designer:run-detail", args=[run.code])
    if _htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@require_POST
@login_required
def preview(request, code):
    """The first rows of an uploaded file, the column for each variable, and the estimate."""
    pipeline = pipeline_for(request.user, code)
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
                provider = _provider(
                    Provider.objects.filter(owner=request.user), request.POST.get("provider")
                )
                context["cost"] = cost_estimate(spec, inputs, request.user, provider)
                context["cost_oob"] = True  # the cost next to the provider follows the file
    return render(request, "designer/launch_preview.html", context)


@require_POST
@login_required
def cost(request, code):
    """What the run would cost with the chosen provider, for the inputs given so far."""
    pipeline = pipeline_for(request.user, code)
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
