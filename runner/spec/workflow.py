"""A step's workflow: several prompts that share a memory, joined by edges.

This is the seed's `Workflow` (from `dria_workflows`), as data and as rules:

- **memory**: keys holding a string or a list (any JSON a reply parses to), filled
  first from the task's inputs (its context);
- **tasks**: one prompt each; it reads memory (`read`, `get_all`, `peek`, `pop`,
  `size`, or a literal `string`; every `{{variable}}` of the prompt not named by an
  input is read as is) and writes its reply (`write` replaces, `push` appends);
- **edges**: which task comes next (`_end` ends), optionally under a condition whose
  `target_if_not` makes loops, and a `fallback` task when a task fails; a task with
  no edge goes on to the next one in the list, the last one to `_end`;
- **limits**: `max_steps` (prompts made, default 20; always applies), `max_time`
  (seconds), `max_tokens` (per reply);
- **return value**: one memory key, or several (a JSON object), the step's output.

A one-prompt step is a workflow of one task (`one_task`): the engine has one path.
Everything here is pure: the rules a workflow runs by are in `memory.py`; the engine
(`runner.engine.workflows`) makes the calls.
"""

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from . import templating
from .checks import KEY_RE
from .memory import holds

TASK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
END = "_end"
DEFAULT_MAX_STEPS = 20

Expression = Literal[
    "Equal",
    "NotEqual",
    "Contains",
    "NotContains",
    "GreaterThan",
    "LessThan",
    "GreaterThanOrEqual",
    "LessThanOrEqual",
]
EXPRESSIONS = Expression.__args__
InputKind = Literal["read", "get_all", "peek", "pop", "size", "string"]
# How a condition reads, in words (the designer's form, the pipeline's drawing).
EXPRESSION_WORDS = {
    "Equal": "is",
    "NotEqual": "is not",
    "Contains": "contains",
    "NotContains": "does not contain",
    "GreaterThan": "is more than",
    "LessThan": "is less than",
    "GreaterThanOrEqual": "is at least",
    "LessThanOrEqual": "is at most",
}
INPUT_WORDS = {
    "read": "{key}",
    "get_all": "all of {key}",
    "peek": "an item of {key}",
    "pop": "the last item of {key}",
    "size": "the number of items in {key}",
    "string": "the text {key}",
}


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON_LIST = "json_list"
    JSON_OBJECT = "json_object"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryInput(Strict):
    """What a task reads from memory, under the name its prompt uses."""

    kind: InputKind = "read"
    key: str = Field(min_length=1, max_length=64)  # the memory key (string: the name)
    name: str | None = None  # the prompt's variable; the key when empty
    index: int | None = None  # peek: which item (negative counts from the end)
    value: str | None = Field(default=None, max_length=100_000)  # string: the literal
    required: bool = True

    @property
    def var(self):
        return self.name or self.key


class MemoryOutput(Strict):
    kind: Literal["write", "push"] = "write"
    key: str = Field(min_length=1, max_length=64)


class Condition(Strict):
    """Go to the edge's target when `input <expression> expected`, else to `target_if_not`."""

    input: MemoryInput
    expression: Expression
    expected: str = Field(max_length=10_000)
    target_if_not: str

    @property
    def words(self):
        """The condition in words: "the number of items in dialogue is at least “6”"."""
        what = INPUT_WORDS[self.input.kind].format(key=self.input.key)
        return f"{what} {EXPRESSION_WORDS[self.expression]} “{self.expected}”"


class Edge(Strict):
    source: str
    target: str
    condition: Condition | None = None
    fallback: str | None = None  # where to go when the source task fails


class WorkflowTask(Strict):
    id: str = Field(min_length=1, max_length=64)
    prompt: str = Field(min_length=1, max_length=100_000)
    system: str = Field(default="", max_length=100_000)
    inputs: list[MemoryInput] = Field(default_factory=list, max_length=50)
    outputs: list[MemoryOutput] = Field(min_length=1, max_length=10)
    output_format: OutputFormat = OutputFormat.TEXT
    output_schema: dict[str, Any] | None = None

    def variables(self):
        """Names the prompt and system text read (TemplateError when they do not parse)."""
        return templating.variables(self.prompt) | templating.variables(self.system)

    def reads(self):
        """Memory keys this task reads: its inputs' keys and its prompt's other variables."""
        named = {i.var for i in self.inputs}
        keys = {i.key for i in self.inputs if i.kind != "string"}
        try:
            keys |= self.variables() - named
        except templating.TemplateError:
            pass
        return keys


