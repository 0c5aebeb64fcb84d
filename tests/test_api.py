"""The coordination API through Flask's test client, on the real slapd and a real SQLite."""

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import ldap
import pytest
import yaml
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from opslab.api.app import create_app
from opslab.api.store import Base, Change, engine_for, migrate
from opslab.config import parse
from opslab.slapd import ThrowawaySlapd
from tests.conftest import (
    BASE,
    HOSTS,
    PASSWORDS,
    PEOPLE,
    PROJECTS,
    api_config,
    basic,
    bearer,
)
from tests.postgres import ThrowawayPostgres
from tests.served_api import ServedApi


def audit_rows(client: FlaskClient) -> int:
    with client.application.extensions["opslab.sessions"]() as session:
        return int(session.scalar(select(func.count()).select_from(Change)) or 0)


def host_entry(slapd: ThrowawaySlapd, name: str) -> dict[str, list[bytes]] | None:
    connection = slapd.connect()
    try:
        return dict(connection.search_s(f"dc={name},{HOSTS}", ldap.SCOPE_BASE)[0][1])
    except ldap.NO_SUCH_OBJECT:
        return None
    finally:
        connection.unbind_s()


NEW_HOST = {
    "name": "api1.web.example.org",
    "classes": ["role::web", "ntp"],
    "class_parameters": {"ntp": {"servers": ["a.example.org"], "burst": True}},
    "variables": {"cluster": "esams"},
    "branch": "feature/api",
    "addresses": ["192.0.2.50"],
}


def create(client: FlaskClient, body: dict[str, Any], who: str = "carol",
           project: str = "web") -> Any:
    return client.post(f"/v1/projects/{project}/hosts", json=body, headers=basic(who))


