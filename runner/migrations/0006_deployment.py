import uuid

from django.db import migrations, models


def create_deployment(apps, schema_editor):
    """A new database gets its own code (the prefix of its keys in a shared Redis)."""
    apps.get_model("runner", "Deployment").objects.create(code=uuid.uuid4())


class Migration(migrations.Migration):
    dependencies = [
        ("runner", "0005_workflow_trace"),
    ]

    operations = [
        migrations.CreateModel(
            name="Deployment",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("code", models.UUIDField(default=uuid.uuid4, editable=False, unique=True)),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.RunPython(create_deployment, migrations.RunPython.noop),
    ]
