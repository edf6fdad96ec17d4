"""Accounts and the home page: the first account, log in, and where a visitor lands."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django_htmx.http import HttpResponseClientRedirect

from runner.models import Run

from .models import Pipeline


class SetupForm(UserCreationForm):
    """The first account: a username and a password typed twice (Django's validators apply)."""

    def save(self, commit=True):
        user = super().save(commit=False)
        user.is_staff = True
        user.is_superuser = True
        if commit:
            user.save()
        return user


def go(request, url):
    """Redirect; an htmx request gets HX-Redirect so the whole page changes."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def no_account_yet():
    return not get_user_model().objects.exists()


def home(request):
    """Recent pipelines and runs; a visitor is sent to log in (or to create the first account)."""
    if not request.user.is_authenticated:
        return redirect("setup" if no_account_yet() else "login")
    pipelines = Pipeline.objects.filter(owner=request.user)[:8]
    recent = Run.objects.filter(owner=request.user).only("code", "name", "status", "created")
    runs = [(run, reverse("designer:run-detail", args=[run.code])) for run in recent[:10]]
    return render(
        request,
        "designer/home.html",
        {
            "pipelines": pipelines,
            "runs": runs,
            "runs_url": reverse("designer:run-list"),
        },
    )


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@never_cache
def setup(request):
    """Create the first account (a superuser) when there is none; refuse once one exists."""
    if not no_account_yet():
        return redirect("login")
    form = SetupForm(request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            if not no_account_yet():  # someone else was faster
                return redirect("login")
            user = form.save()
        auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}. Your account is ready.")
        return redirect("designer:pipeline-list")
    return render(request, "designer/setup.html", {"form": form})


def login(request):
    """Django's log-in page, which sends you to create the first account when there is none."""
    if no_account_yet():
        return redirect("setup")
    return auth_views.LoginView.as_view(redirect_authenticated_user=True)(request)
