"""CI runs through the API (issue 13): written by the CI's account (a member of
ci.clone_project), read by people, as JSON and Atom; their transitions; the Server Admin
Log entries of a finished run; hostile bodies; the migration; and opslab.apiclient's
Basic auth against the API served by gunicorn. On the real slapd, and on SQLite,
PostgreSQL and MariaDB where it is stored."""

import base64
import contextlib
import json
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import ldap
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from flask.testing import FlaskClient
from sqlalchemy import inspect

from opslab.api.contract import Contract
from opslab.api.store import MIGRATIONS, engine_for
from opslab.apiclient import ApiRefused, Client, TokenUnreadable
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, PEOPLE, PROJECTS, basic, bearer
from tests.served_api import ServedApi

CI_PASSWORD = "ci-account-secret"
ATOM = "{http://www.w3.org/2005/Atom}"
RUNS = "https://opslab.example.org/v1/ci/runs"
PAGES = "https://opslab.example.org/ci"  # each run's page, which the log and the feed link to
REVISION = "0123456789abcdef0123456789abcdef01234567"
RUN = {"event_key": "comment-added operations/puppet 42,3 5f0c", "project": "operations/puppet",
       "change": 42, "patchset": 3, "revision": REVISION, "branch": "production",
       "change_id": "I" + "a" * 40, "change_url": "https://review.example.org/c/42",
       "subject": "web: serve the new motd", "trigger": "check infra", "requested_by": "alice"}
HOSTS = [{"original": "web1.web.example.org", "clone": "ci-42-3-web1.ci.example.org",
          "result": "failed"},
         {"original": "builder.example.org", "clone": "ci-42-3-builder.ci.example.org",
          "result": "passed"},
         {"original": "gone.nosuch.example.org", "clone": None, "result": "error"}]
BUILD = "https://jenkins.example.org/job/opslab-ci/7/"


@pytest.fixture(scope="module")
def ci_account(slapd: ThrowawaySlapd, people: None) -> None:
    """cibot, a person of the directory and the only member of the project ci."""
    with contextlib.suppress(ldap.ALREADY_EXISTS):
        slapd.add_ldif(f"dn: uid=cibot,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: cibot\n"
                       f"cn: cibot\nsn: cibot\nuserPassword: {CI_PASSWORD}\n")
    with contextlib.suppress(ldap.ALREADY_EXISTS):
        slapd.add_ldif(f"dn: cn=ci,{PROJECTS}\nobjectClass: groupOfNames\ncn: ci\n"
                       f"member: uid=cibot,{PEOPLE}\n")


