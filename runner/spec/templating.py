"""Prompt templates: sandboxed Jinja2, with bounded work.

`{{var}}` and `{{ var }}` both work, filters and loops are allowed, attribute
access to Python internals is refused by the sandbox, and undefined variables are
found before a run starts (`variables()`), not in the middle of one.

Filling in a prompt is bounded (`LIMITS`, set from the settings at start-up): its
time, the characters it makes, and the steps its loops take (every `range` and every
list of the context counts); `*` and `**` that would make something huge, and
filters asked for a huge width, are refused before they run. Past a limit the task
fails with a `TemplateLimitError` that names it.
"""

import contextvars
import time
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    pass


class TemplateLimitError(TemplateError):
    """The prompt took too long, grew too big, or looped too much to fill in."""


@dataclass
class Limits:
    seconds: float = 1.0
    chars: int = 1_000_000
    steps: int = 1_000_000


LIMITS = Limits()


def configure(seconds=None, chars=None, steps=None):
    """Set the limits (the runner app does, from RUNNER_TEMPLATE_* settings)."""
    if seconds:
        LIMITS.seconds = float(seconds)
    if chars:
        LIMITS.chars = int(chars)
    if steps:
        LIMITS.steps = int(steps)


class _Budget:
    __slots__ = ("start", "steps")

    def __init__(self):
        self.start = time.monotonic()
        self.steps = 0

    def check_time(self):
        if time.monotonic() - self.start > LIMITS.seconds:
            raise TemplateLimitError(
                f"filling in the prompt took over {LIMITS.seconds:g} s (the limit); "
                "make its loops smaller"
            )


_budget = contextvars.ContextVar("template_budget", default=None)


def _tick():
    budget = _budget.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > LIMITS.steps:
        raise TemplateLimitError(
            f"the prompt's loops went over {LIMITS.steps:,} steps (the limit); make them smaller"
        )
    if not budget.steps & 1023:
        budget.check_time()


def _too_big(what):
    return TemplateLimitError(
        f"{what} would be over {LIMITS.chars:,} characters (the limit of a prompt)"
    )


class _Range:
    """`range` in a prompt: its steps count against the budget."""

    def __init__(self, *args):
        self.r = range(*args)
        if len(self.r) > LIMITS.steps:
            raise TemplateLimitError(
                f"range({len(self.r):,}) is over {LIMITS.steps:,} steps (the limit)"
            )

    def __len__(self):
        return len(self.r)

    def __iter__(self):
        for i in self.r:
            _tick()
            yield i

    def __contains__(self, item):
        return item in self.r

    def __getitem__(self, i):
        return self.r[i]


class _List(list):
    """A list of the context: looping over it counts against the budget."""

    def __iter__(self):
        for item in super().__iter__():
            _tick()
            yield item


def _counted(value):
    if isinstance(value, list):
        return _List(_counted(v) for v in value)
    if isinstance(value, dict):
        return {k: _counted(v) for k, v in value.items()}
    return value


def _sized(value):
    return len(value) if isinstance(value, (str, list, tuple)) else None


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                size = _sized(seq)
                if size is not None and isinstance(n, int) and size * n > LIMITS.chars:
                    raise _too_big(f"{'text' if isinstance(seq, str) else 'list'} * {n:,}")
        if operator == "**" and isinstance(right, (int, float)) and isinstance(left, (int, float)):
            if abs(left) > 1 and right > 1000:
                raise TemplateLimitError(f"{left} ** {right} is too big a number for a prompt")
        return super().call_binop(context, operator, left, right)


def _bounded(fn, name):
    def wrapper(*args, **kwargs):
        for arg in (*args[1:], *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and arg > LIMITS.chars:
                raise _too_big(f"{name}({arg:,})")
        return fn(*args, **kwargs)

    return wrapper


_env = _Env(
    undefined=StrictUndefined,
    autoescape=False,  # prompts are plain text sent to a model, never HTML
    keep_trailing_newline=True,
)
_env.globals["range"] = _Range
_env.globals.pop("lipsum", None)
for _name in ("center", "indent", "wordwrap", "truncate", "format"):
    _env.filters[_name] = _bounded(_env.filters[_name], _name)


@lru_cache(maxsize=512)
def _parse(source):
    try:
        return _env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"line {exc.lineno}: {exc.message}") from None


@lru_cache(maxsize=512)
def _compile(source):
    _parse(source)
    return _env.from_string(source)


def check(source):
    """Raise TemplateError when the template does not parse."""
    _parse(source)


def variables(source):
    """The names a template reads from its context (loop variables excluded)."""
    return set(_variables(source))


@lru_cache(maxsize=512)
def _variables(source):
    return frozenset(meta.find_undeclared_variables(_parse(source)))


def render(source, context):
    """The filled-in prompt; TemplateError (TemplateLimitError past a limit) says why not."""
    token = _budget.set(_Budget())
    try:
        budget = _budget.get()
        parts, size = [], 0
        for chunk in _compile(source).generate(**_counted(context)):
            size += len(chunk)
            if size > LIMITS.chars:
                raise _too_big("the filled-in prompt")
            parts.append(chunk)
            budget.check_time()
        return "".join(parts)
    except UndefinedError as exc:
        raise TemplateError(f"missing value: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a prompt: {exc}") from None
    except TemplateError:
        raise
    except OverflowError as exc:
        raise TemplateLimitError(str(exc)) from None
    except Exception as exc:  # a filter given the wrong type, for example
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None
    finally:
        _budget.reset(token)
