"""A Python builder shaped like the seed, producing the one pipeline spec.

    pipeline = PipelineBuilder("QA")
    pipeline << Step("List 5 subtopics of {{topic}} as a JSON list", output="json_list",
                     output_key="subtopics").scatter("subtopic") << Step("...{{subtopic}}...", output_key="question")
    pipeline.input(topic="Solar energy")
    spec = pipeline.build()

Quality is chained the same way: `.keep("score", ">=", 4)` keeps only what meets a
condition, `.drop_duplicates("question")` sets exact and near duplicates aside, and
`Judge(fields=["question", "answer"], criteria={"helpfulness": "How helpful is it"})`
is a step that scores records against a rubric.

A step class may declare its fields as class attributes and a custom callback as a
method `callback(self, step)` returning one input (a dict / `TaskInput`) or a list of
them, as in the seed; the spec names it `module:Class` and workers import it from an
allowed package.
"""

import re

from .callbacks import StepResult, parse_json  # noqa: F401  (re-exported for callbacks)
from .quality import Criterion, DedupSpec, FilterSpec, JudgeSpec
from .schema import CallbackSpec, ModelParams, ModelRef, PipelineSpec, StepSpec

_UNSET = object()


class TaskInput(dict):
    """One input of the next step (the seed's name for it)."""


def _snake(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Step:
    name = None
    prompt = None
    system = ""
    output = "text"  # text, json_list, json_object
    output_key = None
    schema = None
    provider = "default"
    model = ""
    temperature = 0.7
    max_tokens = None

    def __init__(
        self,
        prompt=None,
        *,
        name=None,
        output_key=None,
        output=None,
        system=None,
        schema=None,
        provider=None,
        model=None,
        temperature=_UNSET,
        max_tokens=_UNSET,
    ):
        for attr, value in (
            ("prompt", prompt),
            ("name", name),
            ("output_key", output_key),
            ("output", output),
            ("system", system),
            ("schema", schema),
            ("provider", provider),
            ("model", model),
        ):
            if value is not None:
                setattr(self, attr, value)
        if temperature is not _UNSET:
            self.temperature = temperature
        if max_tokens is not _UNSET:
            self.max_tokens = max_tokens
        self._callback = CallbackSpec()
        self._keep, self._dedup = [], None
        if self.has_custom_callback():
            cls = type(self)
            self._callback = CallbackSpec(
                type="python",
                name=f"{cls.__module__}:{cls.__qualname__}",
                produces=getattr(cls, "produces", None),
            )

    def has_custom_callback(self):
        return type(self).callback is not Step.callback

    def callback(self, step: StepResult):  # overridden by custom steps
        raise NotImplementedError

    # callbacks, chainable like the seed's `.scatter()`

    def scatter(self, item_key=None):
        self._callback = CallbackSpec(type="scatter", item_key=item_key)
        return self

    def broadcast(self, n):
        self._callback = CallbackSpec(type="broadcast", n=n)
        return self

    def aggregate(self, into=None, group_by=None):
        self._callback = CallbackSpec(type="aggregate", into=into, group_by=group_by)
        return self

    def transform(self, kind, **params):
        """A no-code transform: flatten, split_lines, split (delimiter=), pick (field=)."""
        self._callback = CallbackSpec(type=kind, **params)
        return self

    # quality: what goes on to the next step

    def keep(self, field, op, value):
        """Keep only results whose `field` meets `op value` (">=", "==", "contains", ...)."""
        self._keep.append(FilterSpec(field=field, op=op, value=str(value)))
        return self

    def drop_duplicates(self, field, near=True, threshold=0.85):
        """Set aside results whose `field` repeats an earlier one (exactly, or nearly)."""
        self._dedup = DedupSpec(field=field, near=near, threshold=threshold)
        return self

    def _name(self, index):
        return self.name or (
            _snake(type(self).__name__) if type(self) is not Step else f"step_{index + 1}"
        )

    def _common(self, name):
        return dict(
            name=name,
            system=self.system or "",
            model=ModelRef(provider=self.provider or "default", name=self.model or ""),
            params=ModelParams(temperature=self.temperature, max_tokens=self.max_tokens),
            callback=self._callback,
            keep=list(self._keep),
            dedup=self._dedup,
        )

    def to_spec(self, index=0):
        name = self._name(index)
        if not self.prompt:
            raise ValueError(f"step '{name}' has no prompt")
        return StepSpec(
            prompt=self.prompt,
            output_format=self.output,
            output_schema=self.schema,
            output_key=self.output_key or re.sub(r"\W", "_", name).lower(),
            **self._common(name),
        )


class Judge(Step):
    """A step that scores each record against a rubric; its scores become record fields.

    `criteria`: {"key": "what it measures"}, or a list of `Criterion`s / dicts with
    key, description, scale ("1-5" or "pass_fail") and levels. `pair=("a", "b")`
    compares two fields and also names the better one (`chosen`, `rejected`)."""

    temperature = 0.0

    def __init__(self, fields=(), criteria=None, *, pair=None, instructions="", **kwargs):
        super().__init__(**kwargs)
        if isinstance(criteria, dict):
            criteria = [Criterion(key=k, description=v) for k, v in criteria.items()]
        self.judge = JudgeSpec(
            fields=list(fields),
            criteria=[c if isinstance(c, Criterion) else Criterion(**c) for c in criteria or []],
            pair=list(pair) if pair else None,
            instructions=instructions,
        )

    def to_spec(self, index=0):
        name = self._name(index)
        common = self._common(name)
        del common["system"]
        return StepSpec(judge=self.judge, output_key=self.output_key or "judge", **common)


class PipelineBuilder:
    def __init__(self, name="Untitled pipeline", description=""):
        self.name = name
        self.description = description
        self.steps = []
        self.inputs = []

    def __lshift__(self, step):
        if isinstance(step, type):
            step = step()
        if not isinstance(step, Step):
            raise TypeError("only Step objects can be added to a pipeline")
        self.steps.append(step)
        return self

    def input(self, *args, **kwargs):
        """`input(topic="x")` for one input, or `input([{...}, {...}])` for many."""
        if args and kwargs:
            raise TypeError("give inputs either as keyword arguments or as a list, not both")
        if args:
            if len(args) != 1 or not isinstance(args[0], list | tuple):
                raise TypeError("input() takes one list of dicts")
            self.inputs = [dict(row) for row in args[0]]
        else:
            self.inputs = [dict(kwargs)]
        return self

    def build(self):
        spec = PipelineSpec(
            name=self.name,
            description=self.description,
            steps=[s.to_spec(i) for i, s in enumerate(self.steps)],
            inputs=self.inputs,
        )
        return PipelineSpec.load(spec.to_dict())  # the same checks as any other spec
