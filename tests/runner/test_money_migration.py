"""Migration 0004: float micro-dollars rounded, Decimal dollar budgets to integer micro-dollars."""

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("runner", "0003_indexes_for_run_page")]
AFTER = [("runner", "0004_money_in_integer_micro_dollars")]


def _state(target):
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    executor.loader.build_graph()
    return executor.loader.project_state(target).apps


def test_existing_money_is_converted(django_user_model):
    owner = django_user_model.objects.create_user("m", password="x")
    try:
        apps = _state(BEFORE)
        Run, Task = apps.get_model("runner", "Run"), apps.get_model("runner", "Task")
        run = Run.objects.create(owner_id=owner.pk, spec={}, spent=1234.6, budget=Decimal("2.5050"))
        unbudgeted = Run.objects.create(owner_id=owner.pk, spec={}, spent=0.4)
        Task.objects.create(run_id=run.pk, step=0, key="a", seq="0", cost=99.5)
        Task.objects.create(run_id=run.pk, step=0, key="b", seq="1", cost=0.2)

        apps = _state(AFTER)
        Run, Task = apps.get_model("runner", "Run"), apps.get_model("runner", "Task")
        run = Run.objects.get(pk=run.pk)
        assert (run.spent, run.budget_micro) == (1235, 2_505_000)
        assert Run.objects.get(pk=unbudgeted.pk).budget_micro is None
        assert sorted(Task.objects.values_list("cost", flat=True)) == [0, 100]
    finally:
        _state(MigrationExecutor(connection).loader.graph.leaf_nodes())
