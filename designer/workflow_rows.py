"""A workflow's prompts as the rows of the step form, and the rows back into a WorkflowSpec.

The prompts are repeated rows posted in page order (the page lets people reorder
them by dragging, so `request.POST.getlist` gives the new order):

- `wf-id`, `wf-prompt`, `wf-system`, `wf-format`: the prompt (a `WorkflowTask`);
- `wf-key`, `wf-kind`: where its reply goes (write replaces, push adds to a list);
- `wf-repeat_key`, `wf-repeat_n`: "repeat this prompt until <key> has <n> items"
  (an edge to the next prompt under Size(key) >= n, else back to this one);
- `wf-goto`, `wf-goto_text`: "go to <prompt> if the reply contains <text>"
  (an edge under Contains on the key this prompt writes, else to the next one);
- `wf-extra`: what the controls cannot express, kept as it was (JSON): the prompt's
  inputs, its other outputs, its schema, any other edge and its fallback;

and once: `wf-return` (the keys returned, in order), `wf-max_steps`, `wf-max_time`,
`wf-max_tokens`. No checkboxes: every row posts every field, so the columns line up.
"""

import json
import re

from django.conf import settings
from pydantic import ValidationError

from runner.spec import tables, templating
from runner.spec import workflow as wfspec
from runner.spec.workflow import END, Edge, WorkflowSpec

from .step_forms import FORMAT_CHOICES

KIND_CHOICES = [("write", "replace it"), ("push", "add to a list")]
ROW_FIELDS = (
    "id",
    "prompt",
    "system",
    "format",
    "key",
    "kind",
    "repeat_key",
    "repeat_n",
    "goto",
    "goto_text",
    "extra",
)


def posted_list(data, name):
    """Every value posted under `name`, in page order (a QueryDict, or a dict of lists)."""
    if hasattr(data, "getlist"):
        return data.getlist(name)
    value = data.get(name, [])
    return list(value) if isinstance(value, list | tuple) else [value]


# -- from a spec to the form's rows -----------------------------------------------------


def _plain(model):
    return model.model_dump(mode="json", exclude_defaults=True)


def _loop_of(wf, task, edge):
    """(key, n) when the edge is "repeat this prompt until key has n items"."""
    c = edge.condition
    if c is None or c.expression != "GreaterThanOrEqual" or c.target_if_not != task.id:
        return None
    if c.input != wfspec.MemoryInput(kind="size", key=c.input.key):
        return None
    if edge.target != wf.implicit_next(task.id) or not re.fullmatch(r"[1-9][0-9]{0,5}", c.expected):
        return None
    return c.input.key, c.expected


def _branch_of(wf, task, edge):
    """(target, text) when the edge is "go to target if the reply contains text"."""
    c = edge.condition
    if c is None or c.expression != "Contains" or c.target_if_not != wf.implicit_next(task.id):
        return None
    if c.input != wfspec.MemoryInput(kind="read", key=task.outputs[0].key):
        return None
    if edge.target not in [t.id for t in wf.tasks] + [END] or not c.expected:
        return None
    return edge.target, c.expected


def rows_of(wf):
    """The form's rows (dicts of posted values) for a workflow."""
    rows = []
    for t in wf.tasks:
        first, *more = t.outputs
        extra = {}
        if t.inputs:
            extra["inputs"] = [_plain(i) for i in t.inputs]
        if more:
            extra["outputs"] = [_plain(o) for o in more]
        if t.output_schema is not None:
            extra["schema"] = t.output_schema
        row = {
            "id": t.id,
            "prompt": t.prompt,
            "system": t.system,
            "format": str(t.output_format),
            "key": first.key,
            "kind": first.kind,
            "repeat_key": "",
            "repeat_n": "",
            "goto": "",
            "goto_text": "",
        }
        edge = wf.edge_from(t.id)
        if edge is not None:
            if edge.fallback:
                extra["fallback"] = edge.fallback
            loop, branch = _loop_of(wf, t, edge), _branch_of(wf, t, edge)
            if loop:
                row["repeat_key"], row["repeat_n"] = loop
            elif branch:
                row["goto"], row["goto_text"] = branch
            else:
                extra["edge"] = _plain(edge.model_copy(update={"fallback": None}))
                del extra["edge"]["source"]
        row["extra"] = json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else ""
        rows.append(row)
    return rows


