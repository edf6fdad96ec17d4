"""The providers page: OpenAI-compatible endpoints, their keys and concurrency limits.

A key is stored encrypted and never sent back to the browser: pages show only "…"
and its last four characters, and an empty key field keeps the saved key.
Prices are typed one model a line (`gpt-4o-mini: 0.15 / 0.60`) and stored as
Provider.prices, {model: [input, output]} dollars per million tokens.
"""

import urllib.parse
from decimal import Decimal, InvalidOperation

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseNotAllowed
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.debug import sensitive_post_parameters

from runner.models import Provider
from runner.models.workspaces import MANAGE, PROVIDERS

from . import actions
from .access import need, provider_for
from .views import go

MAX_MODELS = 100
MAX_PRICE = 1_000_000  # dollars per million tokens; anything above is a typo


def _valid_base_url(value):
    parts = urllib.parse.urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


# Where a kind's official API lives, used when the base URL is left empty.
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}


def _per_minute(label, what):
    return forms.IntegerField(
        label=label,
        required=False,
        min_value=1,
        max_value=1_000_000_000,
        help_text=f"The most {what} a minute this key allows; leave empty for no limit.",
        error_messages={
            "invalid": "Enter a whole number, or leave it empty for no limit.",
            "min_value": "Enter at least 1, or leave it empty for no limit.",
            "max_value": "Enter a smaller number, or leave it empty for no limit.",
        },
    )


PRICE_EXAMPLE = "write it as “model: input / output”, for example “gpt-4o-mini: 0.15 / 0.60”"


def format_price(value):
    """A price as people write it: 0.15, 0.6, 2, 1.25 (no float noise, no exponent)."""
    try:
        number = Decimal(repr(float(value))).normalize()
    except (TypeError, ValueError, InvalidOperation):
        return str(value)
    return format(number, "f")


def price_rows(prices):
    """[(model, input, output)] as text, "*" last; entries that are not a pair are skipped."""
    if not isinstance(prices, dict):
        return []
    rows = []
    for model in sorted(prices, key=lambda m: (m == "*", m.lower())):
        pair = prices[model]
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            rows.append((model, format_price(pair[0]), format_price(pair[1])))
    return rows


def prices_text(prices):
    """The textarea's text for stored prices: one `model: input / output` a line."""
    return "\n".join(f"{m}: {i} / {o}" for m, i, o in price_rows(prices))


def _parse_price(text):
    text = text.strip().removeprefix("$").strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def parse_prices(text):
    """{model: [input, output]} from the textarea, or ValidationError naming each bad line.

    A model name may contain colons (Ollama's "llama3:8b"), so the prices are what
    follows the last one. Empty lines and lines starting with # are skipped.
    """
    prices, where, errors = {}, {}, []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        model, colon, rest = line.rpartition(":")
        model = model.strip()
        parts = rest.split("/")
        if not colon or not model or len(parts) != 2:
            errors.append(f"line {number}: {PRICE_EXAMPLE}.")
            continue
        pin, pout = (_parse_price(p) for p in parts)
        if pin is None or pout is None:
            errors.append(f"line {number}: the prices must be numbers; {PRICE_EXAMPLE}.")
        elif pin < 0 or pout < 0:
            errors.append(f"line {number}: a price cannot be negative; write 0 for a free model.")
        elif pin > MAX_PRICE or pout > MAX_PRICE:
            errors.append(
                f"line {number}: prices are dollars per million tokens; "
                f"enter at most {MAX_PRICE:,}."
            )
        elif len(model) > 200:
            errors.append(f"line {number}: a model name can be at most 200 characters long.")
        elif model in where:
            errors.append(
                f"line {number}: “{model}” is already priced on line {where[model]}; "
                "keep one of the two lines."
            )
        else:
            where[model] = number
            prices[model] = [float(pin), float(pout)]
    if not errors and len(prices) > MAX_MODELS:
        errors.append(f"Price at most {MAX_MODELS} models.")
    if errors:
        raise forms.ValidationError(errors)
    return prices