def as_ci() -> dict[str, str]:
    token = base64.b64encode(f"cibot:{CI_PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def conforms(schema: str, document: Any) -> None:
    contract = Contract()
    assert [error.message for error in contract.schema(schema).iter_errors(document)] == []


def create(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/ci/runs", json={**RUN, **fields}, headers=as_ci())
    assert response.status_code == 201, response.json
    document: dict[str, Any] = response.json
    return document


def patch(client: FlaskClient, run_id: int, body: Any, headers: dict[str, str] | None = None,
          ) -> Any:
    return client.patch(f"/v1/ci/runs/{run_id}", json=body,
                        headers=as_ci() if headers is None else headers)


def read(client: FlaskClient, path: str) -> Any:
    response = client.get(path, headers=basic("dave"))
    assert response.status_code == 200, response.json
    return response.json


def audit(client: FlaskClient, action: str) -> list[dict[str, Any]]:
    return list(read(client, f"/v1/changes?action={action}"))


def ci_log(client: FlaskClient, run_id: int) -> list[dict[str, Any]]:
    """Every Server Admin Log entry about the run, in any project."""
    return [entry for entry in read(client, "/v1/log?limit=1000")
            if entry["message"].startswith(f"CI run {run_id} ")]


def test_a_run_is_created_read_listed_and_fed(stored_client: FlaskClient,
                                              ci_account: None) -> None:
    run = create(stored_client)
    conforms("CiRun", run)
    assert {key: run[key] for key in RUN} == RUN
    assert run["url"] == f"{PAGES}/{run['id']}"
    assert (run["state"], run["hosts"], run["left_out"], run["vote"], run["result"],
            run["finished_at"]) == ("queued", [], [], None, None, None)
    [created] = audit(stored_client, "ci.run.create")
    assert (created["actor"], created["target"], created["after"]["id"]) == \
        ("person:cibot", f"ci run {run['id']}", run["id"])

    # The dispatcher restarted and posts the same event: the run stored, once.
    again = stored_client.post("/v1/ci/runs", json=RUN, headers=as_ci())
    assert (again.status_code, again.json) == (200, run)
    # The same key for another patch set is a dispatcher's mistake, not the same run.
    clash = stored_client.post("/v1/ci/runs", json={**RUN, "patchset": 4}, headers=as_ci())
    assert clash.status_code == 409
    assert clash.json["error"] == (f"event_key {RUN['event_key']!r} already names CI run "
                                   f"{run['id']} (change 42 patch set 3 of operations/puppet)")
    other = create(stored_client, event_key="comment-added tools 7,1 9a9a", project="tools",
                   change=7, patchset=1, change_id="I" + "b" * 40)
    assert len(audit(stored_client, "ci.run.create")) == 2

    ran = patch(stored_client, run["id"], {"state": "running", "jenkins_queue_id": 311,
                                           "build_url": BUILD, "hosts": HOSTS,
                                           "left_out": ["web9.web.example.org"]})
    assert ran.status_code == 200, ran.json
    conforms("CiRun", ran.json)
    assert read(stored_client, f"/v1/ci/runs/{run['id']}") == ran.json

    listed = read(stored_client, "/v1/ci/runs")
    assert [found["id"] for found in listed] == [other["id"], run["id"]]
    for found in listed:
        conforms("CiRunSummary", found)
        assert "result" not in found
        assert "message" not in found
    for query, expected in (("change=42", [run]), ("project=tools", [other]),
                            ("state=running", [run]), ("state=queued", [other]),
                            ("change=42&state=queued", []), ("limit=1", [other]),
                            ("project=operations/puppet&change=42", [run])):
        assert [found["id"] for found in read(stored_client, f"/v1/ci/runs?{query}")] == \
            [expected_run["id"] for expected_run in expected], query

    feed = stored_client.get("/v1/ci/runs.atom?change=42", headers=basic("dave"))
    assert (feed.status_code, feed.mimetype) == (200, "application/atom+xml")
    root = ElementTree.fromstring(feed.data)
    assert root.findtext(f"{ATOM}id") == f"{RUNS}.atom"
    [entry] = root.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}id") == f"{PAGES}/{run['id']}"
    assert entry.find(f"{ATOM}link").attrib == {"rel": "alternate", "type": "application/json",
                                                "href": f"{PAGES}/{run['id']}"}
    assert entry.findtext(f"{ATOM}title") == f"CI run {run['id']}: change 42 patch set 3 running"
    assert entry.findtext(f"{ATOM}author/{ATOM}name") == "alice"
    content = entry.findtext(f"{ATOM}content") or ""
    assert f"change: {RUN['change_url']}" in content
    assert f"build: {BUILD}" in content
    assert "web1.web.example.org failed" in content
    # The entry's link is where the API serves the run.
    assert read(stored_client, f"/v1/ci/runs/{run['id']}")["id"] == run["id"]


@pytest.mark.parametrize(("path", "filters"), [
    ("/v1/ci/runs", "state=done"), ("/v1/ci/runs", "change=-1"), ("/v1/ci/runs", "change=x"),
    ("/v1/ci/runs", "colour=red"), ("/v1/ci/runs.atom", "state=queued&state=running"),
    ("/v1/ci/runs", "limit=many")])
def test_bad_filters_are_refused(client: FlaskClient, path: str, filters: str) -> None:
    response = client.get(f"{path}?{filters}", headers=basic("dave"))
    assert response.status_code == 422
    assert filters.partition("=")[0] in response.json["error"]


def test_states_move_along_the_allowed_transitions_only(client: FlaskClient,
                                                        ci_account: None) -> None:
    run = create(client)
    refused = patch(client, run["id"], {"state": "passed"})
    assert refused.status_code == 409
    assert refused.json["error"] == (f"CI run {run['id']} is queued: it may become running "
                                     "or cancelled or error, not passed")
    assert patch(client, run["id"], {"state": "running"}).status_code == 200
    # The same state again, with more fields: not a transition.
    assert patch(client, run["id"], {"state": "running", "hosts": HOSTS[:1]}).status_code == 200
    back = patch(client, run["id"], {"state": "queued"})
    assert (back.status_code, back.json["error"]) == (
        409, f"CI run {run['id']} is running: it may become passed or failed or error or "
             "cancelled or stale, not queued")
    # No verdict: no vote; and a vote says what the state says.
    for body, error in (({"state": "error", "vote": -1},
                         "vote: a run that is error cannot carry the vote -1 (it has no verdict)"),
                        ({"state": "stale", "vote": 1},
                         "vote: a run that is stale cannot carry the vote +1 (it has no verdict)"),
                        ({"state": "passed", "vote": -1},
                         "vote: a run that is passed cannot carry the vote -1 (only +1)"),
                        ({"vote": 1}, "vote: a run that is running cannot carry the vote +1 "
                                      "(it has no verdict)")):
        response = patch(client, run["id"], body)
        assert (response.status_code, response.json["error"]) == (422, error), body
    done = patch(client, run["id"], {"state": "failed", "vote": -1, "message": "opslab CI: "
                                     "failed\n\n* Puppet failed", "result": {"passed": False}})
    assert done.status_code == 200, done.json
    assert (done.json["state"], done.json["vote"], done.json["result"]) == \
        ("failed", -1, {"passed": False})
    assert done.json["finished_at"] == done.json["updated_at"]

    # Finished: nothing changes any more, whatever is asked.
    for body in ({"state": "running"}, {"state": "failed", "vote": -1}, {"message": "late"},
                 {"build_url": BUILD}):
        late = patch(client, run["id"], body)
        assert (late.status_code, late.json["error"]) == (
            409, f"CI run {run['id']} is failed already: a finished run changes no more")
    assert read(client, f"/v1/ci/runs/{run['id']}") == done.json
    updates = audit(client, "ci.run.update")
    assert len(updates) == 3
    assert (updates[0]["before"]["state"], updates[0]["after"]) == \
        ("running", {"state": "failed", "vote": -1, "message": done.json["message"],
                     "result": {"bytes": len(json.dumps({"passed": False}).encode())}})

    # The job records a run of its own as it starts, knowing less of the change.
    direct = create(client, event_key="direct", patchset=6, state="running", change_id=None,
                    change_url=None, subject=None)
    assert (direct["state"], direct["change_id"], direct["subject"]) == ("running", None, None)
    assert patch(client, direct["id"], {"state": "passed", "vote": 1}).status_code == 200

    cancelled = create(client, event_key="another", patchset=4)
    for state, status in (("cancelled", 200), ("running", 409)):
        assert patch(client, cancelled["id"], {"state": state}).status_code == status
    assert patch(client, 999999, {"state": "running"}).status_code == 404


def test_a_finished_run_is_logged_once_in_each_cloned_project(stored_client: FlaskClient,
                                                              ci_account: None) -> None:
    run = create(stored_client)
    patch(stored_client, run["id"], {"state": "running", "hosts": HOSTS})
    # Nothing is logged before the run is final.
    assert ci_log(stored_client, run["id"]) == []
    final = {"state": "failed", "vote": -1, "build_url": BUILD}
    assert patch(stored_client, run["id"], final).status_code == 200
    # The job did not hear the answer and sends it again: refused, logged once still.
    assert patch(stored_client, run["id"], final).status_code == 409

    head = f'CI run {run["id"]} (change 42 patch set 3, "check infra" by alice): failed: '
    tail = f"; Verified -1 {PAGES}/{run['id']}"
    # web1 is in web by its name; builder in tools by its entry's opslabProject; the host
    # deleted since, in no project that exists, is in no log.
    logged = {entry["project"]: entry for entry in ci_log(stored_client, run["id"])}
    assert len(ci_log(stored_client, run["id"])) == 2
    assert {project: (entry["author"], entry["message"])
            for project, entry in logged.items()} == {
        "web": ("cibot", f"{head}web1.web.example.org failed{tail}"),
        "tools": ("cibot", f"{head}builder.example.org passed{tail}")}
    for project in ("web", "tools"):
        [entry] = [found for found in read(stored_client, f"/v1/projects/{project}/log")
                   if found["message"].startswith(f"CI run {run['id']} ")]
        assert entry == logged[project]

    # A run without a verdict says so; its hosts not yet tested too.
    other = create(stored_client, event_key="second", patchset=5)
    patch(stored_client, other["id"], {"state": "running",
                                      "hosts": [{**HOSTS[0], "result": None}]})
    assert patch(stored_client, other["id"], {"state": "stale"}).status_code == 200
    [entry] = ci_log(stored_client, other["id"])
    assert entry["message"] == (
        f'CI run {other["id"]} (change 42 patch set 5, "check infra" by alice): stale (the patch '
        f"set is no longer current): web1.web.example.org not tested; no vote "
        f"{PAGES}/{other['id']}")


def test_final_writes_at_once_log_the_run_once(stored_client: FlaskClient,
                                              ci_account: None) -> None:
    run = create(stored_client)
    patch(stored_client, run["id"], {"state": "running", "hosts": HOSTS[:2]})
    app = stored_client.application
    start = threading.Barrier(4)
    statuses: list[int] = []

    def finish() -> None:
        with app.test_client() as own:
            start.wait()
            statuses.append(patch(own, run["id"], {"state": "passed", "vote": 1}).status_code)

    threads = [threading.Thread(target=finish) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    assert sorted(entry["project"] for entry in ci_log(stored_client, run["id"])) == \
        ["tools", "web"]
    assert len([change for change in audit(stored_client, "ci.run.update")
                if change["after"]["state"] == "passed"]) == 1


def test_only_the_ci_account_writes_and_people_read(client: FlaskClient, ci_account: None,
                                                   ) -> None:
    created = client.post("/v1/projects/web/hosts", json={"name": "citoken"},
                          headers=basic("carol"))
    token = created.json["token"]
    try:
        callers = {"carol (a member of web)": (basic("carol"), 403),
                   "olga (operations)": (basic("olga"), 403),
                   "dave (of no project)": (basic("dave"), 403),
                   "a host token": (bearer(token), 403), "anonymous": ({}, 401)}
        for who, (headers, status) in callers.items():
            response = client.post("/v1/ci/runs", json=RUN, headers=headers)
            assert response.status_code == status, who
            assert response.json["error"] == (
                "authentication required" if status == 401 else
                "a host token may only read its own host and report its own runs"
                if who == "a host token" else
                "only members of project 'ci' (ci.clone_project) write CI runs"), who
        assert read(client, "/v1/ci/runs") == []

        run = create(client)
        for who, (headers, status) in callers.items():
            response = patch(client, run["id"], {"state": "cancelled"}, headers)
            assert response.status_code == status, who
        assert read(client, f"/v1/ci/runs/{run['id']}") == run
        assert audit(client, "ci.run.update") == []

        # Reading is for people, as the audit log and run reports are.
        for path in ("/v1/ci/runs", f"/v1/ci/runs/{run['id']}", "/v1/ci/runs.atom"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=bearer(token)).status_code == 403, path
            assert client.get(path, headers=basic("carol")).status_code == 200, path
    finally:
        client.delete("/v1/hosts/citoken.web.example.org", headers=basic("carol"))


@pytest.mark.parametrize(("body", "message"), [
    ({**RUN, "change": "42"}, "change must be of type integer"),
    ({**RUN, "patchset": -3}, "patchset: -3 is less than the minimum of 1"),
    ({**RUN, "change": 0}, "change: 0 is less than the minimum of 1"),
    ({**RUN, "change": 2**31}, "change: 2147483648 is greater than the maximum"),
    ({**RUN, "revision": "HEAD"}, "revision: 'HEAD' is not a revision (40 lowercase hex"),
    ({**RUN, "revision": REVISION.upper()}, "revision:"),
    ({**RUN, "change_id": "I123"}, "change_id: 'I123' is not a Change-Id"),
    ({**RUN, "subject": "motd\x1b[2J"}, "subject: 'motd\\x1b[2J' must be one line of 1 to"),
    ({**RUN, "subject": "two\nlines"}, "subject: 'two\\nlines' must be one line of 1 to"),
    ({**RUN, "subject": "x" * 1001}, "subject: 'xxxxx"),
    ({**RUN, "trigger": ""}, "trigger: '' must be one line of text"),
    ({**RUN, "requested_by": "Alice Smith"}, "requested_by: 'Alice Smith' is not a login name"),
    ({**RUN, "change_url": "javascript:alert(1)"}, "change_url: 'javascript:alert(1)' is not"),
    ({**RUN, "event_key": "k" * 256}, "event_key: 256 characters, more than the 255 allowed"),
    ({**RUN, "state": "passed"}, "state: 'passed' is not one of ['queued', 'running']"),
    ({**RUN, "colour": "red"}, "unknown fields: colour"),
    ({key: value for key, value in RUN.items() if key != "event_key"},
     "'event_key' is required"),
    ([RUN], "the body must be a JSON object"),
])
def test_hostile_runs_are_refused_and_write_nothing(client: FlaskClient, ci_account: None,
                                                    body: Any, message: str) -> None:
    response = client.post("/v1/ci/runs", json=body, headers=as_ci())
    assert response.status_code == 422
    assert message in response.json["error"]
    assert read(client, "/v1/ci/runs") == []
    assert audit(client, "ci.run.create") == []


HUGE = {"hosts": ["x" * 1000] * 300}  # 300 KiB as JSON


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"result": "passed"}, 422, "result must be of type object"),
    ({"result": HUGE}, 413, "result: 300911 bytes as JSON, more than the 262144 (256 KiB)"),
    ({"state": "done"}, 422, "state: 'done' is not one of"),
    ({"vote": 2}, 422, "vote: 2 is not one of"),
    ({"vote": True}, 422, "vote: True is not one of"),
    ({"jenkins_queue_id": -1}, 422, "jenkins_queue_id: -1 is less than the minimum of 1"),
    ({"message": "red\x1b[31m"}, 422, "message: 'red\\x1b[31m' must be at most 16000 characters"),
    ({"message": "m" * 16001}, 422, "message: 'mmmm"),
    ({"hosts": [HOSTS[0], HOSTS[0]]}, 422, "hosts: web1.web.example.org is listed twice"),
    ({"hosts": [{**HOSTS[0], "original": "Web1"}]}, 422, "hosts.0.original: 'Web1' is not a"),
    ({"hosts": [{**HOSTS[0], "result": "ok"}]}, 422, "hosts.0.result: 'ok' is not one of"),
    ({"hosts": [{"original": "web1.web.example.org"}]}, 422, "hosts.0: 'clone' is required"),
    ({"hosts": [HOSTS[0]] * 51}, 422, "hosts: 51 items, more than the 50 allowed"),
    ({"left_out": ["a b"]}, 422, "left_out.0: 'a b' is not a lowercase DNS name"),
    ({"build_url": "file:///etc/passwd"}, 422, "build_url"),
    ({}, 422, "the body: {} should be non-empty"),
    ({"message": "x" * (1024 * 1024)}, 413, "the body is larger than 1048576 bytes"),
])
def test_hostile_changes_are_refused_and_write_nothing(
        client: FlaskClient, ci_account: None, body: Any, status: int, message: str) -> None:
    run = create(client)
    response = patch(client, run["id"], body)
    assert response.status_code == status
    assert message in response.json["error"]
    assert read(client, f"/v1/ci/runs/{run['id']}") == run
    assert audit(client, "ci.run.update") == []


