"""The API attacked: by members of other projects, with hostile names and bodies.

Each test here is one hole found when the running system was attacked
(issue 9); it failed before its fix. Real slapd, real SQLite (PostgreSQL and
MariaDB where the database matters), Flask's test client, and the real ENC
(opslab-enc) to show that a refused write left every classification as it was.
"""

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import ldap
import pytest
import yaml
from flask.testing import FlaskClient
from openapi_spec_validator import validate as validate_openapi

from opslab.api.app import create_app
from opslab.api.contract import Contract
from opslab.slapd import ThrowawaySlapd
from tests.conftest import (
    BASE,
    HOSTS,
    PEOPLE,
    PROJECTS,
    EncRunner,
    api_config,
    basic,
    bearer,
    legacy_ldif,
)
from tests.served_api import ServedApi

ATOM = "{http://www.w3.org/2005/Atom}"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


@pytest.fixture
def api(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[FlaskClient]:
    """The API on SQLite (its default store), with the default api.max_body."""
    app = create_app(api_config(tmp_path, slapd))
    with app.test_client() as client:
        yield client


@contextlib.contextmanager
def entries(slapd: ThrowawaySlapd, ldif: str) -> Iterator[None]:
    """Entries added for one test, removed after it (children first)."""
    dns = [line.removeprefix("dn: ") for line in ldif.splitlines() if line.startswith("dn: ")]
    slapd.add_ldif(ldif)
    try:
        yield
    finally:
        connection = slapd.connect()
        for dn in reversed(dns):
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                connection.delete_s(dn)
        connection.unbind_s()


def delete_entry(slapd: ThrowawaySlapd, dn: str) -> None:
    connection = slapd.connect()
    with contextlib.suppress(ldap.NO_SUCH_OBJECT):
        connection.delete_s(dn)
    connection.unbind_s()


def classification(run_enc: EncRunner, config_file: Path, certname: str) -> Any:
    """What the real opslab-enc prints for ``certname`` (its exit status, its YAML)."""
    result = run_enc(f"--config={config_file}", certname)
    return result.returncode, yaml.safe_load(result.stdout) if result.stdout else None


# 1. A member can take over legacy hosts.

@pytest.mark.parametrize(
    ("name", "why"),
    [
        # The legacy entry cn=oldmail classifies every oldmail.* certname today.
        ("oldmail", "found by the name 'oldmail'"),
        ("oldmail.web.example.org", "found by the name 'oldmail'"),
        # legacy-base is oldmail's parentNode.
        ("legacy-base", "found by the name 'legacy-base'"),
    ],
)
def test_a_member_cannot_name_a_host_over_a_legacy_entry(
    api: FlaskClient, run_enc: EncRunner, config_file: Path, name: str, why: str
) -> None:
    before = classification(run_enc, config_file, "oldmail")
    assert before[0] == 0
    assert "legacy::mail" in before[1]["classes"]

    response = api.post("/v1/projects/web/hosts", headers=basic("carol"),
                        json={"name": name, "classes": ["evil"], "branch": "evil"})

    assert response.status_code == 409, response.json
    assert why in response.json["error"]
    assert classification(run_enc, config_file, "oldmail") == before


def test_a_host_lives_in_its_projects_namespace(api: FlaskClient, slapd: ThrowawaySlapd) -> None:
    # A name outside web's namespace: another project's, or another domain's.
    for name in ("x.tools.example.org", "builder.example.org", "mail.example.com", "a.b"):
        response = api.post("/v1/projects/web/hosts", headers=basic("carol"), json={"name": name})
        assert response.status_code == 422, (name, response.json)
        assert "not in project web's namespace" in response.json["error"]
    # A label becomes LABEL.PROJECT.DOMAIN.
    created = api.post("/v1/projects/web/hosts", headers=basic("carol"), json={"name": "ns1"})
    assert created.status_code == 201, created.json
    assert created.json["host"]["name"] == "ns1.web.example.org"
    api.delete("/v1/hosts/ns1.web.example.org", headers=basic("carol"))


def test_a_host_never_shadows_an_entry_of_its_name_or_a_parent_reference(
    api: FlaskClient, slapd: ThrowawaySlapd, run_enc: EncRunner, config_file: Path
) -> None:
    legacy = (legacy_ldif("shop.web.example.org", "puppetClass: legacy::shop") + "\n"
              + legacy_ldif("child", "parentNode: base.web.example.org"))
    with entries(slapd, legacy):
        before = classification(run_enc, config_file, "shop.web.example.org")
        for name, why in (("shop", "found by the name 'shop.web.example.org'"),
                          ("base", "names 'base.web.example.org' as its parentNode")):
            response = api.post("/v1/projects/web/hosts", headers=basic("carol"),
                                json={"name": name, "classes": ["evil"]})
            assert response.status_code == 409, response.json
            assert why in response.json["error"]
        assert classification(run_enc, config_file, "shop.web.example.org") == before
        # The parent stays missing: the child is still an error, not a member's host.
        assert classification(run_enc, config_file, "child")[0] == 4


def test_a_project_entry_is_never_a_node(api: FlaskClient) -> None:
    # cn=web (a project, so a puppetClient too) used to answer the short name
    # "web": any certname web.* without an entry was classified as project web ...
    assert api.get("/v1/nodes/web.tools.example.org", headers=basic("olga")).status_code == 404
    # ... and a host web.web.example.org could not be named without "shadowing" it.
    created = api.post("/v1/projects/web/hosts", headers=basic("carol"), json={"name": "web"})
    assert created.status_code == 201, created.json
    assert created.json["host"]["name"] == "web.web.example.org"
    api.delete("/v1/hosts/web.web.example.org", headers=basic("carol"))


# 2. GET /v1/nodes/NAME returns what classifies NAME: a token reads only its own entry's.

def test_a_token_reads_only_the_classification_of_its_own_entry(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    token = api.post("/v1/projects/web/hosts", headers=basic("carol"),
                     json={"name": "gone.web.example.org"}).json["token"]
    assert api.get("/v1/nodes/gone.web.example.org", headers=bearer(token)).status_code == 200
    with entries(slapd, legacy_ldif("gone", "puppetClass: legacy::secretive")):
        # The host's entry is removed by hand: its token is still there, and the
        # legacy entry cn=gone now classifies the name.
        delete_entry(slapd, f"dc=gone.web.example.org,{HOSTS}")
        refused = api.get("/v1/nodes/gone.web.example.org", headers=bearer(token))
        assert refused.status_code == 403
        assert "not by the entry this token was issued for" in refused.json["error"]
        assert api.get("/v1/nodes/gone.web.example.org/target",
                       headers=bearer(token)).status_code == 403
        # People read what classifies it, whatever that is.
        node = api.get("/v1/nodes/gone.web.example.org", headers=basic("dave"))
        assert "legacy::secretive" in node.json["classes"]


# 3. Hosts whose project comes from their name.

def test_a_host_named_in_a_project_belongs_to_it_everywhere(api: FlaskClient) -> None:
    web1 = api.get("/v1/hosts/web1.web.example.org", headers=basic("dave"))
    assert web1.status_code == 200, web1.json
    assert web1.json["project"] == "web"
    names = [host["name"] for host in api.get("/v1/hosts?project=web",
                                               headers=basic("dave")).json]
    assert "web1.web.example.org" in names
    # Its project's members change it; others may not.
    assert api.patch("/v1/hosts/web1.web.example.org", headers=basic("dave"),
                     json={"variables": {"x": "1"}}).status_code == 403
    changed = api.patch("/v1/hosts/web1.web.example.org", headers=basic("carol"),
                        json={"variables": {"cluster": "codfw", "x": "1"}})
    assert changed.status_code == 200, changed.json
    # Only the Puppet settings were written: no opslabProject appeared.
    assert changed.json["project"] == "web"
    assert api.get("/v1/hosts?project=web&var=x=1", headers=basic("dave")).json[0]["name"] \
        == "web1.web.example.org"
    api.patch("/v1/hosts/web1.web.example.org", headers=basic("carol"),
              json={"variables": {"cluster": "codfw"}})


# 6. A locked member keeps passwordless sudo.

def test_only_people_with_an_account_get_sudo(api: FlaskClient, slapd: ThrowawaySlapd) -> None:
    people = "".join(
        f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
        f"objectClass: shadowAccount\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
        f"uidNumber: {number}\ngidNumber: {number}\nhomeDirectory: /home/{uid}\n{extra}\n"
        for uid, number, extra in (
            ("sudo-ok", 6001, "uid: root\n"),  # a second uid value changes nothing
            ("sudo-locked", 6002, "shadowExpire: 1\n"),  # expired on 1970-01-02
            ("sudo-system", 999, ""),  # below accounts.min_uid
        ))
    project = (f"dn: cn=sudoers,{PROJECTS}\nobjectClass: groupOfNames\nobjectClass: puppetClient\n"
               f"objectClass: opslabNode\ncn: sudoers\n"
               + "".join(f"member: uid={uid},{PEOPLE}\n"
                         for uid in ("sudo-ok", "sudo-locked", "sudo-system", "nobody-at-all")))
    host = (f"dn: dc=box.sudoers.example.org,{HOSTS}\nobjectClass: dNSDomain\n"
            "objectClass: domainRelatedObject\nobjectClass: puppetClient\n"
            "objectClass: opslabNode\ndc: box.sudoers.example.org\n"
            "associatedDomain: box.sudoers.example.org\nopslabProject: sudoers\n")
    with entries(slapd, people + project + "\n" + host):
        target = api.get("/v1/nodes/box.sudoers.example.org/target", headers=basic("dave"))
        assert target.status_code == 200, target.json
        assert target.json["sudo"] == ["sudo-ok"]


# 11. A re-used host name inherits the deleted host's state, last run and reports.

REPORT = {"status": "failed", "exit_code": 4, "commit": "a" * 40,
          "resources": {"changed": 0, "failed": 1},
          "failed_resources": [{"resource": "Exec[old]", "messages": ["the old host's"]}]}


def test_a_host_created_again_starts_with_nothing_of_the_deleted_one(api: FlaskClient) -> None:
    name = "reused.web.example.org"
    old = api.post("/v1/projects/web/hosts", headers=basic("carol"), json={"name": name})
    old_token = old.json["token"]
    assert api.post(f"/v1/hosts/{name}/reports", json=REPORT,
                    headers=bearer(old_token)).status_code == 201
    assert api.put(f"/v1/hosts/{name}/agent", headers=bearer(old_token),
                   json={"disabled": True, "reason": "old host",
                         "changed_at": "2026-11-01T00:00:00+00:00"}).status_code == 200
    assert api.delete(f"/v1/hosts/{name}", headers=basic("carol")).status_code == 204

    new = api.post("/v1/projects/web/hosts", headers=basic("carol"), json={"name": name})
    new_token = new.json["token"]
    try:
        view = api.get(f"/v1/hosts/{name}", headers=bearer(new_token)).json
        assert (view["agent"], view["last_run"]) == (None, None)
        assert api.get(f"/v1/hosts/{name}/reports", headers=bearer(new_token)).json == []
        latest = api.get("/v1/projects/web/reports", headers=basic("dave")).json
        assert name not in [report["host"] for report in latest]
        assert api.get(f"/v1/hosts/{name}", headers=bearer(old_token)).status_code == 401
        # An older agent state than the deleted host's latest is not ignored any more.
        stored = api.put(f"/v1/hosts/{name}/agent", headers=bearer(new_token),
                         json={"disabled": False, "changed_at": "2026-10-01T00:00:00+00:00"})
        assert stored.json["disabled"] is False
        assert api.get(f"/v1/hosts/{name}", headers=bearer(new_token)).json["agent"][
            "disabled"] is False
    finally:
        api.delete(f"/v1/hosts/{name}", headers=basic("carol"))


# 12. A non-operator owner of a global project can remove its members.

def test_only_operations_change_a_global_projects_members(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    shared = (f"dn: cn=shared,{PROJECTS}\nobjectClass: groupOfNames\nobjectClass: puppetClient\n"
              f"objectClass: opslabNode\ncn: shared\nopslabGlobal: TRUE\n"
              f"member: uid=carol,{PEOPLE}\nmember: uid=dave,{PEOPLE}\n"
              f"owner: uid=carol,{PEOPLE}\n")
    with entries(slapd, shared):
        for method, path, body in (("DELETE", "/v1/projects/shared/members/dave", None),
                                   ("POST", "/v1/projects/shared/members", {"uid": "olga"})):
            refused = api.open(path, method=method, json=body, headers=basic("carol"))
            assert refused.status_code == 403, refused.json
            assert "global" in refused.json["error"]
        members = api.get("/v1/projects/shared", headers=basic("carol")).json["members"]
        assert sorted(members) == ["carol", "dave"]
        assert api.delete("/v1/projects/shared/members/dave",
                          headers=basic("olga")).status_code == 200


# 13. Bodies of the wrong type, hostile numbers and text: a 422 naming the field.

HOSTILE_REPORTS = [
    ({**REPORT, "resources": {"changed": "x"}}, "resources.changed must be of type integer"),
    ({**REPORT, "failed_resources": [1]}, "failed_resources.0 must be of type object"),
    ({**REPORT, "exit_code": 2**70}, "exit_code: 1180591620717411303424... does not fit"),
    ({**REPORT, "exit_code": 1e300}, "exit_code: 1e+300 is greater than the maximum of 255"),
    ({**REPORT, "exit_code": 2.5}, "exit_code must be of type integer"),
    ({**REPORT, "duration": -1}, "duration"),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE_REPORTS,
                         ids=[message[:30] for _, message in HOSTILE_REPORTS])
def test_hostile_report_bodies_are_refused_by_field(
    api: FlaskClient, body: Any, message: str
) -> None:
    created = api.post("/v1/projects/web/hosts", headers=basic("carol"),
                       json={"name": "rep.web.example.org"})
    try:
        response = api.post("/v1/hosts/rep.web.example.org/reports", json=body,
                            headers=bearer(created.json["token"]))
        assert response.status_code == 422, response.json
        assert message in response.json["error"]
        assert api.get("/v1/hosts/rep.web.example.org/reports", headers=basic("carol")).json == []
    finally:
        api.delete("/v1/hosts/rep.web.example.org", headers=basic("carol"))


N = '"name": "n.web.example.org"'
RAW_BODIES = [
    # (path, raw JSON text, what the message says)
    ("/v1/projects/web/hosts", '{' + N + ', "class_parameters": {"ntp": {"x": NaN}}}',
     "NaN, which is not a JSON number"),
    ("/v1/projects/web/hosts", '{' + N + ', "class_parameters": {"ntp": {"x": Infinity}}}',
     "Infinity, which is not a JSON number"),
    ("/v1/projects/web/hosts", '{' + N + ', "class_parameters": {"ntp": {"x": 1e400}}}',
     "the number 1e400 is too large"),
    ("/v1/projects/web/hosts", '{' + N + ', "class_parameters": {"a": {"b": '
     + "[" * 20000 + "]" * 20000 + "}}}", "nested more than 32 levels deep"),
    ("/v1/projects/web/log", '{"message": "restarted \\ud800 apache"}',
     "message contains a lone surrogate"),
    ("/v1/projects/web/log", '{"message": "a", "message": "b"}', "names the key 'message' twice"),
    ("/v1/projects/web/hosts", '{' + N + ', "branch": "caf\\u00e9"}',
     "branch: 'café' is not a usable branch name"),
    ("/v1/projects/web/hosts", '{' + N + ', "variables": {"x": "a\\tb"}}',
     "variables.x: 'a\\tb' must be one line of printable ASCII"),
    ("/v1/projects/web/hosts", '{' + N + ', "variables": {"x": "\\u001b[31m"}}',
     "variables.x"),
    ("/v1/projects/web/hosts", '{' + N + ', "variables": {"x": "a\\u007f"}}', "variables.x"),
    ("/v1/projects/web/hosts", '{' + N + ', "classes": ["a", "a"]}', "classes"),
]


@pytest.mark.parametrize(("path", "raw", "message"), RAW_BODIES,
                         ids=[message[:30] for _, _, message in RAW_BODIES])
def test_hostile_json_is_refused_and_changes_nothing(
    api: FlaskClient, path: str, raw: str, message: str
) -> None:
    log_before = api.get("/v1/log?limit=1000").json
    response = api.post(path, data=raw, content_type="application/json", headers=basic("carol"))
    assert response.status_code == 422, response.json
    assert message in response.json["error"]
    assert api.get("/v1/hosts/n.web.example.org", headers=basic("carol")).status_code == 404
    assert api.get("/v1/log?limit=1000").json == log_before


def test_class_parameters_are_served_as_valid_json(api: FlaskClient) -> None:
    body = {"name": "numbers.web.example.org", "classes": ["ntp"],
            "class_parameters": {"ntp": {"big": 2**62, "small": -(2**62), "ratio": 0.5}}}
    created = api.post("/v1/projects/web/hosts", headers=basic("carol"), json=body)
    assert created.status_code == 201, created.json
    try:
        node = api.get("/v1/nodes/numbers.web.example.org", headers=basic("dave"))
        # Strict JSON: no NaN or Infinity can have been stored.
        document = json.loads(node.data, parse_constant=lambda name: pytest.fail(name))
        assert document["classes"]["ntp"] == body["class_parameters"]["ntp"]
    finally:
        api.delete("/v1/hosts/numbers.web.example.org", headers=basic("carol"))


# 14. The OpenAPI document is valid, and the API's answers are what it says.

def response_validator(contract: Contract, path: str, method: str, status: int) -> Any:
    """A validator for what the document says ``method path`` answers with ``status``."""
    template = next(template for template in contract.document["paths"]
                    if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path))
    where = ["paths", template, method.lower(), "responses", str(status)]
    documented = contract.document["paths"][template][method.lower()]["responses"][str(status)]
    if "$ref" in documented:
        where = documented["$ref"].removeprefix("#/").split("/")
    return contract.at(*where, "content", "application/json", "schema")


def test_the_openapi_document_is_valid_and_every_answer_conforms(api: FlaskClient) -> None:
    # The document as served (before the fix, openapi-spec-validator refused it).
    validate_openapi(yaml.safe_load(api.get("/v1/openapi.yaml").data))
    contract = api.application.extensions["opslab.contract"]
    created = api.post("/v1/projects/web/hosts", headers=basic("carol"),
                       json={"name": "conform.web.example.org", "classes": ["ntp"],
                             "addresses": ["192.0.2.9"],
                             "class_parameters": {"ntp": {"servers": ["a"]}}})
    assert created.status_code == 201
    name, token = "conform.web.example.org", created.json["token"]
    try:
        api.post(f"/v1/hosts/{name}/reports", json=REPORT, headers=bearer(token))
        api.put(f"/v1/hosts/{name}/agent", headers=bearer(token),
                json={"disabled": True, "reason": "testing",
                      "changed_at": "2026-11-01T00:00:00+00:00"})
        api.put(f"/v1/hosts/{name}/smoke", headers=bearer(token),
                json={"checked_at": "2026-11-01T00:00:00+00:00", "passed": 2, "failed": 1,
                      "skipped": 0, "failures": [{"class": "ntp", "check": "port",
                                                  "message": "closed"}]})
        api.post("/v1/projects/web/log", json={"message": "conformance"}, headers=basic("carol"))
        paths = [f"/v1/hosts/{name}", f"/v1/hosts/{name}/reports", f"/v1/nodes/{name}",
                 f"/v1/nodes/{name}/target", "/v1/hosts/web1.web.example.org",
                 "/v1/hosts/builder.example.org", "/v1/hosts?project=web", "/v1/projects",
                 "/v1/projects/web", "/v1/projects/web/reports",
                 "/v1/projects/web/instance-defaults", "/v1/changes",
                 "/v1/log", "/v1/projects/web/log", "/v1/nodes/web1.web.example.org"]
        for path in paths:
            response = api.get(path, headers=basic("dave"))
            assert response.status_code == 200, (path, response.json)
            validator = response_validator(contract, path.partition("?")[0], "GET", 200)
            errors = [error.message for error in validator.iter_errors(response.json)]
            assert errors == [], path
        refused = api.get("/v1/hosts/nope.web.example.org", headers=basic("dave"))
        assert list(response_validator(contract, "/v1/hosts/x", "GET", 404)
                    .iter_errors(refused.json)) == []
    finally:
        api.delete(f"/v1/hosts/{name}", headers=basic("carol"))


# 15. Times keep their UTC offset, on every database; feed entries link to what is served.

def test_times_keep_their_zone_and_feed_links_resolve(stored_client: FlaskClient) -> None:
    created = stored_client.post("/v1/projects/web/hosts", headers=basic("carol"),
                          json={"name": "times.web.example.org"})
    stored_client.post("/v1/projects/web/log", json={"message": "a time"}, headers=basic("carol"))
    try:
        token = created.json["token"]
        stored_client.post("/v1/hosts/times.web.example.org/reports",
                    json={**REPORT, "started_at": "2026-11-29T10:00:00+01:00"},
                    headers=bearer(token))
        times = [entry["at"] for entry in stored_client.get("/v1/log").json]
        times += [entry["at"] for entry in stored_client.get("/v1/projects/web/log").json]
        times += [change["at"] for change in stored_client.get("/v1/changes",
                                                         headers=basic("carol")).json]
        report = stored_client.get("/v1/hosts/times.web.example.org/reports", headers=basic("carol")
                            ).json[0]
        times += [report["received_at"], report["started_at"]]
        assert report["started_at"] == "2026-11-29T09:00:00+00:00"
        for moment in times:
            assert datetime.fromisoformat(moment).tzinfo is not None, moment
        for feed in ("/v1/log.atom", "/v1/projects/web/log.atom", "/v1/changes.atom"):
            document = ElementTree.fromstring(stored_client.get(feed, headers=basic("carol")).data)
            assert RFC3339.fullmatch(document.findtext(f"{ATOM}updated") or "")
            for entry in list(document.iter(f"{ATOM}entry"))[:5]:
                assert RFC3339.fullmatch(entry.findtext(f"{ATOM}updated") or ""), feed
                link = entry.find(f"{ATOM}link").get("href")
                assert link == entry.findtext(f"{ATOM}id")
                served = stored_client.get(link.removeprefix("https://opslab.example.org"),
                                    headers=basic("carol"))
                assert served.status_code == 200, link
    finally:
        stored_client.delete("/v1/hosts/times.web.example.org", headers=basic("carol"))


# kill -9 between the directory write and the commit that records it.

def test_a_change_killed_after_its_directory_write_stays_in_the_audit_log(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None
) -> None:
    config = api_config(tmp_path, slapd)
    name = "killed.web.example.org"
    child = os.fork()
    if child == 0:  # the API, killed the moment its directory write is made
        try:
            app = create_app(config)
            access = app.extensions["opslab.directory"]
            add = access.add

            def add_then_die(dn: str, attributes: dict[str, list[str]]) -> None:
                add(dn, attributes)
                os.kill(os.getpid(), signal.SIGKILL)

            access.add = add_then_die
            app.test_client().post("/v1/projects/web/hosts", json={"name": name},
                                   headers=basic("carol"))
        finally:
            os._exit(1)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    try:
        client = create_app(config).test_client()
        assert client.get(f"/v1/hosts/{name}", headers=basic("carol")).status_code == 200
        changes = client.get(f"/v1/changes?target={name}", headers=basic("carol")).json
        assert [(change["action"], change["state"]) for change in changes] == [
            ("host.create", "pending")]
    finally:
        delete_entry(slapd, f"dc={name},{HOSTS}")


# What the attack on the fixes found (each failed before its fix).

def person_ldif(uid: str, *lines: str) -> str:
    extra = "".join(f"{line}\n" for line in lines)
    return (f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
            f"objectClass: shadowAccount\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
            f"uidNumber: 7000\ngidNumber: 7000\nhomeDirectory: /home/{uid}\n"
            f"userPassword: {uid}-pw\n{extra}")


def password(uid: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{uid}:{uid}-pw".encode()).decode()}


def test_a_locked_or_system_account_cannot_use_the_api(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    people = (person_ldif("expired", "shadowExpire: 1") + "\n"
              + person_ldif("sysuser").replace("uidNumber: 7000", "uidNumber: 0"))
    project = (f"dn: cn=lockedout,{PROJECTS}\nobjectClass: groupOfNames\ncn: lockedout\n"
               f"member: uid=expired,{PEOPLE}\nmember: uid=sysuser,{PEOPLE}\n"
               f"member: uid=carol,{PEOPLE}\n")
    with entries(slapd, people + "\n" + project):
        for who in ("expired", "sysuser"):
            refused = api.post("/v1/projects/lockedout/members", json={"uid": "dave"},
                               headers=password(who))
            assert refused.status_code == 403, refused.json
            assert "may not be used" in refused.json["error"]
        members = api.get("/v1/projects/lockedout", headers=basic("carol")).json["members"]
        assert "dave" not in members


def test_a_member_that_is_no_login_name_is_left_out_of_sudo(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    people = person_ldif("j.doe") + "\n" + person_ldif("plain")
    project = (f"dn: cn=oddnames,{PROJECTS}\nobjectClass: groupOfNames\nobjectClass: puppetClient\n"
               f"cn: oddnames\nmember: uid=j.doe,{PEOPLE}\nmember: uid=plain,{PEOPLE}\n\n"
               + f"dn: dc=x.oddnames.example.org,{HOSTS}\nobjectClass: dNSDomain\n"
               "objectClass: domainRelatedObject\nobjectClass: puppetClient\n"
               "dc: x.oddnames.example.org\nassociatedDomain: x.oddnames.example.org\n")
    with entries(slapd, people + "\n" + project):
        target = api.get("/v1/nodes/x.oddnames.example.org/target", headers=basic("dave")).json
        assert (target["sudo"], target["uid_numbers"]) == (["plain"], {"plain": 7000})


def test_membership_is_what_the_server_says(api: FlaskClient, slapd: ThrowawaySlapd) -> None:
    # A member value spelt otherwise than the API would (an escaped trailing
    # space): the server's DN equality takes it as erin; so must the API.
    people = person_ldif("erin")
    project = (f"dn: cn=spelt,{PROJECTS}\nobjectClass: groupOfNames\ncn: spelt\n"
               f"member: uid=erin\\20,{PEOPLE}\nmember: uid=carol,{PEOPLE}\n")
    with entries(slapd, people + "\n" + project):
        assert "erin" in api.get("/v1/projects/spelt", headers=basic("carol")).json["members"]
        assert api.post("/v1/projects/spelt/log", json={"message": "erin here"},
                        headers=password("erin")).status_code == 201
        removed = api.delete("/v1/projects/spelt/members/erin", headers=basic("olga"))
        assert removed.status_code == 200, removed.json
        assert removed.json["members"] == ["carol"]
        assert api.post("/v1/projects/spelt/log", json={"message": "erin again"},
                        headers=password("erin")).status_code == 403


def test_a_project_cannot_be_created_over_hosts_that_belong_to_nobody(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None
) -> None:
    client = create_app(api_config(tmp_path, slapd, owners_create_projects=True)).test_client()
    stray = (f"dn: dc=db1.mail.example.org,{HOSTS}\nobjectClass: dNSDomain\n"
             "objectClass: domainRelatedObject\nobjectClass: puppetClient\n"
             "dc: db1.mail.example.org\nassociatedDomain: db1.mail.example.org\n")
    owned = (f"dn: cn=daves,{PROJECTS}\nobjectClass: groupOfNames\ncn: daves\n"
             f"member: uid=dave,{PEOPLE}\nowner: uid=dave,{PEOPLE}\n")
    with entries(slapd, stray + "\n" + owned):
        refused = client.post("/v1/projects", json={"name": "mail"}, headers=basic("dave"))
        assert refused.status_code == 409, refused.json
        assert "db1.mail.example.org" in refused.json["error"]
        assert client.get("/v1/hosts/db1.mail.example.org", headers=basic("dave")
                          ).json["project"] is None
        # Operations may: creating the project for hosts named into it is theirs to do.
        assert client.post("/v1/projects", json={"name": "mail"},
                           headers=basic("olga")).status_code == 201
        delete_entry(slapd, f"cn=mail,{PROJECTS}")


def test_the_feed_stays_well_formed_xml(api: FlaskClient) -> None:
    refused = api.post("/v1/projects/web/log", json={"message": "bad \uffff here"},
                       headers=basic("carol"))
    assert refused.status_code == 422
    assert "noncharacters" in refused.json["error"]
    ElementTree.fromstring(api.get("/v1/log.atom").data)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                    "1969-12-31T23:59:59+00:00"])
def test_dates_out_of_range_are_refused(api: FlaskClient, moment: str) -> None:
    created = api.post("/v1/projects/web/hosts", headers=basic("carol"),
                       json={"name": "dates.web.example.org"})
    token = created.json["token"]
    try:
        for method, path, body in (
                ("PUT", "agent", {"disabled": False, "changed_at": moment}),
                ("POST", "reports", {"status": "unchanged", "exit_code": 0,
                                     "started_at": moment})):
            response = api.open(f"/v1/hosts/dates.web.example.org/{path}", method=method,
                                json=body, headers=bearer(token))
            assert response.status_code == 422, response.json
    finally:
        api.delete("/v1/hosts/dates.web.example.org", headers=basic("carol"))


def test_a_name_created_twice_at_once_is_a_conflict(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    served = ServedApi(tmp_path, slapd, BASE)
    served.start()
    try:
        for round in range(8):
            name = f"race{round}.web.example.org"
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda same: served.request(
                    "POST", "/v1/projects/web/hosts", body={"name": same},
                    headers=basic("carol"))[0], [name, name]))
            assert sorted(answers) == [201, 409], answers
            served.request("DELETE", f"/v1/hosts/{name}", headers=basic("carol"))
    finally:
        served.stop()


def test_hosts_written_for_the_old_terminus_are_hosts(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    with entries(slapd, legacy_ldif("oldweb", "puppetClass: legacy::web")):
        oldweb = api.get("/v1/hosts/oldweb", headers=basic("dave"))
        assert oldweb.status_code == 200, oldweb.json
        assert (oldweb.json["classes"], oldweb.json["project"]) == (["legacy::web"], None)
        # It belongs to no project: operations change it.
        assert api.patch("/v1/hosts/oldweb", json={"variables": {"relay": "x"}},
                         headers=basic("carol")).status_code == 403
        changed = api.patch("/v1/hosts/oldweb", headers=basic("olga"),
                            json={"class_parameters": {"legacy::web": {"size": 1}}})
        assert changed.status_code == 200, changed.json
        refused = api.patch("/v1/hosts/oldweb", json={"addresses": ["192.0.2.1"]},
                            headers=basic("olga"))
        assert refused.status_code == 422
        assert api.delete("/v1/hosts/oldweb", headers=basic("olga")).status_code == 204


def test_a_project_named_with_other_case_is_the_project(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    host = (f"dn: dc=cased.example.org,{HOSTS}\nobjectClass: dNSDomain\n"
            "objectClass: domainRelatedObject\nobjectClass: puppetClient\n"
            "objectClass: opslabNode\ndc: cased.example.org\n"
            "associatedDomain: cased.example.org\nopslabProject: Web\n")
    with entries(slapd, host):
        assert api.get("/v1/hosts/cased.example.org", headers=basic("dave")
                       ).json["project"] == "web"
        assert "cased.example.org" in [h["name"] for h in api.get(
            "/v1/hosts?project=web", headers=basic("dave")).json]
        assert api.patch("/v1/hosts/cased.example.org", json={"variables": {"x": "1"}},
                         headers=basic("carol")).status_code == 200


def test_an_agent_state_from_the_future_is_dated_when_it_arrived(api: FlaskClient) -> None:
    created = api.post("/v1/projects/web/hosts", headers=basic("carol"),
                       json={"name": "clock.web.example.org"})
    token = created.json["token"]
    try:
        api.put("/v1/hosts/clock.web.example.org/agent", headers=bearer(token),
                json={"disabled": True, "changed_at": "2036-01-01T00:00:00+00:00"})
        now = datetime.now().astimezone().isoformat()
        api.put("/v1/hosts/clock.web.example.org/agent", headers=bearer(token),
                json={"disabled": False, "changed_at": now})
        view = api.get("/v1/hosts/clock.web.example.org", headers=basic("carol")).json
        assert view["agent"]["disabled"] is False
    finally:
        api.delete("/v1/hosts/clock.web.example.org", headers=basic("carol"))


def test_an_idempotency_key_belongs_to_one_incarnation(api: FlaskClient) -> None:
    name = "keyed.web.example.org"
    key = {"Idempotency-Key": "same-key"}
    old = api.post("/v1/projects/web/hosts", headers=basic("carol"), json={"name": name})
    assert api.post(f"/v1/hosts/{name}/reports", json=REPORT,
                    headers={**bearer(old.json["token"]), **key}).status_code == 201
    api.delete(f"/v1/hosts/{name}", headers=basic("carol"))
    new = api.post("/v1/projects/web/hosts", headers=basic("carol"), json={"name": name})
    try:
        fresh = api.post(f"/v1/hosts/{name}/reports", headers={**bearer(new.json["token"]), **key},
                         json={"status": "unchanged", "exit_code": 0})
        assert fresh.status_code == 201, fresh.json
        assert [r["status"] for r in api.get(f"/v1/hosts/{name}/reports",
                                             headers=basic("carol")).json] == ["unchanged"]
    finally:
        api.delete(f"/v1/hosts/{name}", headers=basic("carol"))


def test_the_heads_of_a_hanging_remote_hold_no_request(hanging_server: int) -> None:
    import threading

    from opslab.api.heads import BranchHeads

    heads = BranchHeads(f"http://127.0.0.1:{hanging_server}/puppet.git", ttl=0.2, timeout=3)
    assert heads.commit("production") is None  # the first listing is waited for, and fails
    time.sleep(0.3)  # stale: the next request lists again
    refresher = threading.Thread(target=heads.commit, args=("production",))
    refresher.start()
    time.sleep(0.2)
    # Another request meanwhile answers from what is known, without waiting.
    assert heads.commit("production") is None
    assert refresher.is_alive()
    refresher.join(timeout=10)


def test_a_person_with_a_photo_is_a_member_like_any_other(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    import base64

    photo = base64.b64encode(bytes(range(256))).decode()  # not UTF-8
    with entries(slapd, person_ldif("pictured", f"jpegPhoto:: {photo}")):
        added = api.post("/v1/projects/web/members", json={"uid": "pictured"},
                         headers=basic("carol"))
        assert added.status_code == 200, added.json
        assert "pictured" in added.json["members"]
        assert api.post("/v1/projects/web/log", json={"message": "smile"},
                        headers=password("pictured")).status_code == 201
        assert api.delete("/v1/projects/web/members/pictured",
                          headers=basic("olga")).status_code == 200


def test_a_person_locked_out_loses_sudo_within_the_account_ttl(
    api: FlaskClient, slapd: ThrowawaySlapd, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslab.api import sudo

    monkeypatch.setattr(sudo, "ACCOUNT_TTL", 0.5)
    project = (f"dn: cn=ttl,{PROJECTS}\nobjectClass: groupOfNames\nobjectClass: puppetClient\n"
               f"cn: ttl\nmember: uid=soonlocked,{PEOPLE}\n\n"
               f"dn: dc=x.ttl.example.org,{HOSTS}\nobjectClass: dNSDomain\n"
               "objectClass: domainRelatedObject\nobjectClass: puppetClient\n"
               "dc: x.ttl.example.org\nassociatedDomain: x.ttl.example.org\n")
    with entries(slapd, person_ldif("soonlocked") + "\n" + project):
        def sudo() -> list[str]:
            target = api.get("/v1/nodes/x.ttl.example.org/target", headers=basic("dave"))
            return list(target.json["sudo"])

        assert sudo() == ["soonlocked"]
        connection = slapd.connect()
        connection.modify_s(f"uid=soonlocked,{PEOPLE}",
                            [(ldap.MOD_ADD, "shadowExpire", [b"1"])])
        connection.unbind_s()
        time.sleep(0.6)
        assert sudo() == []
