"""The step panel's forms, and pipeline problems in plain words.

`StepForm` turns what a person typed into a `StepSpec` (the one spec, runner.spec);
`friendly()` turns a `PipelineSpec.problems()` sentence into the form field it is
about and a sentence a non-programmer understands. `TryForm` asks for the values a
step's prompt uses, to try it on one sample.
"""

import json
import re

from django import forms
from pydantic import ValidationError

from runner.spec import KEY_RE, OutputFormat, StepSpec, templating

# -- problems in plain words ------------------------------------------------------------

_LABEL = {"prompt": "prompt", "system": "system prompt"}
_AVAILABLE = "(?P<a>.*)"
# (pattern, field, sentence): the sentence is formatted with the pattern's groups,
# `label` (the field's name in words) and `can_use` (the names the step may use).
_RULES = [
    (
        r"the (?P<f>prompt|system) uses \{\{(?P<v>\w+)\}\}, which is not made by any step "
        rf"before this one \(available: {_AVAILABLE}\)",
        "{f}",
        "`{{{{{v}}}}}` is not made by any step before this one. {can_use}",
    ),
    (
        r"the (?P<f>prompt|system) uses \{\{(?P<v>\w+)\}\}, which is not one of the "
        rf"pipeline's inputs \({_AVAILABLE}\)",
        "{f}",
        "`{{{{{v}}}}}` is not one of the pipeline's inputs. {inputs_are}",
    ),
    (
        r"the (?P<f>prompt|system) is not a valid template \((?P<d>.*)\)",
        "{f}",
        "The {label} has a mistake in a {{{{ }}}} placeholder ({d}). "
        "Check that every {{{{ has a matching }}}} and holds one name.",
    ),
    (
        r"the name is already used by step (?P<n>\d+).*",
        "name",
        "Step {n} already has this name. Give each step its own name.",
    ),
    (
        r"output key '(?P<k>.*)' must start with a letter.*",
        "output_key",
        "A result name starts with a letter and holds only letters, digits and _ "
        "(for example: answer).",
    ),
    (
        r"output key '(?P<k>.*)' is already made by step (?P<n>\d+).*",
        "output_key",
        "Step {n} already stores its result as “{k}”. Choose another name.",
    ),
    (
        r"output key '(?P<k>.*)' is already one of the pipeline's inputs.*",
        "output_key",
        "“{k}” is one of the pipeline's inputs. Choose another name.",
    ),
    (
        r"callback key '(?P<k>.*)' must start with a letter.*",
        "key:{k}",
        "A name starts with a letter and holds only letters, digits and _ (for example: item).",
    ),
    (
        r"scatter needs .*",
        "callback",
        "Fanning out needs a list: set the output format to “JSON list”.",
    ),
    (
        r"flatten needs .*",
        "callback",
        "Flattening needs lists: set the output format to “JSON list”.",
    ),
    (r"broadcast needs n.*", "n", "Say how many copies of each result to make (for example 3)."),
    (
        r"split needs a delimiter",
        "delimiter",
        "Say what to split the text on (for example a comma).",
    ),
    (
        r"(split|split_lines) works on text output.*",
        "callback",
        "Splitting works on text: set the output format to “Text”.",
    ),
    (r"pick needs the field.*", "field", "Say which field of the JSON object to take."),
    (
        r"pick needs the step's output format to be a JSON object",
        "callback",
        "Picking a field needs a JSON object: set the output format to “JSON object”.",
    ),
    (
        r"a Python callback needs the name.*",
        "callback",
        "This step's Python callback has no name; ask a developer.",
    ),
    (
        rf"aggregate groups by '(?P<k>.*)', which this step's tasks do not carry \(available: {_AVAILABLE}\)",
        "group_by",
        "The tasks of this step don't carry “{k}”. {group_by}",
    ),
    (
        r"a schema only applies .*",
        "output_format",
        "Named fields only apply to the “JSON object” output format.",
    ),
    (
        r"the pipeline has no steps.*",
        "",
        "The pipeline has no steps yet: drag one in from the palette.",
    ),
]
_RULES = [(re.compile(p, re.S), field, sentence) for p, field, sentence in _RULES]


