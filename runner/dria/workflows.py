"""The seed's `dria_workflows` names, building our `WorkflowSpec`.

    builder = WorkflowBuilder(instruction=instruction)
    builder.generative_step(id="rewrite", prompt="Rewrite {{instruction}}",
                            operator=Operator.GENERATION, outputs=[Write.new("rewritten")])
    builder.flow([Edge(source="rewrite", target="_end")])
    builder.set_return_value("rewritten")
    workflow = builder.build()          # a Workflow; workflow.spec is the WorkflowSpec

Differences from the seed, all on purpose:

- the memory a task starts with is its inputs (its context), so `WorkflowBuilder`'s
  memory says which input each memory key holds: `WorkflowBuilder(topic=subject)`
  makes the prompts' `{{topic}}` read the step's input `subject`; a fixed text
  (`WorkflowBuilder(style="formal")`) becomes a literal; a fixed list cannot be
  given (pass it as a pipeline input);
- a `generative_step` without `outputs=` writes its reply under its id (`task_<id>`
  when the id is a number), so every reply is kept;
- no `set_return_value`: the step returns what its last prompt writes;
- a task with no edge goes on to the next one (the seed refuses it);
- `build()` can be called again and gives the same workflow;
- only `Operator.GENERATION` runs here (no function calling, no search).
"""

import inspect
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ValidationError

from runner.spec import templating
from runner.spec import workflow as wf
from runner.spec.workflow import (
    END,
    KEY_RE,
    Condition,
    Edge,
    MemoryInput,
    MemoryOutput,
    OutputFormat,
    WorkflowSpec,
    WorkflowTask,
)

__all__ = [
    "ConditionBuilder",
    "Edge",
    "Expression",
    "GetAll",
    "InputUsedAsValue",
    "Operator",
    "Peek",
    "Pop",
    "Push",
    "Read",
    "Size",
    "String",
    "Workflow",
    "WorkflowBuilder",
    "Write",
]


class Operator(StrEnum):
    GENERATION = "generation"
    FUNCTION_CALLING = "function_calling"
    FUNCTION_CALLING_RAW = "function_calling_raw"
    SEARCH = "search"
    SAMPLE = "sample"
    END = "end"


class Expression(StrEnum):
    EQUAL = "Equal"
    NOT_EQUAL = "NotEqual"
    CONTAINS = "Contains"
    NOT_CONTAINS = "NotContains"
    GREATER_THAN = "GreaterThan"
    LESS_THAN = "LessThan"
    GREATER_THAN_OR_EQUAL = "GreaterThanOrEqual"
    LESS_THAN_OR_EQUAL = "LessThanOrEqual"
    HAVE_SIMILAR = "HaveSimilar"


# -- what a create_workflow argument holds while the workflow is built ---------------


class InputUsedAsValue(TypeError):
    """Python code used a step's input as a real value while its workflow was built."""

    def __init__(self, placeholder, op):
        name, step = placeholder.input_name, placeholder.step_name
        super().__init__(
            f"step '{step}': create_workflow's argument '{name}' stands for each task's input "
            f"and has no value while the workflow is built, so it cannot be used with {op}. "
            f"Put it in a prompt as {{{{{name}}}}} (or pass it on with "
            f"WorkflowBuilder({name}={name})); the workflow reads the real value from memory."
        )


class InputPlaceholder(str):
    """A create_workflow argument: formats as `{{name}}`, refuses to act as a value."""

    __hash__ = str.__hash__

    def __new__(cls, name, step_name):
        obj = super().__new__(cls, "{{" + name + "}}")
        obj.input_name = name
        obj.step_name = step_name
        return obj

    def __str__(self):
        return "{{" + self.input_name + "}}"

    def __format__(self, spec):
        return str(self)

    def __repr__(self):
        return f"<input '{self.input_name}' of step '{self.step_name}'>"

    def __add__(self, other):
        if isinstance(other, str):
            return str(self) + str(other)
        return NotImplemented

    def __radd__(self, other):
        if isinstance(other, str):
            return str(other) + str(self)
        return NotImplemented

    def __reduce__(self):
        return (InputPlaceholder, (self.input_name, self.step_name))


