"""The API attacked: by members of other projects, with hostile names and bodies.

Each test here is one hole found when the running system was attacked
(issue 9); it failed before its fix. Real slapd, real SQLite (PostgreSQL and
MariaDB where the database matters), Flask's test client, and the real ENC
(opslab-enc) to show that a refused write left every classification as it was.
"""

import contextlib
import json
import re
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
from opslab.api.store import migrate
from opslab.config import parse
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, HOSTS, PEOPLE, PROJECTS, EncRunner, basic, bearer, legacy_ldif

ATOM = "{http://www.w3.org/2005/Atom}"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


@pytest.fixture
def api(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[FlaskClient]:
    """The API on SQLite (its default store)."""
    secret = tmp_path / "writer.secret"
    secret.write_text(slapd.root_password)
    database = f"sqlite:///{tmp_path / 'api.sqlite'}"
    migrate(database)
    app = create_app(parse(yaml.safe_dump({
        "ldap": {"uri": slapd.ldapi_uri, "base": BASE},
        "api": {"database": database, "domain": "example.org", "writer_dn": slapd.root_dn,
                "writer_password_file": str(secret), "public_url": "https://opslab.example.org"},
    }), "test"))
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
        api.post("/v1/projects/web/log", json={"message": "conformance"}, headers=basic("carol"))
        paths = [f"/v1/hosts/{name}", f"/v1/hosts/{name}/reports", f"/v1/nodes/{name}",
                 f"/v1/nodes/{name}/target", "/v1/hosts/web1.web.example.org",
                 "/v1/hosts/builder.example.org", "/v1/hosts?project=web", "/v1/projects",
                 "/v1/projects/web", "/v1/projects/web/reports", "/v1/changes",
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

def test_times_keep_their_zone_and_feed_links_resolve(client: FlaskClient) -> None:
    created = client.post("/v1/projects/web/hosts", headers=basic("carol"),
                          json={"name": "times.web.example.org"})
    client.post("/v1/projects/web/log", json={"message": "a time"}, headers=basic("carol"))
    try:
        token = created.json["token"]
        client.post("/v1/hosts/times.web.example.org/reports",
                    json={**REPORT, "started_at": "2026-11-29T10:00:00+01:00"},
                    headers=bearer(token))
        times = [entry["at"] for entry in client.get("/v1/log").json]
        times += [entry["at"] for entry in client.get("/v1/projects/web/log").json]
        times += [change["at"] for change in client.get("/v1/changes",
                                                         headers=basic("carol")).json]
        report = client.get("/v1/hosts/times.web.example.org/reports", headers=basic("carol")
                            ).json[0]
        times += [report["received_at"], report["started_at"]]
        assert report["started_at"] == "2026-11-29T09:00:00+00:00"
        for moment in times:
            assert datetime.fromisoformat(moment).tzinfo is not None, moment
        for feed in ("/v1/log.atom", "/v1/projects/web/log.atom", "/v1/changes.atom"):
            document = ElementTree.fromstring(client.get(feed, headers=basic("carol")).data)
            assert RFC3339.fullmatch(document.findtext(f"{ATOM}updated") or "")
            for entry in list(document.iter(f"{ATOM}entry"))[:5]:
                assert RFC3339.fullmatch(entry.findtext(f"{ATOM}updated") or ""), feed
                link = entry.find(f"{ATOM}link").get("href")
                assert link == entry.findtext(f"{ATOM}id")
                served = client.get(link.removeprefix("https://opslab.example.org"),
                                    headers=basic("carol"))
                assert served.status_code == 200, link
    finally:
        client.delete("/v1/hosts/times.web.example.org", headers=basic("carol"))