def alembic_config(url: str) -> AlembicConfig:
    settings = AlembicConfig()
    settings.set_main_option("script_location", str(MIGRATIONS))
    settings.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return settings


def test_the_migration_upgrades_and_downgrades(database: str) -> None:
    """0009 adds ci_runs and takes it away again, on every database; the schema the models
    describe is checked at head by test_api.py."""
    engine = engine_for(database)
    try:
        def state() -> tuple[str | None, bool]:
            with engine.connect() as connection:
                revision = MigrationContext.configure(connection).get_current_revision()
                return revision, inspect(connection).has_table("ci_runs")

        command.downgrade(alembic_config(database), "0008")
        assert state() == ("0008", False)
        command.upgrade(alembic_config(database), "0009")
        assert state() == ("0009", True)
        command.upgrade(alembic_config(database), "head")
    finally:
        engine.dispose()


def test_the_client_speaks_basic_for_a_person(tmp_path: Path, slapd: ThrowawaySlapd,
                                              ci_account: None) -> None:
    """opslab.apiclient.Client with user=: the CI's account against the API under gunicorn;
    the password is read from its file and never shown."""
    api = ServedApi(tmp_path, slapd, BASE)
    api.start()
    try:
        password = tmp_path / "ci-password"
        password.write_text(CI_PASSWORD + "\n")
        client = Client(api.url, str(password), 10, "opslab-ci-test", user="cibot")
        answer = client.request("POST", "/v1/ci/runs", RUN)
        assert answer.status == 201
        run = json.loads(answer.body)
        assert client.request("POST", "/v1/ci/runs", RUN).status == 200
        changed = client.request("PATCH", f"/v1/ci/runs/{run['id']}", {"state": "running"})
        assert json.loads(changed.body)["state"] == "running"

        password.write_text("not-the-password\n")
        with pytest.raises(ApiRefused) as refused:
            client.request("GET", "/v1/ci/runs")
        assert (refused.value.status, refused.value.reason) == \
            (401, "invalid user name or password")
        assert "not-the-password" not in str(refused.value)
        # Without user=, the same file is a host token, as it always was.
        with pytest.raises(ApiRefused) as refused:
            Client(api.url, str(password), 10, "opslab-ci-test").request("GET", "/v1/ci/runs")
        assert (refused.value.status, refused.value.reason) == (401, "unknown host token")

        password.unlink()
        with pytest.raises(TokenUnreadable) as unreadable:
            client.request("GET", "/v1/ci/runs")
        assert str(unreadable.value) == (f"cannot read the API password file of cibot "
                                         f"{password}: No such file or directory")
    finally:
        api.stop()
    assert CI_PASSWORD not in api.log.read_text(encoding="utf-8", errors="replace")