class WorkflowSpec(Strict):
    tasks: list[WorkflowTask] = Field(min_length=1, max_length=50)
    edges: list[Edge] = Field(default_factory=list, max_length=200)
    return_value: list[str] = Field(min_length=1, max_length=20)
    max_steps: int = Field(default=DEFAULT_MAX_STEPS, ge=1, le=500)
    max_time: float | None = Field(default=None, gt=0, le=86_400)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)

    # -- shape ----------------------------------------------------------------------

    def task(self, task_id):
        return next(t for t in self.tasks if t.id == task_id)

    def edge_from(self, task_id):
        return next((e for e in self.edges if e.source == task_id), None)

    def implicit_next(self, task_id):
        ids = [t.id for t in self.tasks]
        i = ids.index(task_id)
        return ids[i + 1] if i + 1 < len(ids) else END

    def ways_out(self, task_id):
        """(target, conditional) pairs a task can go to, its fallback included."""
        edge = self.edge_from(task_id)
        if edge is None:
            return [(self.implicit_next(task_id), False)]
        out = []
        if edge.condition is None:
            out.append((edge.target, False))
        else:
            out += [(edge.target, True), (edge.condition.target_if_not, True)]
        if edge.fallback:
            out.append((edge.fallback, False))
        return out

    def written(self):
        """Memory keys some task writes or pushes."""
        return {o.key for t in self.tasks for o in t.outputs}

    def has_loop(self):
        """True when some task can be made again (a condition sends it back)."""
        return _cycles(self, lambda conditional: True)

    def dry_run(self):
        """(the prompts made in order, items in each key) when every prompt answers as asked.

        None when the way through depends on what a reply says (a condition that reads a
        reply rather than counts a list) or on what the task brings in. A list a prompt
        pushes to grows by one item a reply; a text written is one item."""
        sizes = {}  # key -> items it holds now (None: as many as a reply's list holds)
        path, current = [], self.tasks[0].id
        while current != END and len(path) < self.max_steps:
            task = self.task(current)
            path.append(current)
            for inp in task.inputs:
                if inp.kind == "pop" and sizes.get(inp.key):
                    sizes[inp.key] -= 1
            for out in task.outputs:
                if out.kind == "push":
                    sizes[out.key] = (sizes.get(out.key) or 0) + 1
                else:
                    text = task.output_format == OutputFormat.TEXT
                    sizes[out.key] = 1 if text else None
            edge = self.edge_from(current)
            if edge is None or edge.condition is None:
                current = edge.target if edge else self.implicit_next(current)
                continue
            cond = edge.condition
            key = cond.input.key
            if cond.input.kind != "size" or (key in sizes and sizes[key] is None):
                return None
            if key not in sizes and key not in self.written():
                return None  # counts a list the task brings in
            ok = holds(cond, {key: [None] * sizes.get(key, 0)})
            current = edge.target if ok else cond.target_if_not
        return path, sizes

    def loop_rounds(self):
        """How many rounds a loop makes when its condition counts a list it grows, else None.

        "Until Size(questions) >= 3", with the loop pushing to `questions`: 3 rounds; a
        round of two prompts that both push to `dialogue`, until Size(dialogue) >= 6: 3."""
        run = self.dry_run() if self.has_loop() else None
        if run is None:
            return None
        looping = [e.source for e in self.edges if e.condition and e.condition.input.kind == "size"]
        return max((run[0].count(t) for t in looping), default=0) or None

    def calls_bound(self):
        """(most calls one run of the workflow makes, whether fewer may be made)."""
        choices = any(e.condition or e.fallback for e in self.edges)
        run = self.dry_run()
        if run is not None:  # every prompt answering as asked takes this one way through
            return len(run[0]), any(e.fallback for e in self.edges) or bool(self.max_time)
        if not self.has_loop():
            return min(len(self.tasks), self.max_steps), choices
        return self.max_steps, True

    def items_returned(self):
        """(items the return value holds, whether that is known) for a list it builds."""
        key = self.return_value[0]
        run = self.dry_run()
        if run is not None and run[1].get(key) is not None:
            return run[1][key], True
        pushes = sum(1 for t in self.tasks for o in t.outputs if o.kind == "push" and o.key == key)
        if not self.has_loop():
            return pushes, True
        return self.max_steps, False

    def output_format(self):
        """The shape of the return value: a list, an object, or text."""
        if len(self.return_value) > 1:
            return OutputFormat.JSON_OBJECT
        key = self.return_value[0]
        writers = [t for t in self.tasks for o in t.outputs if o.key == key]
        if any(o.kind == "push" for t in self.tasks for o in t.outputs if o.key == key):
            return OutputFormat.JSON_LIST
        return writers[-1].output_format if writers else OutputFormat.TEXT

    def check(self, available):
        """What is wrong with this workflow: (field, code, sentence) triples (see `problems`)."""
        return problems(self, available)

    def shape(self):
        """In words, for the designer's step card: "3 prompts, loops up to 5 times"."""
        n = len(self.tasks)
        text = f"{n} prompt{'s' if n != 1 else ''}"
        if self.has_loop():
            text += f", loops up to {self.max_steps} prompts in all"
        return text


