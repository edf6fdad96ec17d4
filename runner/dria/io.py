"""The seed's inputs, outputs and conditions (`Read.new(...)` and friends), its `Operator`
and `Expression`, and what a `create_workflow` argument holds while a workflow is built.

Each builds a piece of our `WorkflowSpec` (`runner.spec.workflow`).
"""

from enum import StrEnum

from pydantic import ValidationError

from runner.spec import workflow as wf
from runner.spec.workflow import Condition, MemoryInput, MemoryOutput


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
