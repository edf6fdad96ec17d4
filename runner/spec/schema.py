"""The pipeline spec: one validated JSON document that describes a pipeline.

The designer saves to it, import/export and the command line read and write it,
the Python builder produces it, and a run keeps a snapshot of it. Nothing else
parses pipeline JSON.

Structure is checked by pydantic; meaning (keys that exist, callbacks that fit the
output) by `PipelineSpec.problems()`. `load()` runs both and raises `SpecError`
with one plain sentence per problem, each naming the step it is about.
"""

import json
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from . import templating
from . import workflow as wf
from .workflow import KEY_RE, OutputFormat, WorkflowSpec
from .workflow import Strict as _Model

SPEC_VERSION = 1


class SpecError(ValueError):
    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


CallbackType = Literal[
    "default",
    "scatter",
    "broadcast",
    "aggregate",
    "flatten",
    "split_lines",
    "split",
    "pick",
    "python",
]

# How many tasks of the next step one task of this step makes.
FAN = {
    "default": "1 -> 1",
    "scatter": "1 -> N",
    "broadcast": "1 -> n",
    "aggregate": "N -> 1",
    "flatten": "N -> 1",
    "split_lines": "1 -> N",
    "split": "1 -> N",
    "pick": "1 -> 1",
    "python": "custom",
}
# Callbacks that wait for every task of their step before making the next ones.
WAITING_CALLBACKS = {"aggregate", "flatten", "python"}


class ModelRef(_Model):
    provider: str = "default"
    name: str = ""  # empty: the provider's default model
    # Models of the same provider tried in order when this one keeps failing
    # (retries exhausted, or a permanent error such as 404 model not found).
    fallbacks: list[str] = Field(default_factory=list, max_length=10)


