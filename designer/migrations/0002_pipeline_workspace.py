import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("designer", "0001_initial"), ("runner", "0013_workspaces_fill")]

    operations = [
        migrations.AddField(
            model_name="pipeline",
            name="workspace",
            field=models.ForeignKey(null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runner.workspace"),
        ),
    ]