def initial_data(step, prefix="wf-"):
    """The posted values of a step's workflow section (a one-prompt step: its prompt)."""
    wf = step.workflow
    if wf is None:
        extra = {"schema": step.output_schema} if step.output_schema is not None else {}
        rows = [
            {
                "id": "prompt",
                "prompt": step.prompt,
                "system": step.system,
                "format": str(step.output_format),
                "key": step.output_key,
                "kind": "write",
                "extra": json.dumps(extra) if extra else "",
            }
        ]
        limits = {"return": [step.output_key], "max_steps": [str(wfspec.DEFAULT_MAX_STEPS)]}
    else:
        rows = rows_of(wf)
        limits = {
            "return": list(wf.return_value),
            "max_steps": [str(wf.max_steps)],
            "max_time": ["" if wf.max_time is None else f"{wf.max_time:g}"],
            "max_tokens": ["" if wf.max_tokens is None else str(wf.max_tokens)],
        }
    data = {f"{prefix}{f}": [r.get(f, "") for r in rows] for f in ROW_FIELDS}
    data.update({f"{prefix}{k}": v for k, v in limits.items()})
    return data


# -- from the posted rows to a WorkflowSpec ------------------------------------------------


def _words_of_edge(edge, fallback):
    out = []
    if edge:
        c = edge.get("condition")
        if c is None:
            out.append(f"then goes to “{edge['target']}”")
        else:
            what = wfspec.INPUT_WORDS.get(c["input"].get("kind", "read"), "{key}").format(
                key=c["input"]["key"]
            )
            verb = wfspec.EXPRESSION_WORDS.get(c["expression"], c["expression"])
            when = f"{what} {verb} “{c['expected']}”"
            out.append(
                f"goes to “{edge['target']}” when {when}, otherwise to “{c['target_if_not']}”"
            )
    if fallback:
        out.append(f"if it fails, goes to “{fallback}”")
    return out


