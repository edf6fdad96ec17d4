"""Who may do what in a workspace: every page and action, for every role and for someone
outside the workspace (a matrix: role x page x method).

Allowed: the page answers (200, or a redirect after an action). A role that may not:
403 with the reason. Someone outside the workspace: 404 for its objects, as if they did
not exist. The expectations are written out here, not read from the product's table.
"""

import pytest
from django.urls import reverse

from designer import actions
from runner.models import Member, Provider, Record, ReviewPlan, Run, Workspace
from runner.spec import library

from .test_runs import make_run

pytestmark = pytest.mark.django_db

ROLES = ("admin", "editor", "reviewer", "viewer")
EVERYONE = set(ROLES)
READERS = {"admin", "editor", "viewer"}  # pipelines, export
MAKERS = {"admin", "editor"}  # edit pipelines, launch and control runs, see providers
REVIEWERS = {"admin", "editor", "reviewer"}
ADMINS = {"admin"}


@pytest.fixture
def team(django_user_model):
    """A workspace with one member of each role, a pipeline, a run with records and a
    provider; and an outsider with a workspace of their own."""
    founder = django_user_model.objects.create_user("founder", password="pw-founder-1")
    workspace = Workspace.objects.create(name="Data team")
    Member.objects.create(workspace=workspace, user=founder, role="admin")
    people = {"admin": founder}
    for role in ROLES[1:]:
        people[role] = django_user_model.objects.create_user(role, password=f"pw-{role}-1")
        Member.objects.create(workspace=workspace, user=people[role], role=role)
    outsider = django_user_model.objects.create_user("outsider", password="pw-outsider-1")
    pipeline = actions.pipeline_from_template(
        founder, library.get("qa-from-topics"), workspace=workspace
    )
    run = make_run(founder, topics=2, status=Run.COMPLETED, workspace=workspace)
    provider = Provider(
        owner=founder,
        workspace=workspace,
        name="shared",
        base_url="http://127.0.0.1:9/v1",
        default_model="small",
    )
    provider.set_api_key("sk-team-secret-WXYZ")
    provider.save()
    record = Record.objects.filter(run=run).first()
    ReviewPlan.objects.create(run=run, reviewers=[people["reviewer"].pk], overlap=1)
    return {
        "people": people,
        "outsider": outsider,
        "workspace": workspace,
        "pipeline": pipeline,
        "run": run,
        "provider": provider,
        "record": record,
        "member": Member.objects.get(workspace=workspace, user=people["viewer"]),
    }


def url(name, *args):
    return reverse(f"designer:{name}", args=args)


# (label, method, address maker, POST data, who may, is it an object of the workspace)
PAGES = [
    ("home", "get", lambda t: "/", {}, EVERYONE, False),
    ("pipelines", "get", lambda t: url("pipeline-list"), {}, READERS, False),
    ("pipeline", "get", lambda t: url("pipeline-detail", t["pipeline"].code), {}, READERS, True),
    ("designer", "get", lambda t: url("pipeline-edit", t["pipeline"].code), {}, READERS, True),
    ("versions", "get", lambda t: url("pipeline-versions", t["pipeline"].code), {}, READERS, True),
    ("spec file", "get", lambda t: url("pipeline-export", t["pipeline"].code), {}, READERS, True),
    ("launch page", "get", lambda t: url("pipeline-launch", t["pipeline"].code), {}, MAKERS, True),
    ("runs", "get", lambda t: url("run-list"), {}, EVERYONE, False),
    ("run", "get", lambda t: url("run-detail", t["run"].code), {}, EVERYONE, True),
    ("tasks", "get", lambda t: url("run-tasks", t["run"].code), {}, EVERYONE, True),
    ("records", "get", lambda t: url("run-records", t["run"].code), {}, EVERYONE, True),
    ("review", "get", lambda t: url("run-review", t["run"].code), {}, EVERYONE, True),
    ("export page", "get", lambda t: url("run-export", t["run"].code), {}, READERS, True),
    (
        "download",
        "get",
        lambda t: url("run-export-download", t["run"].code) + "?field=topic&type=jsonl",
        {},
        READERS,
        True,
    ),
    ("providers", "get", lambda t: url("provider-list"), {}, MAKERS, False),
    ("provider form", "get", lambda t: url("provider-edit", t["provider"].code), {}, ADMINS, True),
    ("new provider", "get", lambda t: url("provider-create"), {}, ADMINS, False),
    ("people", "get", lambda t: url("people"), {}, ADMINS, False),
    # actions
    ("create pipeline", "post", lambda t: url("pipeline-create"), {"name": "New"}, MAKERS, False),
    (
        "rename pipeline",
        "post",
        lambda t: url("pipeline-rename", t["pipeline"].code),
        {"name": "Renamed"},
        MAKERS,
        True,
    ),
    (
        "copy pipeline",
        "post",
        lambda t: url("pipeline-duplicate", t["pipeline"].code),
        {},
        MAKERS,
        True,
    ),
    (
        "delete pipeline",
        "post",
        lambda t: url("pipeline-delete", t["pipeline"].code),
        {},
        MAKERS,
        True,
    ),
    (
        "use template",
        "post",
        lambda t: url("template-use", "qa-from-topics"),
        {},
        MAKERS,
        False,
    ),
    (
        "save pipeline",
        "post",
        lambda t: url("editor-save", t["pipeline"].code),
        {},
        MAKERS,
        True,
    ),
    ("resume run", "post", lambda t: url("run-resume", t["run"].code), {}, MAKERS, True),
    (
        "rename run",
        "post",
        lambda t: url("run-rename", t["run"].code),
        {"name": "Renamed run"},
        MAKERS,
        True,
    ),
    ("cancel run", "post", lambda t: url("run-cancel", t["run"].code), {}, MAKERS, True),
    (
        "accept record",
        "post",
        lambda t: url("record-review", t["run"].code, t["record"].pk),
        {"review": "accepted"},
        REVIEWERS,
        True,
    ),
    (
        "bulk accept",
        "post",
        lambda t: url("records-bulk", t["run"].code),
        {"action": "accept"},
        REVIEWERS,
        True,
    ),
    (
        "delete provider",
        "post",
        lambda t: url("provider-delete", t["provider"].code),
        {},
        ADMINS,
        True,
    ),
    ("invite", "post", lambda t: url("people-invite"), {"role": "viewer"}, ADMINS, False),
    (
        "change role",
        "post",
        lambda t: url("people-role", t["member"].pk),
        {"role": "editor"},
        ADMINS,
        False,
    ),
    ("remove member", "post", lambda t: url("people-remove", t["member"].pk), {}, ADMINS, False),
]


