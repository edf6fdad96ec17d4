"""The step panel's forms, and pipeline problems in plain words.

`StepForm` turns what a person typed into a `StepSpec` (the one spec, runner.spec);
`plain_words()` words a spec `Problem` (from its `code` and `params`) for a
non-programmer, and `StepForm.show_problems` puts it beside the field it names
(`problem.field`). `TryForm` asks for the values a step's prompt uses, to try it on
one sample.
"""

from django import forms
from django.conf import settings
from pydantic import ValidationError

from runner.spec import KEY_RE, OutputFormat, Problem, StepSpec, checks, tables, templating

# -- problems in plain words ------------------------------------------------------------

_LABEL = {"prompt": "prompt", "system": "system prompt"}
# code -> sentence, formatted with the problem's params and the words of `_words`.
SENTENCES = {
    "unknown_variable": "“{{{{{variable}}}}}” is not made by any step before this one. {can_use}",
    "not_an_input": "“{{{{{variable}}}}}” is not one of the pipeline's inputs. {inputs_are}",
    "bad_template": "The {label} has a mistake in a {{{{ }}}} placeholder ({error}). "
    "Check that every {{{{ has a matching }}}} and holds one name.",
    "duplicate_name": "Step {other_number} already has this name. Give each step its own name.",
    "bad_output_key": "A result name starts with a letter and holds only letters, digits and _ "
    "(for example: answer).",
    "duplicate_output_key": "Step {other_number} already stores its result as “{key}”. "
    "Choose another name.",
    "output_key_is_input": "“{key}” is one of the pipeline's inputs. Choose another name.",
    "bad_callback_key": "A name starts with a letter and holds only letters, digits and _ "
    "(for example: item).",
    "scatter_needs_list": "Fanning out needs a list: set the output format to “JSON list”.",
    "flatten_needs_list": "Flattening needs lists: set the output format to “JSON list”.",
    "broadcast_needs_n": "Say how many copies of each result to make (for example 3).",
    "split_needs_delimiter": "Say what to split the text on (for example a comma).",
    "split_needs_text": "Splitting works on text: set the output format to “Text”.",
    "pick_needs_field": "Say which field of the JSON object to take.",
    "pick_needs_object": "Picking a field needs a JSON object: "
    "set the output format to “JSON object”.",
    "python_needs_name": "This step's Python callback has no name; ask a developer.",
    "unknown_group_by": "The tasks of this step don't carry “{key}”. {group_by}",
    "schema_needs_object": "Named fields only apply to the “JSON object” output format.",
    "no_steps": "The pipeline has no steps yet: drag one in from the palette.",
    "judge_and_workflow": "A step is a judge or a workflow, not both: choose one above.",
    "judge_needs_default": "A judge scores each record it is given: set “Then” to “One to one”.",
    "unknown_judge_field": "The records here have no field “{key}” to judge. {they_have}",
    "unknown_keep_field": "This step's results have no field “{key}” to check. {they_have}",
    "unknown_dedup_field": "This step's results have no field “{key}” to compare. {they_have}",
}
# Codes whose sentence already reads well: shown as it is, with a capital letter.
AS_WRITTEN = {
    "spec_version",
    "bad_input_key",
    "not_json",
    "not_an_object",
    "unknown_field",
    "unknown_callback",
    "unknown_output_format",
    "missing",
    "invalid",
    "no_inputs",
    "input_not_object",
    "input_missing",
    "bad_input_row_key",
    "more_problems",
    "no_provider_named",
    "provider_gone",
    "no_provider",
    "no_model",
    "other",
}


def _names(available, lead):
    if not available:
        return "No step before this one makes anything yet."
    names = ", ".join(f"{{{{{n}}}}}" for n in available)
    return f"{lead}: {names}."


def _fields(available, lead):
    if not available:
        return "No step before this one makes anything yet."
    return f"{lead}: {', '.join(available)}."