class ModelParams(_Model):
    temperature: float | None = Field(default=0.7, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    top_p: float | None = Field(default=None, gt=0, le=1)
    timeout: float | None = Field(default=None, gt=0, le=3600)


class CallbackSpec(_Model):
    type: CallbackType = "default"
    n: int | None = Field(default=None, ge=1, le=10_000)  # broadcast
    item_key: str | None = None  # scatter, split, split_lines: the key of each item
    into: str | None = None  # aggregate, flatten, pick: the key of the result
    group_by: str | None = None  # aggregate
    delimiter: str | None = None  # split
    field: str | None = None  # pick
    name: str | None = None  # python: a registered callback
    produces: list[str] | None = None  # python: keys its inputs carry, when known


class StepSpec(_Model):
    """One step: a prompt, or a workflow of several (`workflow`), and its callback.

    A workflow step's output key defaults to its return value, and its output format
    is the return value's shape (a list, an object, text)."""

    name: str = Field(min_length=1, max_length=100)
    prompt: str = Field(max_length=100_000)  # "" for a workflow step
    system: str = Field(default="", max_length=100_000)
    workflow: WorkflowSpec | None = None
    model: ModelRef = Field(default_factory=ModelRef)
    params: ModelParams = Field(default_factory=ModelParams)
    output_format: OutputFormat = OutputFormat.TEXT
    output_schema: dict[str, Any] | None = None
    output_key: str
    callback: CallbackSpec = Field(default_factory=CallbackSpec)

    @model_validator(mode="before")
    @classmethod
    def _workflow_defaults(cls, data):
        flow = data.get("workflow") if isinstance(data, dict) else None
        if flow is not None and "prompt" not in data:
            data = {**data, "prompt": ""}
        if isinstance(flow, dict) and not data.get("output_key"):
            returns = flow.get("return_value")
            returns = [returns] if isinstance(returns, str) else returns
            if isinstance(returns, list) and returns and isinstance(returns[0], str):
                data = {**data, "output_key": returns[0]}
        return data

    @model_validator(mode="after")
    def _workflow_format(self):
        if self.workflow is not None:
            self.output_format = self.workflow.output_format()
        return self

    def as_workflow(self):
        """What the engine runs for one input: the step's workflow (one prompt: one task)."""
        return self.workflow if self.workflow is not None else wf.one_task(self)

    @property
    def returns_object(self):
        """True when the output is several named keys, each landing under its own name."""
        return self.workflow is not None and len(self.workflow.return_value) > 1

    def prompt_variables(self):
        """Keys the step reads from its tasks' context (TemplateError when a prompt is broken)."""
        if self.workflow is None:
            return templating.variables(self.prompt) | templating.variables(self.system)
        written = self.workflow.written()
        return set().union(*(t.reads() for t in self.workflow.tasks)) - written

    def result_keys(self):
        """The keys this step's callback adds to (or sets on) its children's context."""
        cb = self.callback
        if cb.type == "default" and self.returns_object:
            return list(self.workflow.return_value)
        if cb.type in ("scatter", "split", "split_lines"):
            return [cb.item_key or self.output_key]
        if cb.type in ("aggregate", "flatten", "pick"):
            return [cb.into or self.output_key]
        if cb.type == "python":
            return list(cb.produces or [])
        return [self.output_key]

    @property
    def fan(self):
        return FAN[self.callback.type]


class PipelineSpec(_Model):
    spec_version: int = SPEC_VERSION
    name: str = Field(default="Untitled pipeline", max_length=200)
    description: str = Field(default="", max_length=5000)
    input_keys: list[str] = Field(default_factory=list)
    steps: list[StepSpec] = Field(default_factory=list)
    inputs: list[dict[str, Any]] = Field(default_factory=list)  # example inputs

    # -- reading and writing -------------------------------------------------

    @classmethod
    def load(cls, data):
        """Parse and check a spec from a dict, JSON text or bytes; raise SpecError."""
        if isinstance(data, bytes | str):
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError) as exc:
                raise SpecError([f"the file is not valid JSON: {exc}"]) from None
        if not isinstance(data, dict):
            raise SpecError(["a pipeline spec is a JSON object with a list of steps"])
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(_describe(exc, data)) from None
        problems = spec.problems()
        if problems:
            raise SpecError(problems)
        return spec

    def to_dict(self):
        return self.model_dump(mode="json")

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    # -- meaning -------------------------------------------------------------

    def first_step_keys(self):
        """The keys a run's inputs must provide."""
        if self.input_keys:
            return list(self.input_keys)
        if not self.steps:
            return []
        first = self.steps[0]
        try:
            names = first.prompt_variables()
        except templating.TemplateError:
            return []
        return sorted(names)

    def contexts(self):
        """For each step, the set of keys its tasks carry, or None when unknown."""
        return [None if keys is None else set(keys) for keys in self._key_orders()[:-1]]

    def record_fields(self):
        """The fields of this pipeline's records in the order they are made (inputs first).

        None when a Python callback hides what it makes."""
        return self._key_orders()[-1]

    def _key_orders(self):
        """The keys tasks carry before each step, in the order made, then a record's keys."""
        out = []
        keys = list(self.first_step_keys())
        for step in self.steps:
            out.append(None if keys is None else list(keys))
            cb = step.callback
            new = step.result_keys()
            if cb.type in ("aggregate", "flatten"):
                keys = ([cb.group_by] if cb.group_by else []) + [k for k in new if k != cb.group_by]
            elif cb.type == "python":
                keys = list(new) if cb.produces is not None else None
            elif keys is not None:
                keys = keys + [k for k in new if k not in keys]
        out.append(keys)
        return out

    def problems(self):
        out = []
        if not self.steps:
            return ["the pipeline has no steps: add at least one step"]
        if self.spec_version != SPEC_VERSION:
            out.append(
                f"spec_version {self.spec_version} is not supported (this version reads {SPEC_VERSION})"
            )
        for key in self.input_keys:
            if not KEY_RE.match(key):
                out.append(
                    f"input key '{key}' must start with a letter and hold only letters, digits and _"
                )
        seen_names, seen_keys = {}, {}
        contexts = self.contexts()
        first_keys = set(self.first_step_keys())
        for i, step in enumerate(self.steps):
            where = f"step {i + 1} ('{step.name}')"
            if step.name in seen_names:
                out.append(
                    f"{where}: the name is already used by step {seen_names[step.name] + 1}; give each step its own name"
                )
            seen_names.setdefault(step.name, i)
            if not KEY_RE.match(step.output_key):
                out.append(
                    f"{where}: output key '{step.output_key}' must start with a letter and hold only letters, digits and _"
                )
            elif step.output_key in seen_keys:
                out.append(
                    f"{where}: output key '{step.output_key}' is already made by step {seen_keys[step.output_key] + 1}; choose another"
                )
            seen_keys.setdefault(step.output_key, i)
            out.extend(f"{where}: {p}" for p in _callback_problems(step))
            ctx = contexts[i]
            if ctx is not None:
                cb = step.callback
                if step.output_key in first_keys:
                    out.append(
                        f"{where}: output key '{step.output_key}' is already one of the pipeline's inputs; choose another"
                    )
                if cb.type == "aggregate" and cb.group_by and cb.group_by not in ctx:
                    made = ", ".join(sorted(ctx)) or "nothing"
                    out.append(
                        f"{where}: aggregate groups by '{cb.group_by}', which this step's tasks do not carry (available: {made})"
                    )
            if step.output_schema is not None and step.output_format != OutputFormat.JSON_OBJECT:
                out.append(f"{where}: a schema only applies to the 'JSON object' output format")
            if step.workflow is not None:
                if step.prompt or step.system:
                    out.append(
                        f"{where}: a step has a prompt or a workflow, not both; clear the prompt"
                    )
                out.extend(f"{where}: {p}" for _, _, p in wf.problems(step.workflow, ctx))
                continue
            if not step.prompt:
                out.append(f"{where}: prompt is missing")
            for field_name in ("prompt", "system"):
                source = getattr(step, field_name)
                try:
                    used = templating.variables(source)
                except templating.TemplateError as exc:
                    out.append(f"{where}: the {field_name} is not a valid template ({exc})")
                    continue
                if ctx is None or (i == 0 and not self.input_keys):
                    continue
                for name in sorted(used - ctx):
                    made = ", ".join(sorted(ctx)) or "nothing"
                    if i == 0:
                        out.append(
                            f"{where}: the {field_name} uses {{{{{name}}}}}, which is not one of the pipeline's inputs ({made})"
                        )
                    else:
                        out.append(
                            f"{where}: the {field_name} uses {{{{{name}}}}}, which is not made by any step before this one (available: {made})"
                        )
        return out

    def check_inputs(self, inputs):
        """Problems with a list of input dicts for a run of this spec."""
        if not isinstance(inputs, list) or not inputs:
            return ["give at least one input"]
        needed = set(self.first_step_keys())
        out = []
        for n, row in enumerate(inputs, 1):
            if not isinstance(row, dict):
                out.append(f"input {n} is not a set of key/value pairs")
                continue
            missing = sorted(needed - set(row))
            if missing:
                out.append(f"input {n} has no value for {', '.join(missing)}")
            bad = [k for k in row if not isinstance(k, str) or not KEY_RE.match(k)]
            if bad:
                out.append(
                    f"input {n}: key {bad[0]!r} must start with a letter and hold only letters, digits and _"
                )
            if len(out) >= 20:
                out = out[:20] + ["(more problems not shown)"]
                break
        return out

    def fan_summary(self):
        return [f"{s.name}: {s.fan}" for s in self.steps]


