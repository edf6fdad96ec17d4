"""Callbacks: how the outputs of a step become the inputs of the next.

Per-task callbacks (default, scatter, broadcast, split_lines, split, pick) turn one
finished task into its children at once. Waiting callbacks (aggregate, flatten,
python) run when every task of their step has finished and see the whole step.

Everything here is a pure function of finished outputs: no database, no network.
A child is a `Child`; the engine writes them (or, after the last step, records).
"""

import hashlib
import importlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from .parsing import ParseError, parse_output
from .quality import VerdictError, verdict


class CallbackError(ValueError):
    """The output cannot be turned into inputs for the next step; fails the task."""


@dataclass
class Child:
    key: str
    seq: str
    context: dict[str, Any]
    variant: int = 0
    parent_id: int | None = None


@dataclass
class Output:
    """One finished task as a callback sees it (shaped like the seed's `step.output[i]`)."""

    task_id: int
    key: str
    seq: str
    context: dict[str, Any]
    parsed: Any
    result: str = ""  # the raw reply
    variant: int = 0


@dataclass
class StepResult:
    """What a waiting callback receives: the step's spec and its outputs in input order."""

    name: str
    index: int
    output_key: str
    output: list[Output] = field(default_factory=list)


def child_seq(parent_seq, i):
    return f"{parent_seq}.{i:06d}"


def root_seq(i):
    return f"{i:08d}"


# -- per-task callbacks ----------------------------------------------------------


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s+")


def children_of(step, out: Output):
    """The children one finished task makes under a per-task callback."""
    cb = step.callback
    t = cb.type
    ctx = out.context
    if t == "default" and step.judge is not None:  # the verdict's fields join the record
        try:
            items = [{**ctx, **verdict(step.judge, out.parsed, ctx)}]
        except VerdictError as exc:
            raise CallbackError(str(exc)) from None
    elif t == "default" and step.returns_object:  # several return keys, each under its name
        items = [{**ctx, **(out.parsed if isinstance(out.parsed, dict) else {})}]
    elif t == "default":
        items = [{**ctx, step.output_key: out.parsed}]
    elif t == "broadcast":
        items = [{**ctx, step.output_key: out.parsed} for _ in range(cb.n or 1)]
        return [
            Child(f"t{out.task_id}.{i}", child_seq(out.seq, i), c, variant=i, parent_id=out.task_id)
            for i, c in enumerate(items)
        ]
    elif t == "scatter":
        if not isinstance(out.parsed, list):
            raise CallbackError("reply was not a JSON list, so it cannot be scattered")
        key = cb.item_key or step.output_key
        items = [{**ctx, key: item} for item in out.parsed]
    elif t in ("split_lines", "split"):
        text = out.parsed if isinstance(out.parsed, str) else json.dumps(out.parsed)
        parts = text.splitlines() if t == "split_lines" else text.split(cb.delimiter)
        key = cb.item_key or step.output_key
        cleaned = [_BULLET.sub("", p).strip() for p in parts]
        items = [{**ctx, key: p} for p in cleaned if p]
    elif t == "pick":
        if not isinstance(out.parsed, dict) or cb.field not in out.parsed:
            raise CallbackError(f"reply has no field '{cb.field}' to pick")
        items = [{**ctx, cb.into or step.output_key: out.parsed[cb.field]}]
    else:
        raise CallbackError(f"callback '{t}' waits for the whole step")
    return [
        Child(
            f"t{out.task_id}.{i}",
            child_seq(out.seq, i),
            c,
            variant=out.variant if t == "default" else 0,
            parent_id=out.task_id,
        )
        for i, c in enumerate(items)
    ]


# -- waiting callbacks -----------------------------------------------------------


def _common(contexts, drop):
    """The keys every context shares with the same value (lineage kept through N -> 1)."""
    if not contexts:
        return {}
    first = contexts[0]
    return {
        k: v
        for k, v in first.items()
        if k not in drop and all(k in c and c[k] == v for c in contexts[1:])
    }


def _group_key(value):
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def gather(step, index, outputs: list[Output]):
    """Children of a waiting callback, from every finished output of the step in input order."""
    cb = step.callback
    outputs = sorted(outputs, key=lambda o: o.seq)
    if cb.type == "aggregate":
        into = cb.into or step.output_key
        if cb.group_by:
            groups: dict[str, list[Output]] = {}
            for o in outputs:
                groups.setdefault(_group_key(o.context.get(cb.group_by)), []).append(o)
            parts = list(groups.items())
        else:
            parts = [("all", outputs)] if outputs else []
        children = []
        for gkey, members in parts:
            ctx = _common([m.context for m in members], {step.output_key, into})
            if cb.group_by:
                ctx[cb.group_by] = members[0].context.get(cb.group_by)
            ctx[into] = [m.parsed for m in members]
            children.append(Child(f"agg{index}:{gkey}", members[0].seq + "~", ctx))
        return children
    if cb.type == "flatten":
        into = cb.into or step.output_key
        if not outputs:
            return []
        flat = []
        for o in outputs:
            flat.extend(o.parsed if isinstance(o.parsed, list) else [o.parsed])
        ctx = _common([o.context for o in outputs], {step.output_key, into})
        ctx[into] = flat
        return [Child(f"agg{index}:all", outputs[0].seq + "~", ctx)]
    if cb.type == "python":
        fn = resolve_python_callback(cb.name)
        result = StepResult(step.name, index, step.output_key, outputs)
        made = fn(result)
        if made is None:
            return []
        if not isinstance(made, list):
            made = [made]
        base = _common([o.context for o in outputs], {step.output_key})
        children = []
        for i, item in enumerate(made):
            item = dict(item)
            if not all(isinstance(k, str) for k in item):
                raise CallbackError(f"Python callback '{cb.name}' returned a key that is not text")
            children.append(Child(f"agg{index}:{i}", f"~{i:08d}", {**base, **item}))
        return children
    raise CallbackError(f"callback '{cb.type}' does not wait for its step")


# -- named Python callbacks ------------------------------------------------------

_REGISTRY: dict[str, Any] = {}


def register(name):
    """Register a step-level Python callback: `fn(step: StepResult) -> dict | list[dict]`."""

    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


def resolve_python_callback(name):
    if name in _REGISTRY:
        return _REGISTRY[name]
    # "package.module:Class" names a builder Step subclass with a callback(self, step) method,
    # imported only from the packages settings allow.
    if name and ":" in name:
        module_name, _, attr = name.partition(":")
        if module_name.split(".")[0] in settings.RUNNER_CALLBACK_PACKAGES:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise CallbackError(f"Python callback '{name}' cannot be imported: {exc}") from None
            obj = module
            for part in attr.split("."):
                obj = getattr(obj, part, None)
            if obj is not None and callable(getattr(obj, "callback", None)):
                instance = obj() if isinstance(obj, type) else obj
                return instance.callback
    raise CallbackError(f"no Python callback is registered as '{name}'")


def parse_json(text):
    """The seed's helper: the JSON value in a reply (list or object), prose around it allowed."""
    try:
        return parse_output(text, "json_list")
    except ParseError:
        return parse_output(text, "json_object")


@register("flatten_lists")
def flatten_lists(step: StepResult):
    """The seed's example: every output (a list) flattened into one input under the step's key."""
    flat = []
    for o in step.output:
        value = o.parsed if o.parsed is not None else parse_json(o.result)
        flat.extend(value if isinstance(value, list) else [value])
    return {step.output_key: flat}
