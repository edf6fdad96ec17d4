"""The one interface every LLM provider implements.

A provider turns a `CompletionRequest` into a `Completion`, or raises
`ProviderError` saying whether trying again may help (`transient`).
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CompletionRequest:
    model: str
    messages: list[dict[str, str]]
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    json_mode: bool = False  # the step wants JSON back
    json_schema: dict[str, Any] | None = None
    timeout: float = 120.0


@dataclass
class Completion:
    text: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    requested: str = ""  # the model asked for (set by the engine; `model` is what answered)


class ProviderError(Exception):
    """A failed call. `transient` errors (timeouts, 429, 5xx) are worth retrying."""

    def __init__(self, message, *, transient, status=None, retry_after=None):
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


class Provider:
    """Base class: one instance per endpoint and key, shared by a worker's calls."""

    kind = "base"

    async def complete(self, request: CompletionRequest) -> Completion:  # pragma: no cover
        raise NotImplementedError
