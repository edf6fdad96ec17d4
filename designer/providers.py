"""The providers page: OpenAI-compatible endpoints, their keys and concurrency limits.

A key is stored encrypted and never sent back to the browser: pages show only "…"
and its last four characters, and an empty key field keeps the saved key.
Prices are typed one model a line (`gpt-4o-mini: 0.15 / 0.60`) and stored as
Provider.prices, {model: [input, output]} dollars per million tokens.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponseNotAllowed
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.debug import sensitive_post_parameters

from runner.models import Provider

from . import actions
from .access import provider_for
from .forms import ProviderForm, price_rows
from .views import go


@login_required
def provider_list(request):
    providers = list(Provider.objects.filter(owner=request.user).order_by("name"))
    for provider in providers:
        provider.price_rows = price_rows(provider.prices)
    return render(request, "designer/providers.html", {"providers": providers})


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
    form = ProviderForm(_data(request), owner=request.user)
    if form.is_bound and form.is_valid():
        provider = actions.save_provider(request.user, form.cleaned_data)
        messages.success(request, f"Saved the provider “{provider.name}”.")
        return go(request, reverse("designer:provider-list"))
    return _form_page(request, form)


@sensitive_post_parameters("api_key")
@login_required
def provider_edit(request, code):
    provider = provider_for(request.user, code)
    form = ProviderForm(_data(request), owner=request.user, instance=provider)
    if form.is_bound and form.is_valid():
        actions.save_provider(request.user, form.cleaned_data, provider)
        messages.success(request, f"Saved the provider “{provider.name}”.")
        return go(request, reverse("designer:provider-list"))
    return _form_page(request, form, provider)


@login_required
def provider_test(request, code):
    """One tiny chat completion; an htmx partial with the latency or the error."""
    provider = provider_for(request.user, code)
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
    provider = provider_for(request.user, code)
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
