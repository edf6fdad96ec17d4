"""What is wrong with a pipeline spec, as data.

A `Problem` says where (the step index, or None for the whole pipeline), which form
field it is about, what kind of problem it is (a stable `code`, with the values in
`params`), and the plain English sentence with the step named (`message`, also
`str(problem)`): what the command line prints. Readers that place or reword a
problem use `field`, `code` and `params`, never the sentence.

`spec_problems` checks meaning (keys that exist, callbacks that fit the output),
`describe` turns pydantic's structural errors into problems, `input_problems`
checks a run's inputs. The models live in `schema.py`, which calls these; this
module reads specs but imports none of their classes, so the two do not import
each other.
"""

import dataclasses
import re
from typing import Any

from . import tables, templating

KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
SPEC_VERSION = 1  # the spec version this code reads and writes
KEY_RULE = "must start with a letter and hold only letters, digits and _"
MAX_INPUT_PROBLEMS = 20
# Output formats, as the values of schema.OutputFormat (a StrEnum, so they compare equal).
TEXT, JSON_LIST, JSON_OBJECT = "text", "json_list", "json_object"
CALLBACK_TYPES = "default, scatter, broadcast, aggregate, flatten, split_lines, split, pick, python"
# A pydantic error's location inside a step -> the form field it is about.
LOC_FIELDS = {
    ("name",): "name",
    ("prompt",): "prompt",
    ("system",): "system",
    ("model",): "model",
    ("model", "name"): "model",
    ("model", "provider"): "provider",
    ("params", "temperature"): "temperature",
    ("params", "max_tokens"): "max_tokens",
    ("output_format",): "output_format",
    ("output_schema",): "output_format",
    ("output_key",): "output_key",
    ("callback",): "callback",
    ("callback", "type"): "callback",
    ("judge",): "judge",
    ("keep",): "keep",
    ("dedup",): "dedup",
}


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """One thing wrong with a spec (or a run's inputs), placed and named.

    A problem reads as its sentence: `str(p)`, `p == "the sentence"` and
    `"words" in p` all use `message`, so code that held sentences keeps working.
    """

    step: int | None  # the step's index; None: the pipeline (or the inputs)
    field: str  # the form field it is about: "prompt", "output_key", "n", ... or ""
    code: str  # stable: "unknown_variable", "duplicate_name", ...
    message: str  # the sentence, step named: "step 2 ('Answer'): the prompt uses ..."
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    step_name: str = ""  # the step's name when known
    detail: str = ""  # the sentence without the step: message == f"{where}: {detail}"

    @classmethod
    def at(cls, index, name, field, code, detail, **params):
        """A problem of step `index` (named `name`, when it has one)."""
        where = f"step {index + 1}" + (f" ('{name}')" if name else "")
        return cls(index, field, code, f"{where}: {detail}", params, name or "", detail)

    @classmethod
    def general(cls, field, code, message, **params):
        """A problem of the whole pipeline (or of a run's inputs)."""
        return cls(None, field, code, message, params, "", message)

    def __str__(self):
        return self.message

    def __eq__(self, other):
        if isinstance(other, str):
            return self.message == other
        if isinstance(other, Problem):
            return dataclasses.astuple(self) == dataclasses.astuple(other)
        return NotImplemented

    def __hash__(self):
        return hash(self.message)

    def __contains__(self, text):
        return text in self.message


def as_problems(items):
    """Problems, from problems or bare sentences (which become pipeline-level problems)."""
    return [p if isinstance(p, Problem) else Problem.general("", "other", str(p)) for p in items]


class SpecError(ValueError):
    """A spec that cannot be used; `problems` lists every Problem, `str()` the sentences."""

    def __init__(self, problems):
        self.problems = as_problems(problems)
        super().__init__("; ".join(p.message for p in self.problems))


# -- meaning ----------------------------------------------------------------------------


