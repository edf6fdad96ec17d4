"""Money in one unit: integer micro-dollars for task costs, run spend and run budgets.

Existing float micro-dollars (`Task.cost`, `Run.spent`) are rounded to whole
micro-dollars; Decimal dollar budgets (`Run.budget`) become `Run.budget_micro`
(dollars x 1e6). Reversible.
"""

from decimal import ROUND_HALF_UP, Decimal

from django.db import migrations, models
from django.db.models import F
from django.db.models.functions import Round

MICRO = Decimal(1_000_000)


def round_floats(apps, schema_editor):
    apps.get_model("runner", "Task").objects.exclude(cost=0).update(cost=Round(F("cost")))
    apps.get_model("runner", "Run").objects.exclude(spent=0).update(spent=Round(F("spent")))


def budgets_to_micro(apps, schema_editor):
    Run = apps.get_model("runner", "Run")
    for run in Run.objects.filter(budget__isnull=False).only("pk", "budget"):
        micro = (Decimal(run.budget) * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        Run.objects.filter(pk=run.pk).update(budget_micro=int(micro))


def budgets_to_dollars(apps, schema_editor):
    Run = apps.get_model("runner", "Run")
    for run in Run.objects.filter(budget_micro__isnull=False).only("pk", "budget_micro"):
        Run.objects.filter(pk=run.pk).update(budget=Decimal(run.budget_micro) / MICRO)


class Migration(migrations.Migration):
    dependencies = [
        ("runner", "0003_indexes_for_run_page"),
    ]

    operations = [
        migrations.RunPython(round_floats, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="task",
            name="cost",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="run",
            name="spent",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="budget_micro",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(budgets_to_micro, budgets_to_dollars),
        migrations.RemoveField(
            model_name="run",
            name="budget",
        ),
    ]