class WorkflowFields:
    """The workflow section of a posted step form: its rows, and the WorkflowSpec they make."""

    format_choices = FORMAT_CHOICES
    kind_choices = KIND_CHOICES

    def __init__(self, data, prefix="wf-"):
        self.prefix = prefix
        columns = {f: posted_list(data, prefix + f) for f in ROW_FIELDS}
        size = max((len(v) for v in columns.values()), default=0)
        self.rows = [{f: (columns[f][i] if i < len(columns[f]) else "") for f in ROW_FIELDS}
                     for i in range(size)]  # fmt: skip
        self.returns = [k.strip() for k in posted_list(data, prefix + "return") if k.strip()]
        self.limits = {k: (posted_list(data, prefix + k) or [""])[0].strip() for k in ("max_steps", "max_time", "max_tokens")}  # fmt: skip
        self.errors = []
        for i, row in enumerate(self.rows):
            row["n"] = i + 1
            try:
                row["extra_data"] = tables.load_json(row["extra"], settings.JSON_MAX_DEPTH) if row["extra"].strip() else {}  # fmt: skip
                if not isinstance(row["extra_data"], dict):
                    raise ValueError("not an object")
            except ValueError:
                row["extra_data"] = {}
                self.errors.append(
                    f"Prompt {i + 1}: the page sent something unreadable; reload it."
                )

    # -- for the template ----------------------------------------------------------

    def written(self):
        keys = []
        for row in self.rows:
            more = [o.get("key") for o in row["extra_data"].get("outputs", [])]
            for key in [row["key"].strip(), *more]:
                if key and key not in keys:
                    keys.append(key)
        return keys

    def return_choices(self):
        """(key, selected) in the order they post: the returned keys first, in their order."""
        return [(k, True) for k in self.returns] + [
            (k, False) for k in self.written() if k not in self.returns
        ]

    def view_rows(self):
        """The rows with what each prompt reads and writes, and what the controls cannot show."""
        ids = [r["id"].strip() for r in self.rows]
        out = []
        for i, row in enumerate(self.rows):
            extra = row["extra_data"]
            try:
                task = self._task(i, row)
                reads = sorted(task.reads())
            except (ValueError, ValidationError):
                reads = []
            writes = [(row["key"].strip(), row["kind"])] + [
                (o.get("key"), o.get("kind", "write")) for o in extra.get("outputs", [])
            ]
            out.append(
                {
                    **row,
                    "reads": reads,
                    "writes": [
                        (k, "add to a list" if kind == "push" else "replace")
                        for k, kind in writes
                        if k
                    ],
                    "other": _words_of_edge(extra.get("edge"), extra.get("fallback")),
                    "targets": [t for t in ids if t] + [END],
                }
            )
        return out

    # -- building the spec ---------------------------------------------------------

    def _auto_inputs(self, i, row, inputs):
        """A prompt that reads a key it (or a later prompt) writes reads it as maybe empty.

        "Not one of these: {{questions}}" on the first round, before anything was pushed."""
        try:
            names = templating.variables(row["prompt"]) | templating.variables(row["system"])
        except templating.TemplateError:
            return []
        named = {inp.var for inp in inputs}
        later = self.rows[i:]
        pushed = {r["key"].strip() for r in self.rows if r["kind"] == "push"}
        out = []
        for name in sorted(names - named):
            if any(r["key"].strip() == name for r in later):
                kind = "get_all" if name in pushed else "read"
                out.append(wfspec.MemoryInput(kind=kind, key=name, required=False))
        return out

    def _task(self, i, row):
        extra = row["extra_data"]
        inputs = [wfspec.MemoryInput.model_validate(x) for x in extra.get("inputs", [])]
        inputs += self._auto_inputs(i, row, inputs)
        outputs = [wfspec.MemoryOutput(kind=row["kind"] or "write", key=row["key"].strip())]
        outputs += [wfspec.MemoryOutput.model_validate(x) for x in extra.get("outputs", [])]
        return wfspec.WorkflowTask(
            id=row["id"].strip(),
            prompt=row["prompt"],
            system=row["system"],
            inputs=inputs,
            outputs=outputs,
            output_format=row["format"] or "text",
            output_schema=extra.get("schema"),
        )

    def _edge(self, i, row, next_id):
        extra, where = row["extra_data"], f"Prompt {i + 1}"
        source, fallback = row["id"].strip(), extra.get("fallback") or None
        repeat_key, goto = row["repeat_key"].strip(), row["goto"].strip()
        if repeat_key and goto:
            self.errors.append(
                f"{where}: choose one way on: repeat it, or go to another prompt; not both."
            )
            return None
        if repeat_key:
            n = row["repeat_n"].strip()
            if not re.fullmatch(r"[0-9]{1,6}", n) or int(n) < 1:
                self.errors.append(f"{where}: say how many items to repeat until (1 or more).")
                return None
            condition = {
                "input": {"kind": "size", "key": repeat_key},
                "expression": "GreaterThanOrEqual",
                "expected": str(int(n)),
                "target_if_not": source,
            }
            edge = {"target": next_id, "condition": condition}
        elif goto:
            text = row["goto_text"]
            if not text.strip():
                self.errors.append(f"{where}: say what the reply must contain to go to “{goto}”.")
                return None
            condition = {
                "input": {"kind": "read", "key": row["key"].strip()},
                "expression": "Contains",
                "expected": text,
                "target_if_not": next_id,
            }
            edge = {"target": goto, "condition": condition}
        elif extra.get("edge"):
            edge = dict(extra["edge"])
        elif fallback:
            edge = {"target": next_id}
        else:
            return None
        return Edge.model_validate({**edge, "source": source, "fallback": fallback})

    def build(self):
        """The WorkflowSpec the rows make, or None (and `errors` in plain words)."""
        if not self.rows:
            self.errors.append("Add at least one prompt.")
        for i, row in enumerate(self.rows):
            where = f"Prompt {i + 1}"
            if not row["id"].strip():
                self.errors.append(f"{where}: give it a short name (for example ask).")
            if not row["prompt"].strip():
                self.errors.append(f"{where}: write what the model should do.")
            if not row["key"].strip():
                self.errors.append(f"{where}: say where its reply goes (for example answer).")
        if not self.returns:
            self.errors.append("Choose what the step returns: at least one saved reply.")
        limits = {}
        bounds = {"max_steps": (int, 1, 500), "max_time": (float, 1, 86_400), "max_tokens": (int, 1, 1_000_000)}  # fmt: skip
        for name, (kind, low, high) in bounds.items():
            value = self.limits[name]
            if not value:
                continue
            try:
                limits[name] = kind(value)
            except ValueError:
                limits[name] = None
            if limits[name] is None or not low <= limits[name] <= high:
                self.errors.append(
                    "“At most … prompts in all” is a number from 1 to 500."
                    if name == "max_steps"
                    else f"{name} must be a number from {low} to {high}."
                )
        if self.errors:
            return None
        ids = [r["id"].strip() for r in self.rows]
        try:
            tasks = [self._task(i, row) for i, row in enumerate(self.rows)]
            edges = [
                self._edge(i, row, ids[i + 1] if i + 1 < len(ids) else END)
                for i, row in enumerate(self.rows)
            ]
            if self.errors:
                return None
            return WorkflowSpec(
                tasks=tasks,
                edges=[e for e in edges if e is not None],
                return_value=self.returns,
                **{k: v for k, v in limits.items() if v is not None},
            )
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"])
                self.errors.append(f"The workflow's {where}: {err['msg']}.")
            return None
