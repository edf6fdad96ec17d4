"""Each pipeline goes to the workspace its owner was given by runner's 0013."""

from django.db import migrations


def move(apps, schema_editor):
    Pipeline = apps.get_model("designer", "Pipeline")
    Member = apps.get_model("runner", "Member")
    Workspace = apps.get_model("runner", "Workspace")
    for owner_id in Pipeline.objects.values_list("owner", flat=True).distinct():
        member = Member.objects.filter(user_id=owner_id).order_by("pk").first()
        if member is None:  # a user made between the two migrations
            User = Pipeline._meta.get_field("owner").related_model
            workspace = Workspace.objects.create(
                name=f"{User.objects.get(pk=owner_id).username}'s workspace"
            )
            Member.objects.create(workspace=workspace, user_id=owner_id, role="admin")
        else:
            workspace = member.workspace
        Pipeline.objects.filter(owner_id=owner_id).update(workspace=workspace)


class Migration(migrations.Migration):
    dependencies = [("designer", "0002_pipeline_workspace")]

    operations = [migrations.RunPython(move, migrations.RunPython.noop)]