def _refuse(op, label):
    def method(self, *args, **kwargs):
        raise InputUsedAsValue(self, label)

    method.__name__ = op
    return method


_REFUSED_DUNDERS = {
    "__len__": "len()",
    "__iter__": "a loop",
    "__getitem__": "indexing",
    "__contains__": "'in'",
    "__eq__": "==",
    "__ne__": "!=",
    "__lt__": "<",
    "__le__": "<=",
    "__gt__": ">",
    "__ge__": ">=",
    "__bool__": "a truth test",
    "__mul__": "*",
    "__rmul__": "*",
    "__mod__": "%",
}
for _op in [n for n in dir(str) if not n.startswith("_")]:
    setattr(InputPlaceholder, _op, _refuse(_op, f".{_op}()"))
for _op, _label in _REFUSED_DUNDERS.items():
    setattr(InputPlaceholder, _op, _refuse(_op, _label))


def _text(value, what):
    """A string given to the builder, with input placeholders turned into `{{name}}`."""
    if isinstance(value, InputPlaceholder):
        return str(value)
    if isinstance(value, StrEnum):
        return str(value.value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be text, not {type(value).__name__}")
    return value


def _key(value, what):
    """A memory key; an input placeholder names its input."""
    if isinstance(value, InputPlaceholder):
        return value.input_name
    return _text(value, what)


def _plain(exc):
    """pydantic's errors in one line."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


# -- inputs and outputs (the seed's `Read.new(...)` and friends) -------------------


class Read:
    @staticmethod
    def new(key, required=True):
        return MemoryInput(kind="read", key=_key(key, "Read key"), required=bool(required))


class GetAll:
    @staticmethod
    def new(key, required=True):
        return MemoryInput(kind="get_all", key=_key(key, "GetAll key"), required=bool(required))


class Peek:
    @staticmethod
    def new(key, index=0, required=True):
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"Peek.new('{key}', index): the index must be a whole number")
        return MemoryInput(
            kind="peek", key=_key(key, "Peek key"), index=index, required=bool(required)
        )


class Pop:
    @staticmethod
    def new(key, required=True):
        return MemoryInput(kind="pop", key=_key(key, "Pop key"), required=bool(required))


class Size:
    @staticmethod
    def new(key, required=True):
        return MemoryInput(kind="size", key=_key(key, "Size key"), required=bool(required))


class String:
    @staticmethod
    def new(name, value, required=True):
        """A literal text under the name a prompt uses (`required` is accepted and ignored).

        Given a create_workflow argument instead of a text, it reads that input."""
        name = _key(name, "String name")
        if isinstance(value, InputPlaceholder):
            return MemoryInput(kind="read", key=value.input_name, name=name)
        return MemoryInput(kind="string", key=name, value=_text(value, f"String '{name}' value"))


class Write:
    @staticmethod
    def new(key):
        return MemoryOutput(kind="write", key=_key(key, "Write key"))


class Push:
    @staticmethod
    def new(key):
        return MemoryOutput(kind="push", key=_key(key, "Push key"))


class ConditionBuilder:
    @staticmethod
    def build(expected=None, expression=None, input=None, target_if_not=None):
        if not isinstance(input, MemoryInput):
            raise TypeError(
                "ConditionBuilder.build(input=...) takes what it reads: Read.new(...), "
                "Size.new(...), Peek.new(...) or GetAll.new(...)"
            )
        if expression is None or target_if_not is None or expected is None:
            raise TypeError(
                "ConditionBuilder.build needs input=, expression=, expected= and target_if_not="
            )
        value = expression.value if isinstance(expression, Expression) else str(expression)
        if value == Expression.HAVE_SIMILAR.value:
            raise ValueError("Expression.HAVE_SIMILAR (embeddings) is not supported here")
        if value not in wf.EXPRESSIONS:
            raise ValueError(f"unknown expression {value!r} (known: {', '.join(wf.EXPRESSIONS)})")
        if isinstance(expected, bool) or not isinstance(expected, str | int | float):
            expected = _text(expected, "the condition's expected value")
        return Condition(
            input=input,
            expression=value,
            expected=_text(expected, "expected") if isinstance(expected, str) else str(expected),
            target_if_not=_text(target_if_not, "target_if_not"),
        )


# -- rewriting a workflow so that a memory key reads another key ------------------


def alias(spec, var, key):
    """A copy of `spec` whose reads of memory `var` read `key` instead (under the name `var`).

    Used where the seed maps an input to a memory key of another name: the step's
    prompts keep saying `{{var}}`; what fills it is `key` in the task's context."""
    if var == key:
        return spec
    tasks = []
    for t in spec.tasks:
        inputs = [
            i.model_copy(update={"key": key, "name": i.name or var})
            if i.kind != "string" and i.key == var
            else i
            for i in t.inputs
        ]
        try:
            used = t.variables()
        except templating.TemplateError:
            used = set()
        if var in used and var not in {i.var for i in inputs}:
            inputs.append(MemoryInput(kind="read", key=key, name=var))
        tasks.append(t.model_copy(update={"inputs": inputs}))
    edges = []
    for e in spec.edges:
        c = e.condition
        if c is not None and c.input.kind != "string" and c.input.key == var:
            c = c.model_copy(update={"input": c.input.model_copy(update={"key": key})})
            e = e.model_copy(update={"condition": c})
        edges.append(e)
    return spec.model_copy(update={"tasks": tasks, "edges": edges})


def _fixed(spec, var, text, where):
    """A copy of `spec` whose reads of memory `var` get the literal `text`."""
    tasks = []
    for t in spec.tasks:
        inputs = []
        for i in t.inputs:
            if i.kind != "string" and i.key == var:
                if i.kind != "read":
                    raise ValueError(
                        f"{where}: prompt '{t.id}' uses {i.kind} on '{var}', which "
                        "WorkflowBuilder was given as a fixed text; only a list can be "
                        f"{i.kind}-read: give '{var}' as a pipeline input instead"
                    )
                i = MemoryInput(kind="string", key=i.var, value=text)
            inputs.append(i)
        try:
            used = t.variables()
        except templating.TemplateError:
            used = set()
        if var in used and var not in {i.var for i in inputs}:
            inputs.append(MemoryInput(kind="string", key=var, value=text))
        tasks.append(t.model_copy(update={"inputs": inputs}))
    for e in spec.edges:
        if e.condition is not None and e.condition.input.key == var:
            raise ValueError(
                f"{where}: the condition on the edge from '{e.source}' reads '{var}', a fixed "
                "text given to WorkflowBuilder; a condition reads what the prompts write"
            )
    return spec.model_copy(update={"tasks": tasks})


# -- the workflow ---------------------------------------------------------------------


class Workflow:
    """A built workflow: `spec` is our `WorkflowSpec` (what a step runs for each input)."""

    def __init__(self, spec: WorkflowSpec):
        self.spec = spec

    @property
    def tasks(self):
        return self.spec.tasks

    @property
    def edges(self):
        return self.spec.edges

    @property
    def return_value(self):
        return list(self.spec.return_value)

    def input_keys(self):
        """Memory keys the workflow reads that no prompt writes: what its tasks need."""
        written = self.spec.written()
        return sorted(set().union(*(t.reads() for t in self.spec.tasks)) - written)

    def to_spec(self):
        return self.spec.model_copy(deep=True)

    def to_dict(self):
        return self.spec.model_dump(mode="json")

    model_dump = to_dict

    def to_json(self, indent=2):
        return self.spec.model_dump_json(indent=indent)

    def __repr__(self):
        return f"<Workflow {self.spec.shape()} returning {', '.join(self.spec.return_value)}>"


class WorkflowBuilder:
    def __init__(self, memory=None, **kwargs):
        if memory is not None and not isinstance(memory, dict):
            raise TypeError("WorkflowBuilder(memory) takes a dict of memory keys and values")
        memory = {**(memory or {}), **kwargs}
        for key, value in memory.items():
            if not isinstance(key, str) or not KEY_RE.match(key):
                raise ValueError(
                    f"WorkflowBuilder: memory key {key!r} must start with a letter and hold "
                    "only letters, digits and _"
                )
            if not isinstance(value, str | list | tuple) or isinstance(value, bool):
                raise ValueError(
                    f"WorkflowBuilder: memory '{key}' holds a {type(value).__name__}; "
                    "memory holds text or a list of texts"
                )
        self.memory = memory
        self._tasks = []
        self._edges = []
        self._return = None
        self._limits = {}

    # -- tasks ------------------------------------------------------------------------

    def generative_step(
        self,
        prompt=None,
        operator=Operator.GENERATION,
        id=None,
        inputs=None,
        outputs=None,
        schema=None,
        path=None,
        msg_history=None,
        system=None,
    ):
        if isinstance(prompt, Operator):  # the seed's positional order: (operator, prompt, ...)
            prompt, operator = (operator if isinstance(operator, str) else None), prompt
        if Operator(operator) != Operator.GENERATION:
            raise ValueError(
                f"generative_step: operator {Operator(operator).name} is not supported here; "
                "use Operator.GENERATION (function calling and search do not run in this product)"
            )
        task_id = str(len(self._tasks)) if id is None else _text(id, "generative_step id")
        where = f"generative_step '{task_id}'"
        if any(t.id == task_id for t in self._tasks):
            raise ValueError(f"{where}: a prompt with this id already exists; give each its own id")
        if prompt is None and path is not None:
            file = Path(_text(path, f"{where}: path"))
            if file.suffix.lower() != ".md" or not file.is_file():
                raise ValueError(f"{where}: path= must name an existing .md file with the prompt")
            prompt = file.read_text(encoding="utf-8")
        if prompt is None:
            raise ValueError(f"{where}: give the prompt (prompt= or path= to an .md file)")
        prompt = _text(prompt, f"{where}: the prompt")
        if not prompt.strip():
            raise ValueError(f"{where}: the prompt is empty")
        system_text = _text(system, f"{where}: system") if system is not None else ""
        for message in msg_history or []:
            if isinstance(message, dict):
                role, content = message.get("role"), message.get("content")
            else:
                role, content = message.role, message.content
            if role != "system":
                raise ValueError(
                    f"{where}: msg_history may hold system messages only (a prompt is one "
                    "message here)"
                )
            system_text = (system_text + "\n" + _text(content, "a message")).strip()
        inputs = list(inputs or [])
        for i in inputs:
            if not isinstance(i, MemoryInput):
                raise TypeError(
                    f"{where}: inputs= takes Read.new(...), GetAll.new(...), Peek.new(...), "
                    f"Pop.new(...), Size.new(...) or String.new(...), not {type(i).__name__}"
                )
        outputs = list(outputs or [])
        for o in outputs:
            if not isinstance(o, MemoryOutput):
                raise TypeError(
                    f"{where}: outputs= takes Write.new(...) or Push.new(...), "
                    f"not {type(o).__name__}"
                )
        if not outputs:  # the seed keeps such a reply nowhere; we keep it under the id
            key = task_id if KEY_RE.match(task_id) else f"task_{task_id}"
            if not KEY_RE.match(key):
                raise ValueError(
                    f"{where}: give outputs=[Write.new('key')]: the id cannot name a memory key"
                )
            outputs = [MemoryOutput(key=key)]
        fmt, json_schema = _format(schema, where)
        try:
            task = WorkflowTask(
                id=task_id,
                prompt=prompt,
                system=system_text,
                inputs=inputs,
                outputs=outputs,
                output_format=fmt,
                output_schema=json_schema,
            )
        except ValidationError as exc:
            raise ValueError(f"{where}: {_plain(exc)}") from None
        self._tasks.append(task)
        return self

    # -- flow, return value, limits -----------------------------------------------------

    def flow(self, edges):
        if isinstance(edges, Edge):
            edges = [edges]
        ids = {t.id for t in self._tasks}
        for e in edges:
            if not isinstance(e, Edge):
                raise TypeError(f"flow() takes a list of Edge(...), not {type(e).__name__}")
            if e.source not in ids:
                raise ValueError(
                    f"flow: an edge starts at '{e.source}', which is no generative_step "
                    f"(ids: {', '.join(sorted(ids)) or 'none yet'}); add the steps before the flow"
                )
            targets = [e.target] + ([e.condition.target_if_not] if e.condition else [])
            targets += [e.fallback] if e.fallback else []
            for target in targets:
                if target != END and target not in ids:
                    raise ValueError(
                        f"flow: the edge from '{e.source}' goes to '{target}', which is no "
                        f"generative_step (ids: {', '.join(sorted(ids))}, or '_end')"
                    )
            self._edges.append(e)
        return self

    def set_return_value(self, key):
        keys = [key] if isinstance(key, str) else list(key)
        if not keys:
            raise ValueError("set_return_value: give a memory key, or a list of them")
        keys = [_key(k, "the return value") for k in keys]
        written = {o.key for t in self._tasks for o in t.outputs}
        for k in keys:
            if k not in written:
                raise ValueError(
                    f"set_return_value('{k}'): no generative_step writes '{k}' "
                    f"(written: {', '.join(sorted(written)) or 'nothing yet'}); "
                    f"add outputs=[Write.new('{k}')] to the step that makes it"
                )
        self._return = keys
        return self

    def set_max_steps(self, max_steps):
        self._limits["max_steps"] = max_steps
        return self

    def set_max_time(self, max_time):
        self._limits["max_time"] = max_time
        return self

    def set_max_tokens(self, max_tokens):
        self._limits["max_tokens"] = max_tokens
        return self

    # -- build ---------------------------------------------------------------------------

    def build(self):
        """The workflow so far (this builder can go on, and build again)."""
        if not self._tasks:
            raise ValueError("build(): the workflow has no generative_step")
        returns = self._return or [self._tasks[-1].outputs[0].key]
        try:
            spec = WorkflowSpec(
                tasks=[t.model_copy(deep=True) for t in self._tasks],
                edges=[e.model_copy(deep=True) for e in self._edges],
                return_value=list(returns),
                **self._limits,
            )
        except ValidationError as exc:
            raise ValueError(f"build(): {_plain(exc)}") from None
        written = spec.written()
        for key, value in self.memory.items():
            where = f"WorkflowBuilder memory '{key}'"
            if isinstance(value, InputPlaceholder):
                if value.input_name != key:
                    if key in written:
                        raise ValueError(
                            f"{where} holds the input '{value.input_name}' and a prompt also "
                            f"writes '{key}'; name the memory key '{value.input_name}'"
                        )
                    spec = alias(spec, key, value.input_name)
            elif not value:  # an empty start: memory starts empty anyway
                continue
            elif key in written:
                raise ValueError(
                    f"{where} starts with a fixed value and a prompt also writes it; give it "
                    "as a pipeline input instead"
                )
            elif isinstance(value, str):
                spec = _fixed(spec, key, value, where)
            elif any(key in t.reads() for t in spec.tasks):
                raise ValueError(
                    f"{where} holds a fixed list; a task's memory starts from its inputs: "
                    "give the list as a pipeline input (or a create_workflow argument)"
                )
        problems = [p for _, _, p in wf.problems(spec, None)]
        if problems:
            raise ValueError("build(): " + "; ".join(problems))
        return Workflow(spec)


def _format(schema, where):
    """(output format, JSON schema) of a generative_step's `schema=`."""
    if schema is None:
        return OutputFormat.TEXT, None
    if inspect.isclass(schema) and issubclass(schema, BaseModel):
        return OutputFormat.JSON_OBJECT, schema.model_json_schema()
    if isinstance(schema, dict):
        return OutputFormat.JSON_OBJECT, schema
    raise TypeError(f"{where}: schema= takes a pydantic model class (or a JSON schema dict)")
