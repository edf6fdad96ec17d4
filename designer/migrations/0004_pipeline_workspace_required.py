import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("designer", "0003_pipeline_workspace_fill")]

    operations = [
        migrations.AlterField(
            model_name="pipeline",
            name="workspace",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runner.workspace"),
        ),
    ]
