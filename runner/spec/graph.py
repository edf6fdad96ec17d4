"""The pipeline drawn: its steps as nodes, and what goes from one to the next as edges.

    graph(spec, inputs) -> Graph(nodes=[Node, ...], edges=[Edge, ...], chain=..., fan_chain=...)

Every number comes from the estimator (`estimate.count`): the graph only puts its
counts in the words a drawing needs. Each step is a node of a kind (one prompt, a list
fanned out, a workflow of several prompts and its loops, a judge); the edge that
leaves a step says what one of its tasks passes on ("5 subtopics each", "all into 1
list") and how many that makes in all ("5 subtopics"). The first edge is the inputs,
the last one ends in the records.

    1 topic → 5 subtopics each → 1 question each → 1 answer each   (fan_chain)
    1 topic → 5 subtopics → 5 questions → 5 answers                (chain, the estimator's)

Pure: the designer draws it (`templates/designer/graph.html`).
"""

from dataclasses import dataclass, field

from . import estimate
from .schema import PipelineSpec

PROMPT, LIST, WORKFLOW, JUDGE = "prompt", "list", "workflow", "judge"


@dataclass
class Loop:
    source: str  # the prompt whose edge goes back
    target: str  # the prompt it goes back to
    words: str  # "back to “user” until the number of items in dialogue is at least “6”"


@dataclass
class Node:
    index: int  # the step's place, from 0
    name: str
    kind: str  # PROMPT, LIST, WORKFLOW or JUDGE
    kind_words: str  # "one prompt", "2 prompts, one memory", ...
    calls: int  # calls the step makes, for these inputs
    callback_words: str  # what becomes of its results, in words
    prompts: list[str] = field(default_factory=list)  # a workflow's prompts, in order
    loops: list[Loop] = field(default_factory=list)
    calls_each: str = ""  # a workflow: "6 prompts each", "up to 20 prompts each"

    @property
    def number(self):
        return self.index + 1

    @property
    def calls_words(self):
        return f"{self.calls:,} call{'' if self.calls == 1 else 's'}"


@dataclass
class Edge:
    index: int  # the step it leaves, from 0
    words: str  # what one task passes on: "5 subtopics each", "all into 1 list"
    total: int  # what the step passes on in all (the last step: records)
    total_words: str  # "5 subtopics"


@dataclass
class Graph:
    inputs: int
    input_words: str  # "1 topic"
    nodes: list[Node]
    edges: list[Edge]  # one per node: the edge that leaves it
    chain: str  # the estimator's chain: "1 topic → 5 subtopics → 5 questions → 5 answers"

    @property
    def fan_chain(self):
        """ "1 topic → 5 subtopics each → 1 question each → 1 answer each"."""
        return " → ".join([self.input_words] + [e.words for e in self.edges])

    @property
    def sentence(self):
        """The drawing in one sentence, for people who do not see it."""
        if not self.nodes:
            return "The pipeline has no steps yet."
        steps = "; ".join(_node_sentence(n) for n in self.nodes)
        return f"{self.fan_chain}. In all: {self.chain}. Steps: {steps}."


def graph(spec, inputs):
    """The graph of `spec` for a run of `inputs` (a list of input dicts)."""
    if not isinstance(spec, PipelineSpec):
        spec = PipelineSpec.model_validate(spec)
    inputs = list(inputs or [])
    counts = estimate.count(spec, inputs)
    label = estimate.input_label(spec, len(inputs))
    return Graph(
        inputs=len(inputs),
        input_words=f"{len(inputs):,} {label}",
        nodes=[
            _node(i, step, c) for i, (step, c) in enumerate(zip(spec.steps, counts, strict=True))
        ],
        edges=[
            _edge(i, step, c) for i, (step, c) in enumerate(zip(spec.steps, counts, strict=True))
        ],
        chain=estimate.chain(len(inputs), label, counts),
    )


def fan_words(step, counted):
    """What one task of the step passes on, in words and numbers (from its StepCount)."""
    if counted.per_task is None:  # many -> one
        lists = f"{counted.made:,} list{'' if counted.made == 1 else 's'}"
        group = step.callback.group_by
        return f"into {lists}, one per {group}" if group else f"all into {lists}"
    return f"{counted.of(round(counted.per_task))} each"


def _edge(i, step, counted):
    return Edge(i, fan_words(step, counted), counted.made, f"{counted.made:,} {counted.label}")


def _node(i, step, counted):
    node = Node(i, step.name, PROMPT, "one prompt", counted.calls, step.callback.words)
    flow = step.workflow
    if flow is not None:
        n = len(flow.tasks)
        node.kind = WORKFLOW
        node.kind_words = "1 prompt, a memory" if n == 1 else f"{n} prompts, one memory"
        node.prompts = [t.id for t in flow.tasks]
        node.loops = _loops(flow)
        node.calls_each = f"{'up to ' if counted.upto else ''}{counted.prompts} prompts each"
    elif step.judge is not None:
        n = len(step.judge.criteria)
        node.kind, node.kind_words = JUDGE, f"a judge of {n} criteri{'on' if n == 1 else 'a'}"
    elif step.callback.type in estimate.LISTS:
        node.kind, node.kind_words = LIST, "a list, fanned out"
    return node


def _loops(flow):
    """The edges of a workflow that go back to an earlier prompt (or the same one)."""
    order = {t.id: i for i, t in enumerate(flow.tasks)}
    out = []
    for e in flow.edges:
        if e.condition is None or e.source not in order:
            continue
        back = order.get(e.condition.target_if_not, -1)
        if 0 <= back <= order[e.source]:
            words = f"back to “{e.condition.target_if_not}” until {e.condition.words}"
            out.append(Loop(e.source, e.condition.target_if_not, words))
        elif 0 <= order.get(e.target, -1) <= order[e.source]:
            words = f"back to “{e.target}” while {e.condition.words}"
            out.append(Loop(e.source, e.target, words))
    return out


def _node_sentence(node):
    text = f"{node.number}. {node.name}, {node.kind_words}"
    if node.prompts:
        text += f" ({', '.join(node.prompts)}; {node.calls_each})"
    return text + "".join(f", {loop.words}" for loop in node.loops)