def _words(params):
    available = params.get("available") or []
    other = params.get("other")
    return {
        "label": _LABEL.get(params.get("part"), ""),
        "can_use": _names(available, "You can use"),
        "inputs_are": _names(available, "The inputs are"),
        "group_by": _names(available, "You can group by"),
        "they_have": _fields(available, "They have"),
        "other_number": "" if other is None else other + 1,
    }


def _capital(text):
    text = text.strip()
    return text[:1].upper() + text[1:]


def plain_words(problem):
    """A problem (without its step) as a sentence a non-programmer understands."""
    if problem.code not in SENTENCES:
        return _capital(problem.detail or problem.message)
    return sentence(problem.code, problem.params)


def sentence(code, params):
    """The plain sentence of a problem code with these params."""
    return SENTENCES[code].format_map({**params, **_words(params)})


def problems_by_step(spec, problems=None):
    """({step index: [Problem]}, [pipeline-level sentences])."""
    problems = spec.problems() if problems is None else problems
    per_step, general = {}, []
    for problem in problems:
        if problem.step is None or not 0 <= problem.step < len(spec.steps):
            general.append(plain_words(problem))
        else:
            per_step.setdefault(problem.step, []).append(problem)
    return per_step, general


def plain_problem(problem):
    """One launch or save problem as a sentence that names the step in plain words."""
    if not isinstance(problem, Problem):  # a bare sentence
        return _capital(str(problem))
    sentence = plain_words(problem)
    if problem.step is None:
        return sentence
    name = f" ({problem.step_name})" if problem.step_name else ""
    return f"Step {problem.step + 1}{name}: {sentence}"


# -- the step form ----------------------------------------------------------------------

CALLBACK_CHOICES = [
    ("default", "Pass each result on to one task of the next step (one to one)"),
    ("scatter", "Split the list into one task per item (scatter)"),
    ("broadcast", "Make n copies of each result, one task each (broadcast)"),
    ("aggregate", "Collect all the results into one list for one task (aggregate)"),
    ("flatten", "Join all the lists into one list (flatten)"),
    ("split_lines", "Split the text into lines, one task per line (split lines)"),
    ("split", "Split the text at a separator, one task per part (split)"),
    ("pick", "Take one field of the JSON object (pick)"),
]
FORMAT_CHOICES = [
    ("text", "Text"),
    ("json_list", "JSON list"),
    ("json_object", "JSON object with named fields"),
]
# Which callback parameters each callback uses.
CALLBACK_PARAMS = {
    "default": (),
    "scatter": ("item_key",),
    "broadcast": ("n",),
    "aggregate": ("into", "group_by"),
    "flatten": ("into",),
    "split_lines": ("item_key",),
    "split": ("item_key", "delimiter"),
    "pick": ("field", "into"),
    "python": ("name", "produces"),
}


def _required(what):
    return {"required": what}


