"""The seed's `dria.pipelines` names, building our `PipelineSpec`.

    class FirstPipelineStep(StepTemplate):
        def create_workflow(self, instruction: str) -> Workflow:
            builder = WorkflowBuilder(instruction=instruction)
            ...
            return builder.build()

    pipeline = PipelineBuilder(Dria())
    pipeline << FirstPipelineStep().scatter() << SecondPipelineStep()
    pipeline.input(instruction="Write a haiku")
    records = pipeline.build().execute(return_output=True)

How steps join (the seed's rules, in our spec's words):

- `create_workflow` is called once, when the step joins a pipeline; each argument
  without a default stands for the input of that name (`InputPlaceholder`: it
  formats as `{{name}}` and refuses to act as a value). Arguments with a default,
  or given to the step (`MyStep(n=3)`), get that real value.
- a step's output is its workflow's return value, stored under the return key (several
  keys: each under its own name);
- the next step gets it under the name its `create_workflow` takes: `.scatter()` gives
  each item of the JSON list under that name (`item_key`), `.aggregate()` the list of
  every output (`into`), `.broadcast(n)` n copies; with no callback the next step's
  prompts read the return key under their own name. Which name: the return key when
  the next step takes it, else its only input, else its only input nothing upstream
  makes; otherwise the build names the step and asks for a callback;
- a `callback(self, step)` method makes the step's callback a Python one: it sees
  `step.output[i].result` / `.parsed` / `.task_input` and `step.input`, and returns a
  `TaskInput` or a list of them (workers import the class: define it at module level
  in a package that RUNNER_CALLBACK_PACKAGES allows).
"""

import functools
import inspect
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from django.conf import settings

from runner.spec import PipelineSpec
from runner.spec import builder as spec_builder
from runner.spec.callbacks import StepResult
from runner.spec.callbacks import parse_json as _parse_json
from runner.spec.schema import CallbackSpec, ModelRef, StepSpec
from runner.spec.workflow import OutputFormat

from .io import InputPlaceholder
from .workflows import Workflow, WorkflowBuilder, alias

__all__ = [
    "Dria",
    "Pipeline",
    "PipelineBuilder",
    "PipelineConfig",
    "StepTemplate",
    "TaskInput",
    "TaskResult",
    "parse_json",
]


class Dria:
    """A stand-in for the seed's network client: accepted and ignored (our workers run steps)."""

    def __init__(self, *args, **kwargs):
        pass


class PipelineConfig:
    """A stand-in for the seed's pipeline settings: accepted and ignored."""

    def __init__(self, *args, **kwargs):
        self.__dict__.update(kwargs)


class TaskInput(spec_builder.TaskInput):
    """One input of the next step: a dict, with the seed's attribute access and `.dict()`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def dict(self):
        return dict(self)

    model_dump = dict


def parse_json(text):
    """The JSON value in a reply (a list or an object, prose around it allowed)."""
    if not isinstance(text, str):
        return text
    return _parse_json(text)


# -- what a Python callback sees (the seed's `Step`) ----------------------------------


@dataclass
class TaskResult:
    result: str  # the step's output as text (JSON for a list or an object)
    parsed: Any
    task_input: TaskInput
    step_name: str = ""
    id: int | None = None


@dataclass
class StepView:
    name: str
    index: int
    output_key: str
    output: list[TaskResult] = field(default_factory=list)

    @property
    def input(self):
        """The inputs of the step's finished tasks, in input order."""
        return [o.task_input for o in self.output]

    all_inputs = input


def _view(step):
    if isinstance(step, StepView):
        return step
    if not isinstance(step, StepResult):
        return step
    outputs = []
    for o in step.output:
        value = o.parsed
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if value is None:
            text = o.result or ""
        outputs.append(TaskResult(text, value, TaskInput(o.context), step.name, o.task_id))
    return StepView(step.name, step.index, step.output_key, outputs)


# -- steps ----------------------------------------------------------------------------


