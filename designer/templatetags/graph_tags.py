"""The pipeline drawn as an SVG: `{% pipeline_graph spec inputs %}` (`state=` on the run page).

Where each box, arrow and label goes; what they say comes from `runner.spec.graph`
(the estimator's counts) and, on the run page, from the run's state (the numbers the
websocket then keeps up to date, `static/js/run.js`). The boxes stand in one row, left
to right: the inputs, each step, the records; the drawing scrolls inside its own box
when the row is wider than the page.
"""

from dataclasses import dataclass, field

from django import template

from runner.spec import graph as pipeline_graph_data

register = template.Library()

NODE_W = 150  # a step's box
END_W = 120  # the inputs' box and the records'
GAP = 130  # between two boxes: the arrow and its labels
FIRST_GAP = 48  # from the inputs to the first step: an arrow with no label
PAD = 8  # around the drawing
LINE = 18  # one line of text in a box
TITLE_Y = 24  # the first line's baseline, from the top of a box
PROMPT_H = 22  # a workflow's prompt inside its step's box
PROMPT_STEP = 30
PROMPT_W = NODE_W - 48  # leaves room on its right for the loops
NAME_CHARS = 16  # of a name in a box; the whole name is the box's tooltip
LABEL_CHARS = 21  # of a label on an arrow
INNER_CHARS = 14  # of a workflow prompt's id


@dataclass
class Box:
    x: int
    title: str
    lines: list  # (text, what the run page's script writes there, or "")
    kind: str = "end"
    w: int = END_W
    full_title: str = ""
    number: int | None = None
    prompts: list = field(default_factory=list)  # (x, y, text, full text)
    loops: list = field(default_factory=list)  # (path, words)
    after: list = field(default_factory=list)  # (text, y): a line under a workflow's prompts

    @property
    def right(self):
        return self.x + self.w

    @property
    def rows(self):
        """(text, what the script writes there, baseline) of each line under the title."""
        return [(t, b, PAD + TITLE_Y + LINE * (i + 1)) for i, (t, b) in enumerate(self.lines)]

    @property
    def height(self):
        if self.prompts:
            return self.after[0][1] + 8 - PAD
        return TITLE_Y + LINE * len(self.lines) + 12


def _cut(text, n):
    return text if len(text) <= n else text[: n - 1] + "…"


def _step_box(x, node, state_step):
    lines = [(node.kind_words, ""), (node.calls_words, "")]
    if state_step is not None:
        lines.append((state_step["words"], "words"))
    return Box(
        x,
        _cut(f"{node.number}. {node.name}", NAME_CHARS),
        lines,
        kind=node.kind,
        w=NODE_W,
        full_title=f"Step {node.number}: {node.name}",
        number=node.index,
    )


def _place_prompts(box, node):
    """A workflow's prompts, one under the other inside its box, and its loops beside them."""
    y0 = PAD + TITLE_Y + LINE * len(box.lines) + 14
    x = box.x + 12
    where = {}
    for i, prompt in enumerate(node.prompts):
        y = y0 + i * PROMPT_STEP
        where[prompt] = y + PROMPT_H / 2
        box.prompts.append((x, y, _cut(prompt, INNER_CHARS), prompt))
    edge_x = x + PROMPT_W  # the prompts' right side, where a loop leaves and comes back
    for i, loop in enumerate(node.loops):
        a, b = where[loop.source], where[loop.target]
        bend = edge_x + 18 + 6 * i
        if a == b:  # a prompt that repeats itself
            a, b = a + 5, a - 5
        path = f"M{edge_x} {a:g} C{bend} {a:g} {bend} {b:g} {edge_x + 2} {b:g}"
        box.loops.append((path, loop.words))
    box.after = [(node.calls_each, y0 + len(node.prompts) * PROMPT_STEP + 10)]


def layout(drawn, state=None):
    """Boxes, arrows and the size of the drawing."""
    steps = (state or {}).get("steps") or [None] * len(drawn.nodes)
    boxes = [Box(PAD, "Inputs", [(drawn.input_words, "")])]
    x = PAD + END_W + FIRST_GAP
    for i, node in enumerate(drawn.nodes):
        box = _step_box(x, node, steps[i] if i < len(steps) else None)
        if node.prompts:
            _place_prompts(box, node)
        boxes.append(box)
        x += NODE_W + GAP
    boxes.append(Box(x, "Records", [("your dataset", "")]))
    height = max(b.height for b in boxes)
    mid = PAD + height // 2
    arrows = []
    for i, (a, b) in enumerate(zip(boxes, boxes[1:], strict=False)):
        arrow = {"x1": a.right, "x2": b.x - 2, "y": mid, "cx": (a.right + b.x) // 2}
        if i:  # the arrow out of step i - 1
            edge = drawn.edges[i - 1]
            arrow.update(words=_cut(edge.words, LABEL_CHARS), full=edge.words, index=i - 1)
            arrow["total"] = edge.total_words
            if state is not None and i - 1 < len(steps) and steps[i - 1] is not None:
                arrow["made"] = steps[i - 1]["made_words"]
        arrows.append(arrow)
    return {
        "boxes": boxes,
        "arrows": arrows,
        "width": boxes[-1].right + PAD,
        "height": height + 2 * PAD,
        "top": PAD,
        "box_h": height,
        "prompt_w": PROMPT_W,
        "prompt_h": PROMPT_H,
    }


@register.inclusion_tag("designer/graph.html")
def pipeline_graph(spec, inputs=None, state=None, key="graph"):
    """The drawing of `spec` for `inputs` (its example inputs, else one); `state`: a run's.

    `key` names the drawing (its element ids) when a page holds more than one."""
    if inputs is None:
        inputs = spec.inputs or [{}]
    drawn = pipeline_graph_data.graph(spec, inputs)
    live = state is not None
    return {"graph": drawn, "live": live, "state": state, "key": key, **layout(drawn, state)}