class StepForm(forms.Form):
    prefix = "step"

    index = forms.IntegerField(widget=forms.HiddenInput, min_value=0)
    name = forms.CharField(
        max_length=100, error_messages=_required("Give the step a short name, e.g. questions.")
    )
    prompt = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 7, "data-chip-target": "1"}),
        max_length=100_000,
        strip=False,
        error_messages=_required("Write what the model should do for each input."),
    )
    system = forms.CharField(
        label="System prompt",
        required=False,
        strip=False,
        max_length=100_000,
        widget=forms.Textarea(attrs={"rows": 2, "data-chip-target": "1"}),
    )
    provider = forms.ChoiceField(label="Provider")
    model = forms.CharField(
        label="Model",
        required=False,
        max_length=200,
        help_text="Empty: the provider's default model.",
    )
    temperature = forms.FloatField(
        required=False,
        min_value=0,
        max_value=2,
        error_messages={
            "min_value": "The temperature is between 0 and 2.",
            "max_value": "The temperature is between 0 and 2.",
        },
    )
    max_tokens = forms.IntegerField(
        label="Max tokens",
        required=False,
        min_value=1,
        max_value=1_000_000,
        help_text="Empty: no limit.",
        error_messages={"min_value": "Use at least 1 token, or leave it empty for no limit."},
    )
    output_format = forms.ChoiceField(label="Output format", choices=FORMAT_CHOICES)
    schema_fields = forms.CharField(
        label="Field names",
        required=False,
        max_length=2000,
        help_text="The fields the JSON object must have, separated by commas.",
    )
    output_key = forms.CharField(
        label="Store the result as",
        max_length=64,
        error_messages=_required("Name the result so later steps can use it, e.g. answer."),
    )
    callback = forms.ChoiceField(label="Then, with each result", choices=CALLBACK_CHOICES)
    n = forms.IntegerField(
        label="Copies (n)",
        required=False,
        min_value=1,
        max_value=10_000,
        error_messages={
            "min_value": "Make at least 1 copy.",
            "max_value": "At most 10,000 copies.",
        },
    )
    item_key = forms.CharField(label="Name of each item", required=False, max_length=64)
    into = forms.CharField(label="Name of the combined result", required=False, max_length=64)
    group_by = forms.CharField(label="One group per value of", required=False, max_length=64)
    delimiter = forms.CharField(label="Delimiter", required=False, max_length=50, strip=False)
    field = forms.CharField(label="Field to pick", required=False, max_length=200)

    def __init__(self, *args, providers=(), step=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.previous = step
        names = [p.name for p in providers]
        current = step.model.provider if step else "default"
        if current != "default" and current not in names:
            names.append(current)
        self.fields["provider"].choices = [("default", "The provider chosen at launch")] + [
            (n, n) for n in names
        ]
        if step is not None and step.callback.type == "python":
            self.fields["callback"].choices = CALLBACK_CHOICES + [
                ("python", f"Python callback {step.callback.name}")
            ]
        self.step = None

    @classmethod
    def for_step(cls, step, index, providers, **kwargs):
        cb = step.callback
        schema = step.output_schema or {}
        initial = {
            "index": index,
            "name": step.name,
            "prompt": step.prompt,
            "system": step.system,
            "provider": step.model.provider,
            "model": step.model.name,
            "temperature": step.params.temperature,
            "max_tokens": step.params.max_tokens,
            "output_format": str(step.output_format),
            "schema_fields": ", ".join((schema.get("properties") or {}).keys()),
            "output_key": step.output_key,
            "callback": cb.type,
            "n": cb.n,
            "item_key": cb.item_key or "",
            "into": cb.into or "",
            "group_by": cb.group_by or "",
            "delimiter": cb.delimiter or "",
            "field": cb.field or "",
        }
        data = {f"{cls.prefix}-{k}": ("" if v is None else v) for k, v in initial.items()}
        form = cls(data, providers=providers, step=step, **kwargs)
        form.is_valid()  # a bound form, so problems can be shown beside its fields
        return form

    def clean_schema_fields(self):
        names = [
            n.strip() for n in self.cleaned_data.get("schema_fields", "").split(",") if n.strip()
        ]
        for n in names:
            if not KEY_RE.match(n):
                raise forms.ValidationError(
                    f"“{n}” is not a usable field name: start with a letter and use only "
                    "letters, digits and _."
                )
        if len(set(names)) != len(names):
            raise forms.ValidationError("Each field name may appear once.")
        return names

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        if data["output_format"] == "json_object" and not data.get("schema_fields"):
            self.add_error("schema_fields", "Name at least one field the JSON object must have.")
            return data
        for part in ("prompt", "system"):
            try:
                templating.check(data.get(part) or "")
            except templating.TemplateError as exc:
                self.add_error(part, sentence("bad_template", {"part": part, "error": str(exc)}))
        if self.errors:
            return data
        try:
            self.step = StepSpec.model_validate(self._step_data(data))
        except ValidationError as exc:
            for err in exc.errors():
                field = checks.field_of(err["loc"])
                self.add_error(field if field in self.fields else None, err["msg"])
        return data

    def _step_data(self, data):
        prev = self.previous
        cb_type = data["callback"]
        cb = {"type": cb_type}
        for param in CALLBACK_PARAMS[cb_type]:
            if param in ("name", "produces"):
                cb[param] = getattr(prev.callback, param) if prev else None
                continue
            value = data.get(param)
            cb[param] = value if value not in ("", None) else None
        fmt = data["output_format"]
        schema = None
        if fmt == "json_object":
            names = data["schema_fields"]
            old = prev.output_schema if prev else None
            if old and list((old.get("properties") or {}).keys()) == names:
                schema = old  # unchanged fields: keep the schema as it was (types and all)
            else:
                schema = {
                    "type": "object",
                    "properties": {n: {} for n in names},
                    "required": names,
                }
        params = prev.params.model_dump() if prev else {}
        params.update(temperature=data.get("temperature"), max_tokens=data.get("max_tokens"))
        return {
            **(prev.model_dump(mode="json") if prev else {}),  # fields the form does not edit
            "name": data["name"].strip(),
            "prompt": data["prompt"],
            "system": data.get("system") or "",
            "model": {
                **(prev.model.model_dump() if prev else {}),
                "provider": data["provider"],
                "name": (data.get("model") or "").strip(),
            },
            "params": params,
            "output_format": fmt,
            "output_schema": schema,
            "output_key": data["output_key"].strip(),
            "callback": cb,
        }

    def show_problems(self, problems):
        """Put this step's problems (from `problems_by_step`) beside the fields they name."""
        for problem in problems:
            field = problem.field if problem.field in self.fields else None
            sentence = plain_words(problem)
            if sentence not in list(self.errors.get(field or "__all__", [])):
                self.add_error(field, sentence)


def output_format_label(value):
    return dict(FORMAT_CHOICES).get(str(value), str(value))


# -- trying a step ----------------------------------------------------------------------


def step_variables(step):
    """The names a step's prompts read from its input (a workflow: all its prompts), sorted."""
    try:
        return sorted(step.prompt_variables())
    except templating.TemplateError:
        return []


class TryForm(forms.Form):
    """One sample input for a step: a value per variable, and the provider to call."""

    prefix = "try"

    index = forms.IntegerField(widget=forms.HiddenInput, min_value=0)
    provider = forms.ChoiceField(label="Provider")

    def __init__(self, *args, step, providers, **kwargs):
        super().__init__(*args, **kwargs)
        self.variables = step_variables(step)
        self.named_provider = step.model.provider if step.model.provider != "default" else None
        self.providers = {str(p.code): p for p in providers}
        choices = [(code, p.name) for code, p in self.providers.items()]
        if self.named_provider:
            choices = [(c, n) for c, n in choices if n == self.named_provider]
        self.fields["provider"].choices = choices
        self.fields["provider"].error_messages["required"] = (
            "Choose the provider to call. Add one on the providers page if the list is empty."
        )
        for name in self.variables:
            self.fields[f"var_{name}"] = forms.CharField(
                label=name,
                strip=False,
                max_length=100_000,
                widget=forms.Textarea(attrs={"rows": 2}),
                error_messages=_required(f"Give a sample value for {{{{{name}}}}}."),
                help_text="Text; a JSON list or object is passed as one.",
            )

    def variable_fields(self):
        return [self[f"var_{name}"] for name in self.variables]

    def clean(self):
        data = super().clean()
        context = {}
        for name in self.variables:
            value = data.get(f"var_{name}")
            if value is None:
                continue
            stripped = value.strip()
            if stripped[:1] in ("[", "{"):
                try:
                    value = tables.load_json(stripped, settings.JSON_MAX_DEPTH)
                except ValueError:
                    pass
            context[name] = value
        self.context = context
        self.provider = self.providers.get(data.get("provider") or "")
        return data


__all__ = [
    "SENTENCES",
    "plain_problem",
    "plain_words",
    "problems_by_step",
    "StepForm",
    "TryForm",
    "step_variables",
    "OutputFormat",
]
