"""LLM providers: one interface, three protocols, retries, shared HTTP.

- `openai`: any OpenAI-compatible chat completions endpoint (OpenAI, OpenRouter,
  vLLM, Ollama's /v1, LM Studio, the llama.cpp server, the built-in local model);
- `anthropic`: Anthropic's Messages API;
- `gemini`: Google's Gemini generateContent API.
"""

from django.conf import settings

from .anthropic import Anthropic
from .base import Completion, CompletionRequest, Provider, ProviderError
from .gemini import Gemini
from .http import close_clients, get_client
from .openai import OpenAICompatible
from .retry import complete_with_retries

PROVIDER_KINDS = {"openai": OpenAICompatible, "anthropic": Anthropic, "gemini": Gemini}


def build_provider(kind, base_url, api_key, default_model="", max_reply_bytes=None):
    """The provider for a configured endpoint; `kind` is "openai", "anthropic" or "gemini"."""
    try:
        cls = PROVIDER_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown provider kind {kind!r} (known: {', '.join(sorted(PROVIDER_KINDS))})"
        ) from None
    client = None
    if settings.LLM_HTTP_CLIENT == "httpx":
        client = get_client()  # httpx over the aiohttp transport, shared per event loop
    return cls(
        base_url,
        api_key or "",
        client=client,
        default_model=default_model or "",
        max_reply_bytes=max_reply_bytes or settings.RUNNER_MAX_REPLY_BYTES,
    )


__all__ = [
    "Anthropic",
    "Completion",
    "CompletionRequest",
    "Gemini",
    "OpenAICompatible",
    "PROVIDER_KINDS",
    "Provider",
    "ProviderError",
    "build_provider",
    "close_clients",
    "complete_with_retries",
    "get_client",
]