def spec_problems(spec):
    """Every problem with what a structurally valid spec means, in step order."""
    if not spec.steps:
        return [Problem.general("", "no_steps", "the pipeline has no steps: add at least one step")]
    out = []
    if spec.spec_version != SPEC_VERSION:
        out.append(
            Problem.general(
                "spec_version",
                "spec_version",
                f"spec_version {spec.spec_version} is not supported (this version reads {SPEC_VERSION})",
                version=spec.spec_version,
                supported=SPEC_VERSION,
            )
        )
    for key in spec.input_keys:
        if not KEY_RE.match(key):
            out.append(
                Problem.general(
                    "input_keys", "bad_input_key", f"input key '{key}' {KEY_RULE}", key=key
                )
            )
    where = nul_in(spec.model_dump(mode="json"))
    if where is not None:
        said = where
        if where.startswith("steps["):
            i = int(where[6 : where.index("]")])
            said = f"step {i + 1} ('{spec.steps[i].name}'): {where[where.index(']') + 2 :]}"
        out.append(
            Problem.general(
                where.split(".")[0].split("[")[0],
                "nul_character",
                f"{said} holds a NUL character (\\u0000), which cannot be stored; remove it",
                where=where,
            )
        )
    seen_names, seen_keys = {}, {}
    contexts = spec.contexts()
    first_keys = set(spec.first_step_keys())
    for i, step in enumerate(spec.steps):
        ctx = contexts[i]
        out.extend(_naming_problems(i, step, seen_names, seen_keys))
        out.extend(callback_problems(step, i))
        if ctx is not None:
            cb = step.callback
            if step.output_key in first_keys:
                out.append(
                    Problem.at(
                        i,
                        step.name,
                        "output_key",
                        "output_key_is_input",
                        f"output key '{step.output_key}' is already one of the pipeline's inputs; choose another",
                        key=step.output_key,
                    )
                )
            if cb.type == "aggregate" and cb.group_by and cb.group_by not in ctx:
                out.append(
                    Problem.at(
                        i,
                        step.name,
                        "group_by",
                        "unknown_group_by",
                        f"aggregate groups by '{cb.group_by}', which this step's tasks do not carry (available: {_made(ctx)})",
                        key=cb.group_by,
                        available=sorted(ctx),
                    )
                )
        if step.output_schema is not None and step.output_format != JSON_OBJECT:
            out.append(
                Problem.at(
                    i,
                    step.name,
                    "output_format",
                    "schema_needs_object",
                    "a schema only applies to the 'JSON object' output format",
                )
            )
        out.extend(_quality_problems(i, step, ctx))
        if step.workflow is not None:
            out.extend(_workflow_problems(i, step, ctx))
            continue
        if step.judge is not None:
            continue  # its prompt is made from the rubric, whose fields are checked above
        if not step.prompt:
            out.append(Problem.at(i, step.name, "prompt", "missing_prompt", "prompt is missing"))
        first_without_keys = i == 0 and not spec.input_keys
        out.extend(_template_problems(i, step, None if first_without_keys else ctx))
    return out


def _workflow_problems(i, step, ctx):
    """A workflow step's: its prompts, edges, loops, memory and return value."""
    out = []
    if step.prompt or step.system:
        out.append(
            Problem.at(
                i,
                step.name,
                "prompt",
                "prompt_and_workflow",
                "a step has a prompt or a workflow, not both; clear the prompt",
            )
        )
    for field, code, detail in step.workflow.check(ctx):
        out.append(Problem.at(i, step.name, field, code, detail))
    return out


def _quality_problems(i, step, ctx):
    """A judge's fields and callback; the fields that filters and duplicates look at."""
    out = []
    judge = step.judge
    if judge is not None:
        if step.workflow is not None:
            out.append(
                Problem.at(
                    i,
                    step.name,
                    "judge",
                    "judge_and_workflow",
                    "a step is a judge or a workflow, not both",
                )
            )
        if step.callback.type != "default":
            out.append(
                Problem.at(
                    i,
                    step.name,
                    "callback",
                    "judge_needs_default",
                    "a judge scores each record it is given: its callback must be "
                    "'one to one (default)'",
                )
            )
        missing = [k for k in judge.reads() if ctx is not None and k not in ctx]
        for key in missing:
            out.append(
                Problem.at(
                    i,
                    step.name,
                    "judge",
                    "unknown_judge_field",
                    f"the judge reads '{key}', which this step's tasks do not carry "
                    f"(available: {_made(ctx)})",
                    key=key,
                    available=sorted(ctx),
                )
            )
    after = None if ctx is None else ctx | set(step.result_keys())
    if step.callback.type in ("aggregate", "flatten") and after is not None:
        cb = step.callback
        after = {*([cb.group_by] if cb.group_by else []), *step.result_keys()}
    if step.callback.type == "python":
        after = None
    looked_at = [("keep", f.field) for f in step.keep]
    if step.dedup is not None:
        looked_at.append(("dedup", step.dedup.field))
    for field, key in looked_at:
        if after is not None and key not in after:
            what = (
                "keeps only what meets a condition on" if field == "keep" else "drops duplicates of"
            )
            out.append(
                Problem.at(
                    i,
                    step.name,
                    field,
                    f"unknown_{field}_field",
                    f"the step {what} '{key}', which its results do not have "
                    f"(they have: {_made(after)})",
                    key=key,
                    available=sorted(after),
                )
            )
    return out