def _request(client, method, address, data):
    if method == "get":
        return client.get(address)
    return client.post(address, data)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("page", PAGES, ids=[p[0] for p in PAGES])
def test_each_role_on_each_page(client, team, role, page):
    label, method, address, data, allowed, _ = page
    client.force_login(team["people"][role])
    response = _request(client, method, address(team), data)
    if role in allowed:
        assert response.status_code in (200, 302), (label, role, response.status_code)
    else:
        assert response.status_code == 403, (label, role, response.status_code)
        assert "you cannot" in response.content.decode()  # says why


@pytest.mark.parametrize("page", [p for p in PAGES if p[5]], ids=[p[0] for p in PAGES if p[5]])
def test_someone_outside_the_workspace_gets_404(client, team, page):
    label, method, address, data, _, _ = page
    client.force_login(team["outsider"])
    response = _request(client, method, address(team), data)
    assert response.status_code == 404, (label, response.status_code)


def test_lists_show_only_the_current_workspace(client, team):
    client.force_login(team["outsider"])
    assert team["pipeline"].name not in client.get(url("pipeline-list")).content.decode()
    assert team["run"].name not in client.get(url("run-list")).content.decode()
    assert "shared" not in client.get(url("provider-list")).content.decode()


def test_members_use_providers_without_seeing_their_keys(client, team):
    client.force_login(team["people"]["editor"])
    page = client.get(url("provider-list")).content.decode()
    assert "shared" in page
    assert "WXYZ" not in page and "sk-team" not in page
    launch = client.get(url("pipeline-launch", team["pipeline"].code)).content.decode()
    assert "shared" in launch  # the workspace's provider is a choice at launch
    client.force_login(team["people"]["admin"])
    assert "…WXYZ" in client.get(url("provider-list")).content.decode()


def test_a_run_launched_by_an_editor_belongs_to_the_workspace(client, team, redis_client):
    client.force_login(team["people"]["editor"])
    response = client.post(
        url("pipeline-launch", team["pipeline"].code),
        {"source": "one", "input_topic": "Tides", "provider": str(team["provider"].code)},
    )
    assert response.status_code == 302
    run = Run.objects.exclude(pk=team["run"].pk).get()
    assert run.workspace == team["workspace"] and run.owner == team["people"]["editor"]
    client.force_login(team["people"]["viewer"])
    assert client.get(url("run-detail", run.code)).status_code == 200


def test_a_reviewer_opens_only_the_runs_they_review(client, team, django_user_model):
    other = make_run(
        team["people"]["admin"], topics=1, name="Not theirs", workspace=team["workspace"]
    )
    client.force_login(team["people"]["reviewer"])
    listed = client.get(url("run-list")).content.decode()
    assert team["run"].name in listed and "Not theirs" not in listed
    response = client.get(url("run-detail", other.code))
    assert response.status_code == 403
    assert "only open the runs you review" in response.content.decode()
