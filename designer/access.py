"""Access helpers: the object if the user owns it, else 404 (never 403: no hint it exists)."""

from django.shortcuts import get_object_or_404

from runner.models import Provider, Run

from .models import Pipeline


def pipeline_for(user, code):
    return get_object_or_404(Pipeline, code=code, owner=user)


def run_for(user, code):
    return get_object_or_404(Run, code=code, owner=user)


def provider_for(user, code):
    return get_object_or_404(Provider, code=code, owner=user)