class ProviderForm(forms.Form):
    """An LLM endpoint (OpenAI-compatible by default). An empty key field keeps the saved key."""

    name = forms.CharField(
        max_length=100,
        help_text="Steps choose a provider by this name.",
        error_messages={"required": "Give the provider a name, for example “openai” or “local”."},
    )
    kind = forms.ChoiceField(
        label="Protocol",
        choices=Provider.KINDS,
        initial="openai",
        help_text="OpenAI-compatible covers OpenAI, OpenRouter, vLLM, Ollama, LM Studio and llama.cpp.",
        error_messages={"invalid_choice": "Choose one of the protocols in the list."},
    )
    base_url = forms.CharField(
        label="Base URL",
        max_length=500,
        required=False,
        help_text="The address before /chat/completions, for example https://api.openai.com/v1",
    )
    default_model = forms.CharField(
        max_length=200,
        required=False,
        help_text="Used by steps that do not name a model.",
    )
    models = forms.CharField(
        label="Model names",
        required=False,
        max_length=10_000,
        help_text="Separate names with commas.",
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        max_length=2000,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    concurrency = forms.IntegerField(
        label="Concurrency limit",
        min_value=1,
        max_value=10_000,
        initial=64,
        help_text="How many calls may be in flight at once, across every run and worker.",
        error_messages={
            "required": "Enter how many calls may run at once (1 to 10000).",
            "invalid": "Enter a whole number from 1 to 10000.",
            "min_value": "Enter a whole number from 1 to 10000.",
            "max_value": "Enter a whole number from 1 to 10000.",
        },
    )
    rpm = _per_minute("Requests per minute", "requests")
    tpm = _per_minute("Tokens per minute", "tokens")
    max_reply_mb = forms.IntegerField(
        label="Largest reply (MB)",
        required=False,
        min_value=1,
        max_value=1000,
        help_text="A longer reply fails its call with the reason. Empty: 4 MB.",
        error_messages={
            "invalid": "Enter a whole number of megabytes from 1 to 1000, or leave it empty.",
            "min_value": "Enter a whole number of megabytes from 1 to 1000, or leave it empty.",
            "max_value": "Enter a whole number of megabytes from 1 to 1000, or leave it empty.",
        },
    )
    embedding_model = forms.CharField(
        label="Embeddings model (optional)",
        max_length=200,
        required=False,
        help_text=(
            "A model of this endpoint's /embeddings, for example text-embedding-3-small: "
            "runs that use this provider then measure how varied their texts are. "
            "OpenAI-compatible endpoints only."
        ),
    )
    prices = forms.CharField(
        label="Prices (dollars per million tokens)",
        required=False,
        max_length=20_000,
        strip=False,  # keep leading empty lines so error line numbers match the box
        widget=forms.Textarea(
            attrs={"rows": 4, "placeholder": "gpt-4o-mini: 0.15 / 0.60\n*: 1 / 2"}
        ),
        help_text=(
            "One model a line: “model-name: input / output”, for example "
            "“gpt-4o-mini: 0.15 / 0.60”. A name also prices the models that start with it; "
            "“*: 1 / 2” prices every other model. Leave empty for no prices."
        ),
        error_messages={"max_length": "Keep the prices under 20,000 characters."},
    )

    def __init__(self, *args, workspace, instance=None, **kwargs):
        self.workspace = workspace
        self.instance = instance
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {
                "name": instance.name,
                "kind": instance.kind,
                "base_url": instance.base_url,
                "default_model": instance.default_model,
                "models": ", ".join(instance.models_list or []),
                "concurrency": instance.concurrency,
                "rpm": instance.rpm,
                "tpm": instance.tpm,
                "max_reply_mb": instance.max_reply_mb,
                "embedding_model": instance.embedding_model,
                "prices": prices_text(instance.prices),
            }
        super().__init__(*args, **kwargs)
        if instance is not None and instance.api_key_last4:
            self.fields[
                "api_key"
            ].help_text = f"Saved key: …{instance.api_key_last4}. Leave empty to keep it."
        else:
            self.fields["api_key"].help_text = "Stored encrypted; it is never shown again."

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if name.lower() == "default":
            raise forms.ValidationError(
                "“default” is reserved for the provider a run chooses; pick another name."
            )
        others = Provider.objects.filter(workspace=self.workspace, name=name)
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise forms.ValidationError(
                f"This workspace already has a provider named “{name}”; choose another name."
            )
        return name

    def clean_base_url(self):
        url = self.cleaned_data["base_url"].strip()
        if url and not _valid_base_url(url):
            raise forms.ValidationError(
                "Enter a web address starting with http:// or https://, "
                "for example http://localhost:11434/v1"
            )
        return url.rstrip("/")

    def clean(self):
        data = super().clean()
        kind = data.get("kind")
        if data.get("embedding_model", "").strip() and kind not in (None, "openai"):
            self.add_error(
                "embedding_model",
                "Only OpenAI-compatible endpoints have an /embeddings this can use: "
                "leave it empty for this protocol.",
            )
        if "base_url" in data and not data["base_url"]:
            if kind in DEFAULT_BASE_URLS:
                data["base_url"] = DEFAULT_BASE_URLS[kind]
            elif kind:
                self.add_error(
                    "base_url",
                    "Enter the endpoint's base URL, for example https://api.openai.com/v1",
                )
        return data

    def clean_models(self):
        names = []
        for part in self.cleaned_data["models"].split(","):
            part = part.strip()
            if part and part not in names:
                names.append(part)
        if len(names) > MAX_MODELS:
            raise forms.ValidationError(f"List at most {MAX_MODELS} model names.")
        if any(len(n) > 200 for n in names):
            raise forms.ValidationError("A model name can be at most 200 characters long.")
        return names

    def clean_prices(self):
        return parse_prices(self.cleaned_data["prices"])


@login_required
def provider_list(request):
    member = need(request, PROVIDERS)
    providers = list(Provider.objects.filter(workspace=member.workspace).order_by("name"))
    for provider in providers:
        provider.price_rows = price_rows(provider.prices)
    return render(
        request,
        "designer/providers.html",
        {"providers": providers, "can_manage": member.can(MANAGE)},
    )


def _data(request):
    return request.POST if request.method == "POST" else None


def _form_page(request, form, provider=None):
    ctx = {"form": form, "provider": provider}
    if request.htmx:
        return render(request, "designer/providers_form_partial.html", ctx)
    return render(request, "designer/providers_form.html", ctx)


@sensitive_post_parameters("api_key")
@login_required
def provider_create(request):
    member = need(request, MANAGE)
    form = ProviderForm(_data(request), workspace=member.workspace)
    if form.is_bound and form.is_valid():
        provider = actions.save_provider(request.user, form.cleaned_data, None, member.workspace)
        messages.success(request, f"Saved the provider “{provider.name}”.")
        return go(request, reverse("designer:provider-list"))
    return _form_page(request, form)


@sensitive_post_parameters("api_key")
@login_required
def provider_edit(request, code):
    provider = provider_for(request.user, code, MANAGE)
    form = ProviderForm(_data(request), workspace=provider.workspace, instance=provider)
    if form.is_bound and form.is_valid():
        actions.save_provider(request.user, form.cleaned_data, provider)
        messages.success(request, f"Saved the provider “{provider.name}”.")
        return go(request, reverse("designer:provider-list"))
    return _form_page(request, form, provider)


@login_required
def provider_test(request, code):
    """One tiny chat completion; an htmx partial with the latency or the error."""
    provider = provider_for(request.user, code, MANAGE)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    check = actions.check_provider(provider)
    if request.htmx:
        return render(
            request, "designer/providers_test_result.html", {"provider": provider, "check": check}
        )
    if check.ok:
        messages.success(
            request,
            f"“{provider.name}” answered in {check.latency_ms} ms with the model {check.model}.",
        )
    else:
        messages.error(
            request, f"“{provider.name}” did not answer: {check.error} {check.hint}".strip()
        )
    return go(request, reverse("designer:provider-list"))


@login_required
def provider_delete(request, code):
    provider = provider_for(request.user, code, MANAGE)
    if request.method == "POST":
        name = provider.name
        provider.delete()
        messages.success(request, f"Deleted the provider “{name}” and its key.")
        return go(request, reverse("designer:provider-list"))
    return render(request, "designer/providers_delete.html", {"provider": provider})


urlpatterns = [
    path("providers/", provider_list, name="provider-list"),
    path("providers/new/", provider_create, name="provider-create"),
    path("providers/<uuid:code>/", provider_edit, name="provider-edit"),
    path("providers/<uuid:code>/test/", provider_test, name="provider-test"),
    path("providers/<uuid:code>/delete/", provider_delete, name="provider-delete"),
]