def _made(ctx):
    return ", ".join(sorted(ctx)) or "nothing"


def _naming_problems(i, step, seen_names, seen_keys):
    out = []
    if step.name in seen_names:
        other = seen_names[step.name]
        out.append(
            Problem.at(
                i,
                step.name,
                "name",
                "duplicate_name",
                f"the name is already used by step {other + 1}; give each step its own name",
                other=other,
            )
        )
    seen_names.setdefault(step.name, i)
    key = step.output_key
    if not KEY_RE.match(key):
        out.append(
            Problem.at(
                i,
                step.name,
                "output_key",
                "bad_output_key",
                f"output key '{key}' {KEY_RULE}",
                key=key,
            )
        )
    elif key in seen_keys:
        other = seen_keys[key]
        out.append(
            Problem.at(
                i,
                step.name,
                "output_key",
                "duplicate_output_key",
                f"output key '{key}' is already made by step {other + 1}; choose another",
                key=key,
                other=other,
            )
        )
    seen_keys.setdefault(key, i)
    return out


def _template_problems(i, step, ctx):
    """The prompt and system prompt: valid templates that use only keys in `ctx` (None: any)."""
    out = []
    for part in ("prompt", "system"):
        try:
            used = templating.variables(getattr(step, part))
        except templating.TemplateError as exc:
            out.append(
                Problem.at(
                    i,
                    step.name,
                    part,
                    "bad_template",
                    f"the {part} is not a valid template ({exc})",
                    part=part,
                    error=str(exc),
                )
            )
            continue
        if ctx is None:
            continue
        for name in sorted(used - ctx):
            if i == 0:
                code, why = (
                    "not_an_input",
                    f"which is not one of the pipeline's inputs ({_made(ctx)})",
                )
            else:
                code = "unknown_variable"
                why = f"which is not made by any step before this one (available: {_made(ctx)})"
            out.append(
                Problem.at(
                    i,
                    step.name,
                    part,
                    code,
                    f"the {part} uses {{{{{name}}}}}, {why}",
                    part=part,
                    variable=name,
                    available=sorted(ctx),
                )
            )
    return out


# (code, field, sentence) of each callback problem, for `callback_problems`.
_NEEDS = {
    "scatter_needs_list": (
        "callback",
        "scatter needs the step's output format to be a JSON list (each item becomes a task)",
    ),
    "flatten_needs_list": (
        "callback",
        "flatten needs the step's output format to be a JSON list (lists are joined into one)",
    ),
    "broadcast_needs_n": ("n", "broadcast needs n, the number of copies of each output"),
    "split_needs_delimiter": ("delimiter", "split needs a delimiter"),
    "split_needs_text": (
        "callback",
        "{callback} works on text output; choose the text output format",
    ),
    "pick_needs_field": ("field", "pick needs the field to take from the JSON object"),
    "pick_needs_object": ("callback", "pick needs the step's output format to be a JSON object"),
    "python_needs_name": ("callback", "a Python callback needs the name it was registered under"),
}


def callback_problems(step, index=0):
    """What is wrong with how step `index`'s outputs become the next step's inputs."""
    cb = step.callback
    t = cb.type
    fmt = step.output_format
    out = []
    for param in ("item_key", "into", "group_by"):
        value = getattr(cb, param)
        if value is not None and not KEY_RE.match(value):
            out.append(
                Problem.at(
                    index,
                    step.name,
                    param,
                    "bad_callback_key",
                    f"callback key '{value}' {KEY_RULE}",
                    key=value,
                    param=param,
                )
            )
    codes = [
        ("scatter_needs_list", t == "scatter" and fmt != JSON_LIST),
        ("flatten_needs_list", t == "flatten" and fmt != JSON_LIST),
        ("broadcast_needs_n", t == "broadcast" and cb.n is None),
        ("split_needs_delimiter", t == "split" and not cb.delimiter),
        ("split_needs_text", t in ("split", "split_lines") and fmt != TEXT),
        ("pick_needs_field", t == "pick" and not cb.field),
        ("pick_needs_object", t == "pick" and fmt != JSON_OBJECT),
        ("python_needs_name", t == "python" and not cb.name),
    ]
    for code, wrong in codes:
        if wrong:
            field, sentence = _NEEDS[code]
            out.append(
                Problem.at(index, step.name, field, code, sentence.format(callback=t), callback=t)
            )
    return out


