"""Accounts and the home page: the first account, log in, and where a visitor lands."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django_htmx.http import HttpResponseClientRedirect

from runner.models import Run, Workspace
from runner.models.workspaces import PIPELINES

from .access import current, visible_runs
from .models import Pipeline

CLI_USERNAME = "cli"  # the user runner.engine.adhoc.owner_for makes on an empty database


class SetupForm(UserCreationForm):
    """The first account: a username and a password typed twice (Django's validators apply).

    Bound to the command line's placeholder user (see `placeholder`), it turns that user
    into the account, so the runs it owns become the new account's."""

    def clean_username(self):
        username = self.cleaned_data.get("username")
        others = get_user_model().objects.filter(username__iexact=username)
        if self.instance.pk:
            others = others.exclude(pk=self.instance.pk)
        if username and others.exists():
            raise forms.ValidationError(
                self.instance.unique_error_message(get_user_model(), ["username"])
            )
        return username

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
    """True while nobody can log in: no user, or only users without a password (the
    `cli` user `runpipeline` makes on an empty database), so /setup/ stays open."""
    users = get_user_model().objects.exclude(password__startswith=UNUSABLE_PASSWORD_PREFIX)
    return not users.exists()


def placeholder():
    """The user the command line made on an empty database (`cli`, no password), if any:
    /setup/ adopts it, so the runs started from the terminal first show in the browser."""
    return (
        get_user_model()
        .objects.filter(username=CLI_USERNAME, password__startswith=UNUSABLE_PASSWORD_PREFIX)
        .first()
    )


def home(request):
    """Recent pipelines and runs; a visitor is sent to log in (or to create the first account)."""
    if not request.user.is_authenticated:
        return redirect("setup" if no_account_yet() else "login")
    member = current(request)
    pipelines = (
        Pipeline.objects.filter(workspace=member.workspace)[:8] if member.can(PIPELINES) else []
    )
    recent = visible_runs(request).only("code", "name", "status", "created")
    runs = [(run, reverse("designer:run-detail", args=[run.code])) for run in recent[:10]]
    return render(
        request,
        "designer/home.html",
        {
            "pipelines": pipelines,
            "runs": runs,
            "runs_url": reverse("designer:run-list"),
            "can_pipelines": member.can(PIPELINES),
        },
    )


@sensitive_post_parameters("password1", "password2")
@csrf_protect
@never_cache
def setup(request):
    """Create the first account (a superuser) when there is none; refuse once one exists."""
    if not no_account_yet():
        return redirect("login")
    cli = placeholder()
    if request.method == "POST":
        form = SetupForm(request.POST, instance=cli)
    else:
        form = SetupForm()
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            if not no_account_yet():  # someone else was faster
                return redirect("login")
            user = form.save()
            Workspace.personal(user)  # the first workspace, the account its admin
        auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}. Your account is ready.")
        return redirect("designer:pipeline-list")
    cli_runs = Run.objects.filter(owner=cli).count() if cli else 0
    return render(request, "designer/setup.html", {"form": form, "cli_runs": cli_runs})


def locked_out(request, original_response=None, credentials=None):
    """What django-axes shows after too many failed log-ins (per account or per address)."""
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "username": (credentials or {}).get("username") or request.POST.get("username", ""),
        "minutes": minutes,
    }
    return render(request, "registration/locked_out.html", context, status=429)


class LoginForm(AuthenticationForm):
    """Django's log-in form, in the product's words."""

    error_messages = {
        "invalid_login": (
            "That name and password do not match an account. Check both: capital letters count."
        ),
        "inactive": "This account is switched off: ask an admin of your workspace.",
    }


def login(request):
    """Django's log-in page, which sends you to create the first account when there is none."""
    if no_account_yet():
        return redirect("setup")
    view = auth_views.LoginView.as_view(
        redirect_authenticated_user=True, authentication_form=LoginForm
    )
    return view(request)