def test_member_creates_a_host_in_the_directory_with_an_audit_record(
    client: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    response = create(client, NEW_HOST)

    assert response.status_code == 201, response.json
    assert response.json["host"] == {**NEW_HOST, "project": "web"}
    assert len(response.json["token"]) >= 40
    entry = host_entry(slapd, "api1.web.example.org")
    assert entry is not None
    assert entry["puppetClass"] == [b"role::web", b"ntp"]
    assert entry["environment"] == [b"feature/api"]
    assert sorted(entry["opslabClassParameter"]) == [b"ntp::burst=true",
                                                     b'ntp::servers=["a.example.org"]']
    [change] = client.get("/v1/changes?target=api1.web.example.org",
                          headers=basic("carol")).json
    assert (change["actor"], change["action"], change["project"]) == (
        "person:carol", "host.create", "web")
    assert change["before"] is None
    assert change["after"]["variables"] == {"cluster": "esams"}

    # The token lets the instance read its classification (the ENC's own answer) ...
    token = response.json["token"]
    node = client.get("/v1/nodes/api1.web.example.org", headers=bearer(token))
    assert node.status_code == 200, node.json
    assert node.json["environment"] == "feature_api"
    assert node.json["classes"]["ntp"] == {"servers": ["a.example.org"], "burst": True}
    assert node.json["parameters"]["cluster"] == "esams"
    as_yaml = client.get("/v1/nodes/api1.web.example.org",
                         headers={**bearer(token), "Accept": "application/yaml"})
    assert as_yaml.mimetype == "application/yaml"
    assert yaml.safe_load(as_yaml.data) == node.json
    # ... and nobody else's.
    assert client.get("/v1/nodes/web1.web.example.org", headers=bearer(token)).status_code == 403
    client.delete("/v1/hosts/api1.web.example.org", headers=basic("carol"))


@pytest.mark.parametrize(
    ("who", "project", "status"),
    [(None, "web", 401), ("dave", "web", 403), ("carol", "tools", 403), ("olga", "tools", 201),
     ("carol", "no-such-project", 404)],
)
def test_who_may_create_hosts(client: FlaskClient, who: str | None, project: str,
                              status: int) -> None:
    body = {**NEW_HOST, "name": f"authz-{status}.{project}.example.org"}
    headers = basic(who) if who else {}
    before = audit_rows(client)
    response = client.post(f"/v1/projects/{project}/hosts", json=body, headers=headers)
    assert response.status_code == status, response.json
    if status == 201:
        client.delete(f"/v1/hosts/{body['name']}", headers=basic(who or "olga"))
    else:
        assert response.json["error"]
        assert audit_rows(client) == before


def test_wrong_password_is_401(client: FlaskClient) -> None:
    token = base64.b64encode(b"carol:wrong").decode()
    response = client.post("/v1/projects/web/hosts", json=NEW_HOST,
                           headers={"Authorization": f"Basic {token}"})
    assert response.status_code == 401
    assert response.json == {"error": "invalid user name or password"}
    empty = base64.b64encode(b"carol:").decode()
    assert client.get("/v1/changes", headers={"Authorization": f"Basic {empty}"}
                      ).status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**NEW_HOST, "colour": "red"}, "unknown fields: colour"),
        ({**NEW_HOST, "name": "*)(dc=*"}, "is not a lowercase DNS name"),
        ({**NEW_HOST, "name": "API.web.example.org"}, "is not a lowercase DNS name"),
        ({**NEW_HOST, "classes": "role::web"}, "classes must be of type array"),
        ({**NEW_HOST, "classes": ["Role::Web"]}, "not a Puppet class name"),
        ({**NEW_HOST, "classes": ["role::web)(x"]}, "not a Puppet class name"),
        ({**NEW_HOST, "variables": {"trusted": "x"}}, "or is one Puppet reserves"),
        ({**NEW_HOST, "variables": {"Bad-Name": "x"}}, "not a Puppet variable name"),
        ({**NEW_HOST, "variables": {"x": 1}}, "variables.x must be of type string"),
        ({**NEW_HOST, "variables": {"x": "two\nlines"}}, "must be one line of printable ASCII"),
        ({**NEW_HOST, "branch": "-rf"}, "branch: branch name '-rf' is refused"),
        ({**NEW_HOST, "addresses": ["300.1.1.1"]}, "not an IPv4 address"),
        ({**NEW_HOST, "class_parameters": {"ntp": ["x"]}},
         "class_parameters.ntp must be of type object"),
        ([NEW_HOST], "the body must be a JSON object"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    client: FlaskClient, slapd: ThrowawaySlapd, body: Any, message: str
) -> None:
    before = audit_rows(client)
    response = create(client, body)
    assert response.status_code == 422, response.json
    assert message in response.json["error"]
    assert audit_rows(client) == before
    assert host_entry(slapd, "api1.web.example.org") is None


def test_malformed_and_huge_bodies(client: FlaskClient) -> None:
    malformed = client.post("/v1/projects/web/hosts", data="{not json",
                            headers={**basic("carol"), "Content-Type": "application/json"})
    assert (malformed.status_code, malformed.json["error"]) == (422, "the body is not valid JSON")
    huge = create(client, {**NEW_HOST, "variables": {"x": "y" * 30000}})
    assert huge.status_code == 413
    assert "larger than 20000 bytes" in huge.json["error"]


def test_duplicate_host_is_a_conflict(client: FlaskClient) -> None:
    assert create(client, NEW_HOST).status_code == 201
    before = audit_rows(client)
    again = create(client, NEW_HOST)
    assert again.status_code == 409
    assert audit_rows(client) == before
    client.delete("/v1/hosts/api1.web.example.org", headers=basic("carol"))


