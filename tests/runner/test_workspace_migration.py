"""The move to workspaces: each existing user gets a workspace of their own, as its admin,
holding the pipelines, runs and providers they had (two users' same-named providers too)."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("runner", "0011_provider_embedding_model"), ("designer", "0001_initial")]


def _state(target):
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    executor.loader.build_graph()
    return executor.loader.project_state(target).apps


def test_each_users_things_move_to_a_workspace_of_their_own(django_user_model):
    ana = django_user_model.objects.create_user("ana", password="x")
    ben = django_user_model.objects.create_user("ben", password="x")
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        apps = _state(BEFORE)
        Pipeline = apps.get_model("designer", "Pipeline")
        Run, Provider = apps.get_model("runner", "Run"), apps.get_model("runner", "Provider")
        made = {}
        for user in (ana, ben):
            made[user.username] = {
                "pipelines": [
                    Pipeline.objects.create(owner_id=user.pk, name=f"{user.username} {i}").pk
                    for i in range(2)
                ],
                "runs": [Run.objects.create(owner_id=user.pk, spec={}).pk for _ in range(3)],
                "provider": Provider.objects.create(
                    owner_id=user.pk, name="local", base_url="http://127.0.0.1:9/v1"
                ).pk,
            }

        apps = _state(leaves)
        Pipeline = apps.get_model("designer", "Pipeline")
        Run, Provider = apps.get_model("runner", "Run"), apps.get_model("runner", "Provider")
        Member = apps.get_model("runner", "Member")
        spaces = set()
        for user in (ana, ben):
            member = Member.objects.get(user_id=user.pk)
            assert member.role == "admin"
            assert member.workspace.name == f"{user.username}'s workspace"
            spaces.add(member.workspace_id)
            mine = made[user.username]
            assert {p.workspace_id for p in Pipeline.objects.filter(pk__in=mine["pipelines"])} == {
                member.workspace_id
            }
            assert {r.workspace_id for r in Run.objects.filter(pk__in=mine["runs"])} == {
                member.workspace_id
            }
            assert Provider.objects.get(pk=mine["provider"]).workspace_id == member.workspace_id
        assert len(spaces) == 2  # nobody sees the other's things
    finally:
        _state(leaves)