def _names(available, lead):
    if available.strip() in ("", "nothing"):
        return "No step before this one makes anything yet."
    names = ", ".join(f"{{{{{n.strip()}}}}}" for n in available.split(","))
    return f"{lead}: {names}."


def friendly(message):
    """(field or None, plain sentence) for one problem sentence without its step prefix."""
    text = message.strip()
    for pattern, field, sentence in _RULES:
        m = pattern.fullmatch(text)
        if m:
            groups = {k: v or "" for k, v in m.groupdict().items()}
            a = groups.get("a", "")
            words = {
                "label": _LABEL.get(groups.get("f"), ""),
                "can_use": _names(a, "You can use"),
                "inputs_are": _names(a, "The inputs are"),
                "group_by": _names(a, "You can group by"),
            }
            return field.format(**groups) or None, sentence.format(**groups, **words)
    return None, (text[:1].upper() + text[1:]) if text else text


def step_prefix(spec, index):
    return f"step {index + 1} ('{spec.steps[index].name}'): "


def problems_by_step(spec, problems=None):
    """({step index: [(field, sentence)]}, [pipeline-level sentences])."""
    problems = spec.problems() if problems is None else problems
    per_step, general = {}, []
    for message in problems:
        for i in range(len(spec.steps)):
            prefix = step_prefix(spec, i)
            if message.startswith(prefix):
                per_step.setdefault(i, []).append(friendly(message[len(prefix) :]))
                break
        else:
            general.append(friendly(message)[1])
    return per_step, general


def plain_problem(message):
    """One launch or save problem as a sentence that names the step in plain words."""
    m = re.match(r"step (\d+)(?: \('(.*?)'\))?: (.*)", message, re.S)
    if not m:
        return friendly(message)[1]
    _, sentence = friendly(m[3])
    name = f" ({m[2]})" if m[2] else ""
    return f"Step {m[1]}{name}: {sentence}"


# -- the step form ----------------------------------------------------------------------

CALLBACK_CHOICES = [
    ("default", "One to one: each result feeds one next task"),
    ("scatter", "Fan out a JSON list: each item becomes a task"),
    ("broadcast", "Make n copies of each result"),
    ("aggregate", "Combine all results into one list"),
    ("flatten", "Join all lists into one list"),
    ("split_lines", "Split the text into lines: each line becomes a task"),
    ("split", "Split the text by a delimiter: each part becomes a task"),
    ("pick", "Pick one field of a JSON object"),
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
_LOC_FIELDS = {
    ("name",): "name",
    ("prompt",): "prompt",
    ("system",): "system",
    ("model", "name"): "model",
    ("params", "temperature"): "temperature",
    ("params", "max_tokens"): "max_tokens",
    ("output_format",): "output_format",
    ("output_key",): "output_key",
    ("callback", "type"): "callback",
    ("callback", "n"): "n",
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
    callback = forms.ChoiceField(label="Then", choices=CALLBACK_CHOICES)
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
    def for_step(cls, step, index, providers):
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
        form = cls(data, providers=providers, step=step)
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
                self.add_error(part, friendly(f"the {part} is not a valid template ({exc})")[1])
        if self.errors:
            return data
        try:
            self.step = StepSpec.model_validate(self._step_data(data))
        except ValidationError as exc:
            for err in exc.errors():
                field = _LOC_FIELDS.get(tuple(err["loc"]))
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

    def show_problems(self, pairs):
        """Put (field, sentence) pairs from `problems_by_step` beside their fields."""
        values = {p: self.data.get(self.add_prefix(p)) for p in ("item_key", "into", "group_by")}
        for field, sentence in pairs:
            if field and field.startswith("key:"):
                key = field[4:]
                field = next((p for p, v in values.items() if v == key), None)
            if field not in self.fields:
                field = None
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
                    value = json.loads(stripped)
                except ValueError:
                    pass
            context[name] = value
        self.context = context
        self.provider = self.providers.get(data.get("provider") or "")
        return data


__all__ = [
    "friendly",
    "plain_problem",
    "problems_by_step",
    "StepForm",
    "TryForm",
    "step_variables",
    "OutputFormat",
]