def test_update_and_delete_are_recorded_with_before_and_after(
    stored_client: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    assert create(stored_client, NEW_HOST).status_code == 201
    changed = stored_client.patch("/v1/hosts/api1.web.example.org", headers=basic("carol"),
                           json={"variables": {"cluster": "ulsfo"}, "branch": None})
    assert changed.status_code == 200, changed.json
    assert (changed.json["variables"], changed.json["branch"]) == ({"cluster": "ulsfo"}, None)
    assert host_entry(slapd, "api1.web.example.org")["puppetVar"] == [b"cluster=ulsfo"]
    assert stored_client.patch("/v1/hosts/api1.web.example.org", headers=basic("dave"),
                        json={"branch": "x"}).status_code == 403
    assert stored_client.patch("/v1/hosts/api1.web.example.org", headers=basic("carol"),
                        json={"name": "other"}).status_code == 422

    assert stored_client.delete("/v1/hosts/api1.web.example.org", headers=basic("carol")
                         ).status_code == 204
    assert host_entry(slapd, "api1.web.example.org") is None
    history = stored_client.get("/v1/changes?target=api1.web.example.org",
                                headers=basic("carol")).json
    assert [c["action"] for c in history][:3] == ["host.delete", "host.update", "host.create"]
    update = history[1]
    assert update["before"]["variables"] == {"cluster": "esams"}
    assert update["after"]["variables"] == {"cluster": "ulsfo"}


def test_run_reports_from_the_hosts_own_token(stored_client: FlaskClient) -> None:
    token = create(stored_client, NEW_HOST).json["token"]
    other = create(stored_client, {**NEW_HOST, "name": "api2.web.example.org"}).json["token"]
    report = {"status": "changed", "exit_code": 2, "commit": "a" * 40,
              "environment": "feature_api", "resources": {"changed": 3, "failed": 0},
              "failed_resources": [], "duration": 4.2}
    posted = stored_client.post("/v1/hosts/api1.web.example.org/reports", json=report,
                         headers=bearer(token))
    assert posted.status_code == 201, posted.json
    assert (posted.json["project"], posted.json["changed"]) == ("web", 3)
    assert stored_client.post("/v1/hosts/api1.web.example.org/reports", json=report,
                       headers=bearer(other)).status_code == 403
    assert stored_client.post("/v1/hosts/api1.web.example.org/reports", json=report,
                       headers=basic("carol")).status_code == 403
    assert stored_client.post("/v1/hosts/api1.web.example.org/reports", json={**report, "x": 1},
                       headers=bearer(token)).status_code == 422
    assert stored_client.post("/v1/hosts/api1.web.example.org/reports", json={"status": "changed"},
                       headers=bearer(token)).status_code == 422
    failed = {**report, "status": "failed", "exit_code": 4,
              "failed_resources": [{"resource": "Exec[x]", "messages": ["boom"]}]}
    stored_client.post("/v1/hosts/api2.web.example.org/reports", json=failed, headers=bearer(other))

    latest = stored_client.get("/v1/projects/web/reports", headers=basic("carol")).json
    assert [(r["host"], r["status"]) for r in latest] == [
        ("api1.web.example.org", "changed"), ("api2.web.example.org", "failed")]
    assert latest[1]["failures"] == [{"resource": "Exec[x]", "messages": ["boom"]}]
    # Open to every person of the community (docs/api.md's read rule), not to anonymous callers.
    assert stored_client.get("/v1/projects/web/reports", headers=basic("dave")).json == latest
    assert stored_client.get("/v1/projects/web/reports").status_code == 401
    for name in ("api1", "api2"):
        stored_client.delete(f"/v1/hosts/{name}.web.example.org", headers=basic("carol"))
    # A deleted host's token is gone with it.
    assert stored_client.post("/v1/hosts/api1.web.example.org/reports", json=report,
                       headers=bearer(token)).status_code == 401


def test_changes_as_an_atom_feed(stored_client: FlaskClient) -> None:
    assert create(stored_client, NEW_HOST).status_code == 201
    response = stored_client.get("/v1/changes.atom?project=web&limit=5", headers=basic("olga"))
    assert response.mimetype == "application/atom+xml"
    feed = ElementTree.fromstring(response.data)
    atom = "{http://www.w3.org/2005/Atom}"
    titles = [entry.findtext(f"{atom}title") for entry in feed.iter(f"{atom}entry")]
    assert titles[0] == "person:carol host.create api1.web.example.org"
    assert stored_client.get("/v1/changes?colour=red", headers=basic("olga")).status_code == 422
    assert stored_client.get("/v1/changes").status_code == 401
    stored_client.delete("/v1/hosts/api1.web.example.org", headers=basic("carol"))


def test_directory_failure_records_nothing(
    tmp_path: Path, private_slapd: ThrowawaySlapd
) -> None:
    secret = tmp_path / "writer.secret"
    secret.write_text(private_slapd.root_password)
    database = f"sqlite:///{tmp_path / 'api.sqlite'}"
    migrate(database)
    private_slapd.add_ldif(f"dn: uid=olga,{PEOPLE}\nobjectClass: inetOrgPerson\nuid: olga\n"
                           f"cn: olga\nsn: olga\nuserPassword: {PASSWORDS['olga']}\n\n"
                           f"dn: cn=operations,{PROJECTS}\nobjectClass: groupOfNames\n"
                           f"cn: operations\nmember: uid=olga,{PEOPLE}\n")
    config = parse(json.dumps({
        "ldap": {"uri": private_slapd.ldapi_uri, "base": BASE},
        "api": {"database": database, "domain": "example.org", "writer_dn": f"cn=nobody,{BASE}",
                "writer_password_file": str(secret)},
    }), "test")
    client = create_app(config).test_client()
    response = create(client, NEW_HOST, who="olga")
    assert response.status_code == 502  # the writer's bind is refused
    assert audit_rows(client) == 0


def test_served_by_gunicorn(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> None:
    """The same API through ``opslab api serve`` (gunicorn) on a loopback port."""
    api = ServedApi(tmp_path, slapd, BASE)
    api.start()
    try:
        assert api.request("GET", "/v1/changes")[0] == 401
        status, body = api.request("POST", "/v1/projects/web/hosts", headers=basic("carol"),
                                   body={**NEW_HOST, "name": "served.web.example.org"})
        assert status == 201, body
        token = json.loads(body)["token"]
        status, body = api.request("GET", "/v1/nodes/served.web.example.org",
                                   headers=bearer(token))
        assert (status, json.loads(body)["environment"]) == (200, "feature_api")
        assert api.request("DELETE", "/v1/hosts/served.web.example.org",
                           headers=basic("carol"))[0] == 204
    finally:
        api.stop()


def test_server_admin_log_per_project_combined_and_from_chat(stored_client: FlaskClient) -> None:
    first = stored_client.post("/v1/projects/web/log", json={"message": "restarted apache on web1"},
                        headers=basic("carol"))
    assert first.status_code == 201, first.json
    chat = stored_client.post("/v1/log/chat", json={"line": "!log tools rebuilt the builder  "},
                       headers=basic("olga"))
    assert chat.status_code == 201, chat.json
    assert (chat.json["project"], chat.json["author"], chat.json["message"]) == (
        "tools", "olga", "rebuilt the builder")

    web = stored_client.get("/v1/projects/web/log").json  # public: no credentials needed
    assert web[0]["message"] == "restarted apache on web1"
    assert all(entry["project"] == "web" for entry in web)
    combined = stored_client.get("/v1/log?limit=2").json
    assert [entry["message"] for entry in combined] == [
        "rebuilt the builder", "restarted apache on web1"]
    feed = ElementTree.fromstring(stored_client.get("/v1/log.atom").data)
    atom = "{http://www.w3.org/2005/Atom}"
    assert feed.findtext(f"{atom}entry/{atom}title") == "tools: rebuilt the builder"


@pytest.mark.parametrize(
    ("path", "body", "who", "status", "message"),
    [
        ("/v1/projects/web/log", {"message": "x"}, "dave", 403, "not a member"),
        ("/v1/projects/web/log", {"message": "x"}, None, 401, "authentication required"),
        ("/v1/projects/web/log", {"message": ""}, "carol", 422, "1 to 2000 characters"),
        ("/v1/projects/web/log", {"message": "a\nb"}, "carol", 422, "one line"),
        ("/v1/projects/web/log", {"message": "x", "extra": 1}, "carol", 422,
         "unknown fields: extra"),
        ("/v1/log/chat", {"line": "log web forgot the bang"}, "carol", 422, "!log PROJECT"),
        ("/v1/log/chat", {"line": "!log web"}, "carol", 422, "!log PROJECT"),
        ("/v1/log/chat", {"line": "!log tools sneaky"}, "carol", 403, "not a member"),
    ],
)
def test_server_admin_log_refusals(client: FlaskClient, path: str, body: Any,
                                   who: str | None, status: int, message: str) -> None:
    before = len(client.get("/v1/log?limit=1000").json)
    response = client.post(path, json=body, headers=basic(who) if who else {})
    assert response.status_code == status, response.json
    assert message in response.json["error"]
    assert len(client.get("/v1/log?limit=1000").json) == before


def test_projects_and_host_queries(client: FlaskClient) -> None:
    assert create(client, NEW_HOST).status_code == 201
    assert create(client, {**NEW_HOST, "name": "api2.web.example.org", "classes": ["db"],
                           "variables": {"cluster": "eqiad"}}).status_code == 201
    client.post("/v1/projects/web/log", json={"message": "added api1 and api2"},
                headers=basic("carol"))
    try:
        names = [project["name"] for project in client.get("/v1/projects",
                                                            headers=basic("dave")).json]
        assert {"web", "tools", "operations"} <= set(names)
        web = client.get("/v1/projects/web", headers=basic("dave")).json
        assert (web["branch"], web["description"]) == ("production",
                                                       "The community's public web site")
        assert {"alice", "bob", "carol"} <= set(web["members"])
        assert web["owners"] == ["alice"]
        assert web["classes"] == ["role::web", "motd"]
        assert web["variables"]["cluster"] == "eqiad"
        assert web["class_parameters"] == {"motd": {"message": "Welcome to the web project"}}
        # web1 names no opslabProject: it is in web by its name, as the ENC has it.
        assert web["hosts"] == ["api1.web.example.org", "api2.web.example.org",
                                "web1.web.example.org"]
        assert web["recent_log"][0]["message"] == "added api1 and api2"
        assert client.get("/v1/projects/nope", headers=basic("dave")).status_code == 404

        def names_for(query: str) -> list[str]:
            response = client.get(f"/v1/hosts?{query}", headers=basic("dave"))
            assert response.status_code == 200, response.json
            return [host["name"] for host in response.json]

        assert names_for("project=web") == ["api1.web.example.org", "api2.web.example.org",
                                            "web1.web.example.org"]
        assert names_for("project=tools") == ["builder.example.org"]
        assert names_for("class=role::web&project=web") == ["api1.web.example.org"]
        assert names_for("var=cluster=eqiad") == ["api2.web.example.org"]
        assert names_for("class=*") == []  # a literal '*', never a wildcard
        assert names_for("var=cluster=*)(objectClass=*") == []
        assert client.get("/v1/hosts?colour=red", headers=basic("dave")).status_code == 422
        assert client.get("/v1/hosts?var=cluster", headers=basic("dave")).status_code == 422
        assert client.get("/v1/hosts").status_code == 401
    finally:
        for name in ("api1", "api2"):
            client.delete(f"/v1/hosts/{name}.web.example.org", headers=basic("carol"))


def test_openapi_document_describes_every_route(client: FlaskClient) -> None:
    response = client.get("/v1/openapi.yaml")
    assert response.mimetype == "application/yaml"
    document = yaml.safe_load(response.data)
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    served = set()
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("pages."):
            continue  # the pages are HTML for people (docs/pages.md), not the API
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", str(rule))
        served |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == documented


@pytest.mark.parametrize(
    "path", ["/v1/changes?action=%00", "/v1/log?limit=%01", "/v1/hosts?class=a%0Ab"])
def test_control_characters_in_queries_are_refused(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers=basic("olga"))
    assert response.status_code == 422
    assert "contains control characters" in response.json["error"]


def test_projects_are_created_by_operations_and_run_by_their_members(
    client: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    body = {"name": "mail", "description": "Mail relays", "branch": "feature/mail",
            "classes": ["role::mail"], "variables": {"relay": "smtp.example.org"}}
    assert client.post("/v1/projects", json=body, headers=basic("carol")).status_code == 403
    created = client.post("/v1/projects", json=body, headers=basic("olga"))
    assert created.status_code == 201, created.json
    assert (created.json["members"], created.json["owners"]) == (["olga"], ["olga"])
    try:
        assert client.post("/v1/projects", json=body, headers=basic("olga")).status_code == 409
        # Members: anyone in the project may add members; only owners add owners.
        added = client.post("/v1/projects/mail/members", json={"uid": "carol"},
                            headers=basic("olga"))
        assert added.status_code == 200, added.json
        assert client.post("/v1/projects/mail/members", json={"uid": "dave", "owner": True},
                           headers=basic("carol")).status_code == 403
        assert client.post("/v1/projects/mail/members", json={"uid": "dave"},
                           headers=basic("carol")).status_code == 200
        assert client.post("/v1/projects/mail/members", json={"uid": "nobody"},
                           headers=basic("carol")).status_code == 404
        # A member changes the project's branch and settings; the ENC follows.
        changed = client.patch("/v1/projects/mail", json={"branch": "production",
                                                          "variables": {"relay": "mx"}},
                               headers=basic("dave"))
        assert changed.status_code == 200, changed.json
        assert (changed.json["branch"], changed.json["variables"]) == (
            "production", {"relay": "mx"})
        assert client.patch("/v1/projects/mail", json={"global": True},
                            headers=basic("dave")).status_code == 403
        # Global: only operations may change it or its hosts from now on.
        assert client.patch("/v1/projects/mail", json={"global": True},
                            headers=basic("olga")).status_code == 200
        assert client.patch("/v1/projects/mail", json={"branch": "x"},
                            headers=basic("dave")).status_code == 403
        host = {"name": "mx1.mail.example.org", "classes": ["postfix"]}
        assert client.post("/v1/projects/mail/hosts", json=host,
                           headers=basic("dave")).status_code == 403
        assert client.post("/v1/projects/mail/hosts", json=host,
                           headers=basic("olga")).status_code == 201
        client.delete("/v1/hosts/mx1.mail.example.org", headers=basic("olga"))
        # In a global project even leaving goes through operations.
        refused = client.delete("/v1/projects/mail/members/dave", headers=basic("dave"))
        assert refused.status_code == 403
        assert "global" in refused.json["error"]
        assert client.patch("/v1/projects/mail", json={"global": False},
                            headers=basic("olga")).status_code == 200
        # Leaving, removing, and the last member.
        assert client.delete("/v1/projects/mail/members/dave",
                             headers=basic("dave")).status_code == 200
        assert client.delete("/v1/projects/mail/members/olga",
                             headers=basic("carol")).status_code == 403
        assert client.delete("/v1/projects/mail/members/carol",
                             headers=basic("olga")).status_code == 200
        last = client.delete("/v1/projects/mail/members/olga", headers=basic("olga"))
        assert last.status_code == 409
        actions = [c["action"] for c in client.get("/v1/changes?project=mail",
                                                  headers=basic("olga")).json]
        assert actions[-1] == "project.create"
        assert actions.count("project.member.add") == 2
        assert actions.count("project.update") == 3
    finally:
        connection = slapd.connect()
        connection.delete_s(f"cn=mail,{PROJECTS}")
        connection.unbind_s()


@pytest.mark.parametrize(
    ("body", "message"),
    [({"name": "Bad Name"}, "'Bad Name' is not a project name"),
     # A DNS label: it is the second label of the project's hosts' names.
     ({"name": "trailing-"}, "'trailing-' is not a project name"),
     ({"name": "ok", "colour": 1}, "unknown fields: colour"),
     ({"name": "ok", "global": "yes"}, "global must be of type boolean"),
     ({"name": "ok", "classes": ["Bad"]}, "not a Puppet class name"),
     ({"name": "ok", "description": "two\nlines"}, "one line")],
)
def test_bad_project_documents(client: FlaskClient, body: Any, message: str) -> None:
    before = audit_rows(client)
    response = client.post("/v1/projects", json=body, headers=basic("olga"))
    assert response.status_code == 422, response.json
    assert message in response.json["error"]
    assert audit_rows(client) == before


def test_failed_audit_commit_undoes_the_directory_write(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None, postgres: ThrowawayPostgres
) -> None:
    """The database refuses the audit record at the COMMIT after the directory write (the one
    that marks the pending record done)."""
    migrate(postgres.url)
    engine = engine_for(postgres.url)
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE FUNCTION refuse_undo_me() RETURNS trigger AS $$ BEGIN "
            "IF NEW.target LIKE 'undo-me%' AND NEW.state = 'done' "
            "THEN RAISE EXCEPTION 'refused at commit'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"))
        connection.execute(text(
            "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON changes "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_undo_me()"))
    secret = tmp_path / "writer.secret"
    secret.write_text(slapd.root_password)
    app = create_app(parse(yaml.safe_dump({
        "ldap": {"uri": slapd.ldapi_uri, "base": BASE},
        "api": {"database": postgres.url, "domain": "example.org", "writer_dn": slapd.root_dn,
                "writer_password_file": str(secret)}}), "test"))
    try:
        response = app.test_client().post(
            "/v1/projects/web/hosts", headers=basic("carol"),
            json={"name": "undo-me.web.example.org", "classes": ["base"]})
        assert response.status_code == 503
        assert "the change was undone" in response.json["error"]
        assert host_entry(slapd, "undo-me.web.example.org") is None  # written, then undone
        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM changes")).scalar() == 0
    finally:
        app.extensions["opslab.engine"].dispose()
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()


# Who may do what, endpoint by endpoint.

MATRIX_HOST = "matrix.web.example.org"


@pytest.fixture
def matrix(client: FlaskClient, slapd: ThrowawaySlapd) -> Iterator[dict[str, dict[str, str]]]:
    """Credentials of every kind of caller, with a host in project web and one elsewhere."""
    own = create(client, {"name": MATRIX_HOST}).json["token"]
    other = create(client, {"name": "elsewhere.tools.example.org"}, who="olga",
                   project="tools").json["token"]
    connection = slapd.connect()  # alice owns web in the example directory
    connection.modify_s(f"uid=alice,{PEOPLE}", [(ldap.MOD_ADD, "userPassword", [b"alice-pw"])])
    connection.unbind_s()
    PASSWORDS["alice"] = "alice-pw"
    yield {"anonymous": {}, "non-member": basic("dave"), "member": basic("carol"),
           "owner": basic("alice"), "operations": basic("olga"),
           "own host token": bearer(own), "other host token": bearer(other)}
    del PASSWORDS["alice"]
    connection = slapd.connect()
    connection.modify_s(f"uid=alice,{PEOPLE}", [(ldap.MOD_DELETE, "userPassword", None)])
    connection.unbind_s()
    for name, who in ((MATRIX_HOST, "olga"), ("elsewhere.tools.example.org", "olga")):
        client.delete(f"/v1/hosts/{name}", headers=basic(who))


REPORT = {"status": "unchanged", "exit_code": 0}
# Reading is open to every person; a host token reads only its own host.
READ_HOST = {"anonymous": 401, "non-member": 200, "member": 200, "owner": 200, "operations": 200,
             "own host token": 200, "other host token": 403}
READ_PEOPLE = {**READ_HOST, "own host token": 403}
MATRIX = [
    # (method, path, body, {caller: expected status})
    ("GET", f"/v1/nodes/{MATRIX_HOST}", None, READ_HOST),
    ("GET", f"/v1/nodes/{MATRIX_HOST}/target", None, READ_HOST),
    ("GET", f"/v1/hosts/{MATRIX_HOST}", None, READ_HOST),
    ("GET", f"/v1/hosts/{MATRIX_HOST}/reports", None, READ_HOST),
    ("GET", "/v1/projects/web/reports", None, READ_PEOPLE),
    ("GET", "/v1/projects/web", None, READ_PEOPLE),
    ("GET", "/v1/hosts?project=web", None, READ_PEOPLE),
    ("GET", "/v1/projects/web/instance-defaults", None, READ_PEOPLE),
    ("PUT", "/v1/projects/web/instance-defaults", {"image": None, "flavor": None},
     {"anonymous": 401, "non-member": 403, "member": 200, "owner": 200, "operations": 200,
      "own host token": 403, "other host token": 403}),
    ("PATCH", f"/v1/hosts/{MATRIX_HOST}", {"variables": {"x": "1"}},
     {"anonymous": 401, "non-member": 403, "member": 200, "owner": 200, "operations": 200,
      "own host token": 403, "other host token": 403}),
    ("POST", f"/v1/hosts/{MATRIX_HOST}/reports", REPORT,
     {"anonymous": 401, "non-member": 403, "member": 403, "owner": 403, "operations": 403,
      "own host token": 201, "other host token": 403}),
    ("PUT", f"/v1/hosts/{MATRIX_HOST}/smoke",
     {"checked_at": "2026-11-01T00:00:00", "passed": 1, "failed": 0, "skipped": 0},
     {"anonymous": 401, "non-member": 403, "member": 403, "owner": 403, "operations": 403,
      "own host token": 200, "other host token": 403}),
    ("POST", "/v1/projects/web/log", {"message": "matrix"},
     {"anonymous": 401, "non-member": 403, "member": 201, "owner": 201, "operations": 201,
      "own host token": 403, "other host token": 403}),
    ("GET", "/v1/changes", None,
     {"anonymous": 401, "non-member": 200, "member": 200, "owner": 200, "operations": 200,
      "own host token": 403, "other host token": 403}),
    ("POST", "/v1/projects", {"name": "matrix-created"},
     {"anonymous": 401, "non-member": 403, "member": 403, "owner": 403, "operations": 201,
      "own host token": 403, "other host token": 403}),
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX,
                         ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_authorization_matrix(client: FlaskClient, slapd: ThrowawaySlapd,
                              matrix: dict[str, dict[str, str]], method: str, path: str,
                              body: Any, expected: dict[str, int]) -> None:
    seen = {}
    for caller, headers in matrix.items():
        response = client.open(path, method=method, json=body, headers=headers)
        seen[caller] = response.status_code
        if response.status_code >= 400:
            assert response.json["error"], (caller, response.json)
        if path == "/v1/projects" and response.status_code == 201:
            connection = slapd.connect()
            connection.delete_s(f"cn=matrix-created,{PROJECTS}")
            connection.unbind_s()
    assert seen == expected


def test_owners_may_create_projects_when_configured(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None
) -> None:
    database = f"sqlite:///{tmp_path / 'api.sqlite'}"
    migrate(database)
    connection = slapd.connect()  # dave owns a project of his own
    connection.add_s(f"cn=daves,{PROJECTS}", [
        ("objectClass", [b"groupOfNames"]), ("cn", [b"daves"]),
        ("member", [f"uid=dave,{PEOPLE}".encode()]), ("owner", [f"uid=dave,{PEOPLE}".encode()])])
    connection.unbind_s()
    try:
        for allowed, expected in ((False, 403), (True, 201)):
            app = create_app(api_config(tmp_path, slapd, database,
                                        owners_create_projects=allowed))
            response = app.test_client().post("/v1/projects", json={"name": "daves-second"},
                                              headers=basic("dave"))
            assert response.status_code == expected, response.json
        # carol is a member of web but owns nothing: still refused.
        assert app.test_client().post("/v1/projects", json={"name": "carols"},
                                      headers=basic("carol")).status_code == 403
    finally:
        connection = slapd.connect()
        for name in ("daves", "daves-second"):
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                connection.delete_s(f"cn={name},{PROJECTS}")
        connection.unbind_s()


def test_the_migrations_build_the_schema_the_models_describe(database: str) -> None:
    """A model changed without a migration (or the reverse) shows here, on every database.

    Column types are left out: the first migration's ``duration`` is a FLOAT
    where the model says Double, which every database stores alike.
    """
    engine = engine_for(database)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": False})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()