class StepTemplate:
    """A step: `create_workflow(self, **inputs) -> Workflow`, and how it feeds the next step."""

    produces = None  # the keys a custom callback gives the next step, when known

    def __init__(self, config=None, **kwargs):
        self.config = config
        self.params = SimpleNamespace(**kwargs)
        self._kwargs = dict(kwargs)
        self._callback = "default"
        self._n = None
        self._models = []
        self._limits = {}
        self._workflow = None
        self._inputs = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        fn = cls.__dict__.get("callback")
        if fn is not None and not getattr(fn, "_sees_dria_step", False):

            @functools.wraps(fn)
            def callback(self, step):
                made = fn(self, _view(step))
                return [dict(m) for m in made] if isinstance(made, list) else made

            callback._sees_dria_step = True
            cls.callback = callback

    @property
    def name(self):
        return type(self).__name__

    def create_workflow(self, **inputs) -> Workflow:
        raise NotImplementedError(f"step '{self.name}' must define create_workflow(self, ...)")

    def callback(self, step):  # a custom step overrides it
        raise NotImplementedError

    def has_custom_callback(self):
        return type(self).callback is not StepTemplate.callback

    # -- the workflow, built once ----------------------------------------------------------

    @property
    def workflow(self):
        if self._workflow is None:
            self._workflow = self._build_workflow()
        return self._workflow

    @property
    def input_names(self):
        """The create_workflow arguments that stand for inputs, in order."""
        self.workflow  # noqa: B018  (builds it)
        return list(self._inputs)

    def _build_workflow(self):
        fn = self.create_workflow
        if type(self).create_workflow is StepTemplate.create_workflow:
            raise NotImplementedError(f"step '{self.name}' must define create_workflow(self, ...)")
        args, kwargs, names = [], {}, []
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name in self._kwargs:
                value = self._kwargs[p.name]
            elif p.default is not p.empty:
                value = p.default
            else:
                value = InputPlaceholder(p.name, self.name)
                names.append(p.name)
            if p.kind == p.POSITIONAL_ONLY:
                args.append(value)
            else:
                kwargs[p.name] = value
        made = fn(*args, **kwargs)
        if isinstance(made, WorkflowBuilder):
            made = made.build()
        if not isinstance(made, Workflow):
            raise TypeError(
                f"step '{self.name}': create_workflow must return a Workflow (builder.build()), "
                f"not {type(made).__name__}"
            )
        self._inputs = names
        return made

    # -- callbacks, chainable like the seed's ----------------------------------------------

    def _builtin(self, kind):
        if self.has_custom_callback():
            raise ValueError(
                f"step '{self.name}' defines callback(self, step), which makes its next inputs; "
                f"drop .{kind}()"
            )
        self._callback = kind

    def scatter(self):
        self._builtin("scatter")
        return self

    def broadcast(self, n):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(
                f"step '{self.name}': broadcast(n) needs n, a whole number of copies (1 or more)"
            )
        self._builtin("broadcast")
        self._n = n
        return self

    def aggregate(self):
        self._builtin("aggregate")
        return self

    def custom(self):
        if not self.has_custom_callback():
            raise ValueError(
                f"step '{self.name}': custom() needs a callback(self, step) method on the step"
            )
        return self

    def set_models(self, models=None):
        if models is None:
            return self
        if isinstance(models, str) or not isinstance(models, list | tuple):
            models = [models]
        names = [str(getattr(m, "value", m)).strip() for m in models]
        if not all(names):
            raise ValueError(f"step '{self.name}': set_models takes model names")
        self._models = names
        return self

    def set_workflow_params(self, min_compute=None, max_time=None, max_steps=None, max_tokens=None):
        for key, value in (("max_time", max_time), ("max_steps", max_steps)):
            if value:
                self._limits[key] = value
        if max_tokens:
            self._limits["max_tokens"] = max_tokens
        return self

    # -- the spec --------------------------------------------------------------------------

    def _python_callback_name(self):
        cls = type(self)
        where = f"step '{self.name}'"
        if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
            raise ValueError(
                f"{where} has a callback(self, step): workers import its class, so define it at "
                "module level in an importable module (not in a function or __main__)"
            )
        if cls.__module__.split(".")[0] not in settings.RUNNER_CALLBACK_PACKAGES:
            allowed = ", ".join(settings.RUNNER_CALLBACK_PACKAGES)
            raise ValueError(
                f"{where} has a callback(self, step) in module '{cls.__module__}', which workers "
                f"may not import (allowed packages: {allowed}; see RUNNER_CALLBACK_PACKAGES)"
            )
        return f"{cls.__module__}:{cls.__qualname__}"


def _next_inputs(template, spec):
    """The keys a step's workflow needs from its context: its arguments first."""
    written = spec.written()
    reads = set().union(*(t.reads() for t in spec.tasks)) - written
    first = [n for n in template.input_names if n in reads]
    return first + sorted(reads - set(first))


def _target(where, returned, names, ctx, nxt):
    """Under which of the next step's input names this step's output goes."""
    if not names or returned in names:
        return returned
    if len(names) == 1:
        return names[0]
    missing = [n for n in names if ctx is None or n not in ctx]
    if len(missing) == 1:
        return missing[0]
    raise ValueError(
        f"{where} returns '{returned}', and the next step '{nxt}' takes several inputs "
        f"({', '.join(names)}): which one gets '{returned}' is unclear. Name one of "
        f"{nxt}.create_workflow's arguments '{returned}', or give {where} a "
        "callback(self, step) returning TaskInput(...) with the next step's keys"
    )


def _as_list(spec, key):
    """The workflow with the prompts that write `key` answering a JSON list (for scatter)."""
    tasks = [
        t.model_copy(update={"output_format": OutputFormat.JSON_LIST})
        if t.output_format == OutputFormat.TEXT
        and any(o.key == key and o.kind == "write" for o in t.outputs)
        else t
        for t in spec.tasks
    ]
    return spec.model_copy(update={"tasks": tasks})


