"""Runs started from code (the `runpipeline` command, `runner.dria`): whose they are, and
the provider a bare base URL stands for."""

from django.contrib.auth import get_user_model

from runner.models import Provider, Workspace


class NoSuchUser(ValueError):
    pass


def owner_for(username=None):
    """The user named, else the only user there is, else a `cli` user that cannot log in."""
    User = get_user_model()
    if username:
        user = User.objects.filter(username=username).first()
        if user is None:
            raise NoSuchUser(f"no user named '{username}'")
        return user
    users = list(User.objects.all()[:2])
    if len(users) == 1:
        return users[0]
    user, created = User.objects.get_or_create(username="cli")
    if created:
        user.set_unusable_password()
        user.save()
    return user


def provider_for_url(owner, base_url, api_key="", model="", concurrency=None):
    """The provider for an OpenAI-compatible base URL in the owner's first workspace,
    made or updated."""
    name = f"cli {base_url}"[:100]
    workspace = Workspace.personal(owner)
    provider = Provider.objects.filter(workspace=workspace, name=name).first() or Provider(
        owner=owner, workspace=workspace, name=name
    )
    provider.base_url = base_url
    if api_key or not provider.pk:
        provider.set_api_key(api_key or "")
    if model:
        provider.default_model = model
    if concurrency:
        provider.concurrency = concurrency
    provider.save()
    return provider