# -- structure --------------------------------------------------------------------------


def not_json(exc):
    return Problem.general(
        "", "not_json", f"the file is not valid JSON: {tables.json_mistake(exc)}", error=str(exc)
    )


def too_deep(exc):
    return Problem.general("", "too_deep", f"the file cannot be read: {exc}", error=str(exc))


def not_an_object():
    return Problem.general(
        "", "not_an_object", "a pipeline spec is a JSON object with a list of steps"
    )


def describe(exc, data):
    """Pydantic's errors (a ValidationError of `data`) as problems that name the step."""
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        index = name = None
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            index = loc[1]
            steps = data.get("steps") or []
            if index < len(steps) and isinstance(steps[index], dict):
                name = steps[index].get("name")
            name = str(name) if name else ""
            loc = loc[2:]
        where = ".".join(str(p) for p in loc) or "value"
        code, msg = _pydantic_words(err, where)
        params = {"loc": where, "error": err["msg"]}
        if index is None:
            out.append(Problem.general(where, code, f"pipeline: {where} {msg}", **params))
        else:
            out.append(Problem.at(index, name, field_of(loc), code, f"{where} {msg}", **params))
    return out


def field_of(loc):
    """The form field a pydantic error at `loc` (inside one step) is about."""
    loc = tuple(loc)
    if loc[:1] == ("callback",) and len(loc) > 1 and loc[1] != "type":
        return str(loc[1])  # callback.n, callback.item_key, ...
    return LOC_FIELDS.get(loc[:2]) or LOC_FIELDS.get(loc[:1]) or ".".join(map(str, loc))


def _pydantic_words(err, where):
    """(code, the end of the sentence) for one pydantic error at `where`."""
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown_field", "is not a known field"
    if kind == "literal_error" and where.endswith("callback.type"):
        return (
            "unknown_callback",
            f"unknown callback {err.get('input')!r} (known: {CALLBACK_TYPES})",
        )
    if kind == "enum" and where == "output_format":
        return (
            "unknown_output_format",
            f"unknown output format {err.get('input')!r} (known: text, json_list, json_object)",
        )
    if kind == "missing":
        return "missing", "is missing"
    if kind == "value_error":  # our own validators' sentences: drop pydantic's prefix
        return "invalid", str(err.get("ctx", {}).get("error") or err["msg"])
    return "invalid", err["msg"]


# -- a run's inputs ---------------------------------------------------------------------


def nul_in(value, path=""):
    """Where in `value` (dicts, lists, text) a text holds a NUL character, as a path like
    `steps[0].prompt` (None: nowhere). No database text keeps one (PostgreSQL refuses it)."""
    if isinstance(value, str):
        return (path or "the text") if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, str) and "\x00" not in v and "\x00" not in k:
                continue  # the common case, without a call
            name = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and "\x00" in k:
                return name
            found = nul_in(v, name)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = nul_in(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def input_problems(spec, inputs):
    """Problems with a list of input dicts for a run of `spec`."""
    if not isinstance(inputs, list) or not inputs:
        return [Problem.general("inputs", "no_inputs", "give at least one input")]
    needed = set(spec.first_step_keys())
    out = []
    for n, row in enumerate(inputs, 1):
        if not isinstance(row, dict):
            out.append(
                Problem.general(
                    "inputs",
                    "input_not_object",
                    f"input {n} is not a set of key/value pairs",
                    row=n,
                )
            )
            continue
        missing = sorted(needed - set(row))
        if missing:
            out.append(
                Problem.general(
                    "inputs",
                    "input_missing",
                    f"input {n} has no value for {', '.join(missing)}",
                    row=n,
                    keys=missing,
                )
            )
        where = nul_in(row)
        if where is not None:
            out.append(
                Problem.general(
                    "inputs",
                    "nul_character",
                    f"input {n}: {where} holds a NUL character (\\u0000), which cannot be "
                    "stored; remove it",
                    row=n,
                    key=where,
                )
            )
        bad = [k for k in row if not isinstance(k, str) or not KEY_RE.match(k)]
        if bad:
            out.append(
                Problem.general(
                    "inputs",
                    "bad_input_row_key",
                    f"input {n}: key {bad[0]!r} {KEY_RULE}",
                    row=n,
                    key=bad[0],
                )
            )
        if len(out) >= MAX_INPUT_PROBLEMS:
            more = Problem.general("inputs", "more_problems", "(more problems not shown)")
            return out[:MAX_INPUT_PROBLEMS] + [more]
    return out