def one_task(step):
    """The workflow of a one-prompt step: its prompt writes its output key and returns it."""
    return WorkflowSpec(
        tasks=[
            WorkflowTask(
                id="prompt",
                prompt=step.prompt,
                system=step.system,
                outputs=[MemoryOutput(key=step.output_key)],
                output_format=step.output_format,
                output_schema=step.output_schema,
            )
        ],
        return_value=[step.output_key],
        max_steps=1,
    )


def _cycles(wf, counts):
    """True when the transitions that `counts(conditional)` keeps contain a cycle."""
    graph = {t.id: [x for x, c in wf.ways_out(t.id) if counts(c)] for t in wf.tasks}
    state = {}

    def visit(node):
        state[node] = 1
        for nxt in graph.get(node, []):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1 or (state.get(nxt) is None and visit(nxt)):
                return True
        state[node] = 2
        return False

    return any(state.get(n) is None and visit(n) for n in graph)


def problems(wf, available):
    """What is wrong with a workflow, as (field, code, sentence) triples.

    `available` is the set of keys the step's tasks carry in, or None when unknown."""
    out = []
    ids = [t.id for t in wf.tasks]
    known = set(ids) | {END}
    seen = set()
    for t in wf.tasks:
        if not TASK_ID_RE.match(t.id) or t.id == END:
            out.append(
                (
                    "workflow",
                    "task_id",
                    f"prompt id '{t.id}' must start with a letter or digit and hold only "
                    "letters, digits, - and _",
                )
            )
        if t.id in seen:
            out.append(("workflow", "duplicate_task", f"two prompts are called '{t.id}'"))
        seen.add(t.id)
        for key in [o.key for o in t.outputs] + [i.key for i in t.inputs if i.kind != "string"]:
            if not KEY_RE.match(key):
                out.append(
                    (
                        "workflow",
                        "memory_key",
                        f"memory key '{key}' must start with a letter and hold only "
                        "letters, digits and _",
                    )
                )
        for i in t.inputs:
            if i.kind == "peek" and i.index is None:
                out.append(
                    (
                        "workflow",
                        "peek_index",
                        f"prompt '{t.id}' peeks at '{i.key}' without an index",
                    )
                )
            if i.kind == "string" and i.value is None:
                out.append(
                    (
                        "workflow",
                        "string_value",
                        f"prompt '{t.id}': the text '{i.key}' has no value",
                    )
                )
        for source in (t.prompt, t.system):
            try:
                templating.check(source)
            except templating.TemplateError as exc:
                out.append(
                    ("workflow", "template", f"prompt '{t.id}' is not a valid template ({exc})")
                )
    sources = set()
    for e in wf.edges:
        where = f"the edge from '{e.source}'"
        if e.source not in ids:
            out.append(
                ("workflow", "edge_source", f"an edge starts at '{e.source}', which is no prompt")
            )
        if e.source in sources:
            out.append(
                (
                    "workflow",
                    "two_edges",
                    f"'{e.source}' has two edges; one edge with a condition chooses between two prompts",
                )
            )
        sources.add(e.source)
        targets = [("goes to", e.target)]
        if e.condition:
            targets.append(("goes otherwise to", e.condition.target_if_not))
        if e.fallback:
            targets.append(("falls back to", e.fallback))
        for verb, target in targets:
            if target not in known:
                out.append(
                    ("workflow", "edge_target", f"{where} {verb} '{target}', which is no prompt")
                )
        if e.condition and e.condition.input.kind == "pop":
            out.append(
                (
                    "workflow",
                    "condition_pop",
                    f"{where}: a condition cannot pop; read or size instead",
                )
            )
    if out:
        return out
    reachable, todo = set(), [wf.tasks[0].id]
    while todo:
        node = todo.pop()
        if node in reachable or node == END:
            continue
        reachable.add(node)
        todo += [x for x, _ in wf.ways_out(node)]
    for t in wf.tasks:
        if t.id not in reachable:
            out.append(("workflow", "unreachable", f"prompt '{t.id}' can never be reached"))
    if _cycles(wf, lambda conditional: not conditional):
        out.append(
            (
                "workflow",
                "unbounded_loop",
                "a loop has no way out: every loop must pass a condition",
            )
        )
    written = wf.written()
    strings = {i.var for t in wf.tasks for i in t.inputs if i.kind == "string"}
    if available is not None:
        have = set(available) | written
        for t in wf.tasks:
            for key in sorted(t.reads() - have - strings):
                made = ", ".join(sorted(have)) or "nothing"
                out.append(
                    (
                        "workflow",
                        "unknown_memory",
                        f"prompt '{t.id}' reads '{key}', which no prompt writes and no input "
                        f"gives (available: {made})",
                    )
                )
    for key in wf.return_value:
        if key not in written and (available is None or key not in available):
            out.append(
                (
                    "return_value",
                    "return_never_written",
                    f"the return value '{key}' is never written by a prompt",
                )
            )
    return out