class PipelineBuilder:
    def __init__(self, client=None, config=None, *, name=None, description=""):
        if isinstance(client, str) and name is None:  # our own builder's first argument
            name, client = client, None
        self.client = client
        self.config = config
        self.name = name or "Dria pipeline"
        self.description = description
        self.steps: list[StepTemplate] = []
        self.inputs: list[dict] = []

    def __lshift__(self, step):
        if isinstance(step, type) and issubclass(step, StepTemplate):
            step = step()
        if not isinstance(step, StepTemplate):
            raise TypeError(
                f"only StepTemplate steps can be added to a pipeline, not {type(step).__name__}"
            )
        step.workflow  # noqa: B018  (builds it now: mistakes show where the step is added)
        self.steps.append(step)
        return self

    def input(self, *args, **kwargs):
        """`input(instruction="x")` for one input, or `input([{...}, {...}])` for many."""
        if args and kwargs:
            raise TypeError("give inputs either as keyword arguments or as a list, not both")
        if args:
            rows = args[0]
            if len(args) != 1 or not isinstance(rows, list | tuple):
                raise TypeError("input() takes one list of dicts")
            if not all(isinstance(r, dict) for r in rows):
                raise TypeError("input([...]) takes a list of dicts, one per input")
            self.inputs = [dict(r) for r in rows]
        else:
            self.inputs = [dict(kwargs)]
        return self

    def build(self):
        if not self.steps:
            raise ValueError("the pipeline has no steps: add them with pipeline << Step()")
        flows = [s.workflow.to_spec() for s in self.steps]
        names, seen = [], {}
        for s in self.steps:
            seen[s.name] = seen.get(s.name, 0) + 1
            names.append(s.name if seen[s.name] == 1 else f"{s.name} {seen[s.name]}")
        ctx = set(_next_inputs(self.steps[0], flows[0]))
        for row in self.inputs:
            ctx |= set(row)
        specs = []
        for i, step in enumerate(self.steps):
            where = f"step {i + 1} ('{names[i]}')"
            flow = flows[i].model_copy(update=step._limits) if step._limits else flows[i]
            returns = flow.return_value
            returned = returns[0]
            nxt = i + 1 < len(self.steps)
            kind = "python" if step.has_custom_callback() else step._callback
            target = returned
            if nxt and kind != "python" and len(returns) == 1:
                names_next = _next_inputs(self.steps[i + 1], flows[i + 1])
                target = _target(where, returned, names_next, ctx, names[i + 1])
            if kind == "python":
                cb = CallbackSpec(
                    type="python", name=step._python_callback_name(), produces=step.produces
                )
            elif kind == "scatter":
                cb = CallbackSpec(type="scatter", item_key=None if target == returned else target)
                flow = _as_list(flow, returned)
            elif kind == "aggregate":
                cb = CallbackSpec(type="aggregate", into=None if target == returned else target)
            else:
                cb = CallbackSpec(type=kind, n=step._n)
                if nxt and target != returned:
                    flows[i + 1] = alias(flows[i + 1], target, returned)
            model = ModelRef(
                name=step._models[0] if step._models else "", fallbacks=step._models[1:]
            )
            spec = StepSpec(
                name=names[i],
                workflow=flow,
                model=model,
                output_key=returned,
                callback=cb,
            )
            specs.append(spec)
            made = spec.result_keys()
            if kind == "python":
                ctx = set(step.produces) if step.produces is not None else None
            elif kind == "aggregate":
                ctx = set(made)
            elif ctx is not None:
                ctx = ctx | set(made)
        spec = PipelineSpec(
            name=self.name, description=self.description, steps=specs, inputs=self.inputs
        )
        return Pipeline(PipelineSpec.load(spec.to_dict()), client=self.client)


class Pipeline:
    """A built pipeline: `spec` is our `PipelineSpec`; `execute()` runs it on the workers."""

    def __init__(self, spec, client=None):
        self.spec = spec
        self.client = client
        self.run = None

    @property
    def inputs(self):
        return list(self.spec.inputs)

    def to_dict(self):
        return self.spec.to_dict()

    def to_json(self, indent=2):
        return self.spec.to_json(indent=indent)

    def execute(self, return_output=True, **options):
        """Run on the workers and wait; the records (a list of dicts), or the run's code.

        Options: `inputs` (else the pipeline's), `base_url`, `model`, `api_key` (an
        OpenAI-compatible endpoint; else the default provider of DEFAULT_LLM_*),
        `provider` (the name of a saved provider), `user` (else the only user, or
        'cli'), `concurrency`, `budget` (dollars), `timeout` (seconds for the whole
        run), `start_timeout` (seconds for a worker to pick it up)."""
        from .run import execute

        return execute(self, return_output=return_output, **options)

    def __repr__(self):
        return f"<Pipeline {self.spec.name!r}: {', '.join(self.spec.fan_summary())}>"
