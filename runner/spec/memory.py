"""How a workflow runs, as pure rules: what an input reads from memory, what a reply
writes, whether a condition holds, which prompt comes next, what the workflow returns.

The engine (`runner.engine.workflows`) runs a workflow by these rules, call by call;
`WorkflowSpec.dry_run` walks them to count calls before a run.
"""

import json


class MissingValue(ValueError):
    """A required input has nothing in memory."""


def _as_list(value):
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def take(memory, inp):
    """The value an input reads; `pop` removes it (the last item pushed)."""
    kind, key = inp.kind, inp.key
    if kind == "string":
        return inp.value or ""
    present = key in memory and memory[key] not in (None, "", [])
    if kind == "size":
        return len(_as_list(memory.get(key)))
    if not present:
        if inp.required:
            raise MissingValue(f"'{key}' is empty")
        return [] if kind == "get_all" else ""
    value = memory[key]
    if kind == "read":
        return value
    if kind == "get_all":
        return _as_list(value)
    items = _as_list(value)
    if kind == "peek":
        try:
            return items[inp.index or 0]
        except IndexError:
            if inp.required:
                raise MissingValue(f"'{key}' has no item {inp.index}") from None
            return ""
    item = items.pop()  # pop
    memory[key] = items
    return item


def context_for(task, memory):
    """The values a task's prompt is rendered with (inputs first, then memory as is)."""
    values = {i.var: take(memory, i) for i in task.inputs}
    for name in task.variables() - set(values):
        if name not in memory:
            raise MissingValue(f"'{name}' is not in memory")
        values[name] = memory[name]
    return values


def store(memory, task, value):
    for out in task.outputs:
        if out.kind == "write":
            memory[out.key] = value
        else:
            memory[out.key] = [*_as_list(memory.get(out.key)), value]


def _text(value):
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def holds(condition, memory):
    """Whether a condition is true now (reading memory without changing it)."""
    try:
        value = take(dict(memory), condition.input)
    except MissingValue:
        value = ""
    expected, op = condition.expected, condition.expression
    if op in ("Equal", "NotEqual"):
        return (_text(value).strip() == expected.strip()) == (op == "Equal")
    if op in ("Contains", "NotContains"):
        inside = (
            any(expected.lower() in _text(v).lower() for v in value)
            if isinstance(value, list)
            else expected.lower() in _text(value).lower()
        )
        return inside == (op == "Contains")
    a, b = _number(value), _number(expected)
    if a is None or b is None:
        return False
    return {
        "GreaterThan": a > b,
        "LessThan": a < b,
        "GreaterThanOrEqual": a >= b,
        "LessThanOrEqual": a <= b,
    }[op]


def next_task(wf, task_id, memory):
    edge = wf.edge_from(task_id)
    if edge is None:
        return wf.implicit_next(task_id)
    if edge.condition is None or holds(edge.condition, memory):
        return edge.target
    return edge.condition.target_if_not


def returned(wf, memory):
    """The workflow's return value: one key's value, or an object of several."""
    if len(wf.return_value) == 1:
        return memory.get(wf.return_value[0])
    return {k: memory.get(k) for k in wf.return_value}


def is_empty(value):
    if isinstance(value, dict):
        return all(is_empty(v) for v in value.values())
    return value is None or value == "" or value == []
