"""The pipeline spec: one validated JSON document that describes a pipeline.

The designer saves to it, import/export and the command line read and write it,
the Python builder produces it, and a run keeps a snapshot of it. Nothing else
parses pipeline JSON.

Structure is checked by pydantic; meaning (keys that exist, callbacks that fit the
output) by `PipelineSpec.problems()`, which `checks.py` implements. `load()` runs
both and raises `SpecError` whose `problems` are `checks.Problem`s: each names its
step, the form field it is about and a stable code, and reads as one plain sentence.
"""

import json
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from . import checks, quality, tables, templating
from . import workflow as wf
from .checks import SPEC_VERSION, SpecError
from .quality import DedupSpec, FilterSpec, JudgeSpec
from .workflow import OutputFormat, WorkflowSpec
from .workflow import Strict as _Model

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
    "default": "1 → 1",
    "scatter": "1 → N",
    "broadcast": "1 → n",
    "aggregate": "N → 1",
    "flatten": "N → 1",
    "split_lines": "1 → N",
    "split": "1 → N",
    "pick": "1 → 1",
    "python": "custom",
}
# What each callback does, in words a person reads (the designer's cards, the run page).
CALLBACK_WORDS = {
    "default": "each result feeds one task of the next step",
    "scatter": "every item of each list becomes its own task",
    "broadcast": "each result feeds {n} copies of the next step",
    "aggregate": "all results become one list for one task",
    "flatten": "all lists are joined into one list for one task",
    "split_lines": "every line of each reply becomes its own task",
    "split": "every part of each reply becomes its own task",
    "pick": "one field of each JSON object feeds one task",
    "python": "a Python callback decides",
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

    @property
    def words(self):
        """What this callback does with a step's results, in plain words."""
        if self.type == "aggregate" and self.group_by:
            return f"results become one list per {self.group_by}, each for one task"
        return CALLBACK_WORDS[self.type].format(n=self.n)


class StepSpec(_Model):
    """One step: a prompt, or a workflow of several (`workflow`), and its callback.

    A workflow step's output key defaults to its return value, and its output format
    is the return value's shape (a list, an object, text).

    A judge step (`judge`) has no prompt of its own: its prompt and reply schema are
    made from its rubric, and its verdict lands as fields of the record.

    After the callback, `keep` (filters) and `dedup` (duplicates of one field) decide
    which of the step's results go on; the others are set aside as marked records."""

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
    judge: JudgeSpec | None = None
    keep: list[FilterSpec] = Field(default_factory=list, max_length=10)
    dedup: DedupSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _workflow_defaults(cls, data):
        if isinstance(data, dict) and data.get("judge") is not None:
            data = {"prompt": "", "output_key": "judge", **data}
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
        if self.judge is not None and self.workflow is None:
            # the rubric is the judge's prompt and reply schema
            self.prompt = quality.judge_prompt(self.judge)
            self.system = ""
            self.output_format = OutputFormat.JSON_OBJECT
            self.output_schema = quality.judge_schema(self.judge)
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
        if cb.type == "default" and self.judge is not None:
            return self.judge.result_keys()
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
    def load(cls, data, max_depth=tables.MAX_DEPTH):
        """Parse and check a spec from a dict, JSON text or bytes; raise SpecError.

        JSON nested deeper than `max_depth` levels is refused before pydantic sees it."""
        if isinstance(data, bytes | str):
            try:
                data = tables.load_json(data, max_depth)
            except tables.TooDeep as exc:
                raise SpecError([checks.too_deep(exc)]) from None
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise SpecError([checks.not_json(exc)]) from None
        elif tables.depth(data, max_depth) > max_depth:
            raise SpecError([checks.too_deep(tables.TooDeep(max_depth))])
        if not isinstance(data, dict):
            raise SpecError([checks.not_an_object()])
        try:
            spec = cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(checks.describe(exc, data)) from None
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
        """Every problem with what this spec means, as `checks.Problem`s (empty: none)."""
        return checks.spec_problems(self)

    def check_inputs(self, inputs):
        """Problems with a list of input dicts for a run of this spec."""
        return checks.input_problems(self, inputs)
