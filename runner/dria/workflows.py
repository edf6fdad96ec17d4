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
from pathlib import Path

from pydantic import BaseModel, ValidationError

from runner.spec import templating
from runner.spec import workflow as wf
from runner.spec.workflow import (
    END,
    KEY_RE,
    Edge,
    MemoryInput,
    MemoryOutput,
    OutputFormat,
    WorkflowSpec,
    WorkflowTask,
)

from .io import (
    InputPlaceholder,
    Operator,
    _key,
    _plain,
    _text,
)

__all__ = ["Edge", "Workflow", "WorkflowBuilder"]


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
