"""LLM providers: one interface, the OpenAI-compatible client, retries, shared HTTP."""

from django.conf import settings

from .base import Completion, CompletionRequest, Provider, ProviderError
from .http import close_clients, get_client
from .openai import OpenAICompatible
from .retry import complete_with_retries

PROVIDER_KINDS = {"openai": OpenAICompatible}


def build_provider(kind, base_url, api_key, default_model=""):
    """The provider for a configured endpoint; `kind` is e.g. "openai"."""
    try:
        cls = PROVIDER_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown provider kind {kind!r} (known: {', '.join(sorted(PROVIDER_KINDS))})"
        ) from None
    client = None
    if settings.LLM_HTTP_CLIENT == "httpx":
        client = get_client()  # httpx over the aiohttp transport, shared per event loop
    return cls(base_url, api_key or "", client=client, default_model=default_model or "")


__all__ = [
    "Completion",
    "CompletionRequest",
    "OpenAICompatible",
    "Provider",
    "ProviderError",
    "build_provider",
    "close_clients",
    "complete_with_retries",
    "get_client",
]