def _callback_problems(step):
    cb = step.callback
    t = cb.type
    out = []
    for key_name in ("item_key", "into", "group_by"):
        value = getattr(cb, key_name)
        if value is not None and not KEY_RE.match(value):
            out.append(
                f"callback key '{value}' must start with a letter and hold only letters, digits and _"
            )
    if t == "scatter" and step.output_format != OutputFormat.JSON_LIST:
        out.append(
            "scatter needs the step's output format to be a JSON list (each item becomes a task)"
        )
    if t == "flatten" and step.output_format != OutputFormat.JSON_LIST:
        out.append(
            "flatten needs the step's output format to be a JSON list (lists are joined into one)"
        )
    if t == "broadcast" and cb.n is None:
        out.append("broadcast needs n, the number of copies of each output")
    if t == "split" and not cb.delimiter:
        out.append("split needs a delimiter")
    if t in ("split", "split_lines") and step.output_format != OutputFormat.TEXT:
        out.append(f"{t} works on text output; choose the text output format")
    if t == "pick":
        if not cb.field:
            out.append("pick needs the field to take from the JSON object")
        if step.output_format != OutputFormat.JSON_OBJECT:
            out.append("pick needs the step's output format to be a JSON object")
    if t == "python" and not cb.name:
        out.append("a Python callback needs the name it was registered under")
    return out


def _describe(exc, data):
    """Turn pydantic's errors into sentences that name the step."""
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = "pipeline"
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            steps = data.get("steps") or []
            name = (
                steps[loc[1]].get("name")
                if loc[1] < len(steps) and isinstance(steps[loc[1]], dict)
                else None
            )
            where = f"step {loc[1] + 1}" + (f" ('{name}')" if name else "")
            loc = loc[2:]
        field = ".".join(str(p) for p in loc) or "value"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif err["type"] == "literal_error" and field.endswith("callback.type"):
            msg = f"unknown callback {err.get('input')!r} (known: default, scatter, broadcast, aggregate, flatten, split_lines, split, pick, python)"
        elif err["type"] == "enum" and field == "output_format":
            msg = (
                f"unknown output format {err.get('input')!r} (known: text, json_list, json_object)"
            )
        elif err["type"] == "missing":
            msg = "is missing"
        out.append(f"{where}: {field} {msg}")
    return out
