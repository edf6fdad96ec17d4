"""Each existing user gets a workspace of their own (as its admin), holding their runs and
providers; the designer's migration moves their pipelines there too."""

from django.conf import settings
from django.db import migrations


def personal_workspaces(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    Workspace = apps.get_model("runner", "Workspace")
    Member = apps.get_model("runner", "Member")
    Run = apps.get_model("runner", "Run")
    Provider = apps.get_model("runner", "Provider")
    for user in User.objects.order_by("pk"):
        if Member.objects.filter(user=user).exists():
            continue
        workspace = Workspace.objects.create(name=f"{user.username}'s workspace")
        Member.objects.create(workspace=workspace, user=user, role="admin")
        Run.objects.filter(owner=user).update(workspace=workspace)
        Provider.objects.filter(owner=user).update(workspace=workspace)


class Migration(migrations.Migration):
    dependencies = [("runner", "0012_workspaces")]

    operations = [migrations.RunPython(personal_workspaces, migrations.RunPython.noop)]
