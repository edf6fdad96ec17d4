"""Prompt templates: sandboxed Jinja2.

`{{var}}` and `{{ var }}` both work, filters and loops are allowed, attribute
access to Python internals is refused by the sandbox, and undefined variables are
found before a run starts (`variables()`), not in the middle of one.
"""

from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    pass


_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,  # prompts are plain text sent to a model, never HTML
    keep_trailing_newline=True,
)


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
    try:
        return _compile(source).render(**context)
    except UndefinedError as exc:
        raise TemplateError(f"missing value: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a prompt: {exc}") from None
    except TemplateError:
        raise
    except Exception as exc:  # a filter given the wrong type, for example
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None
