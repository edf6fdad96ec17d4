import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runner", "0013_workspaces_fill")]

    operations = [
        migrations.AlterField(
            model_name="run",
            name="workspace",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runner.workspace"),
        ),
        migrations.AlterField(
            model_name="provider",
            name="workspace",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runner.workspace"),
        ),
        migrations.RemoveConstraint(model_name="provider", name="provider_owner_name"),
        migrations.AddConstraint(
            model_name="provider",
            constraint=models.UniqueConstraint(fields=("workspace", "name"), name="provider_workspace_name"),
        ),
    ]
