"""People as accounts: created by operations, numbered without collisions, managing their
own SSH keys; projects as posix groups. Against the real slapd and ssh-keygen."""

import base64
import contextlib
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ldap
import pytest
from flask.testing import FlaskClient

from opslab.api.app import create_app
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, PASSWORDS, PEOPLE, PROJECTS, api_config, basic
from tests.served_api import ServedApi

ADMINS = "accountadmins"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Key pairs made by the real ssh-keygen: each kind's private and public text."""
    work = tmp_path_factory.mktemp("keys")
    made = {}
    for name, options in {"ed25519": ["-t", "ed25519"], "ed25519b": ["-t", "ed25519"],
                          "rsa1024": ["-t", "rsa", "-b", "1024"],
                          "rsa3072": ["-t", "rsa", "-b", "3072"],
                          "ecdsa": ["-t", "ecdsa", "-b", "256"]}.items():
        path = work / name
        subprocess.run(["ssh-keygen", "-q", *options, "-N", "", "-C", f"{name} key",
                        "-f", str(path)], check=True, timeout=60)
        made[name] = path.with_suffix(".pub").read_text().strip()
        made[f"{name}.private"] = path.read_text()
    return made


@pytest.fixture
def api(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[FlaskClient]:
    """The API with a default project (web) and a project of account admins (dave)."""
    with entry(slapd, f"dn: cn={ADMINS},{PROJECTS}\nobjectClass: groupOfNames\n"
                      f"cn: {ADMINS}\nmember: uid=dave,{PEOPLE}\n"):
        app = create_app(api_config(tmp_path, slapd, default_project="web",
                                    account_admins_project=ADMINS))
        with app.test_client() as client:
            yield client
        app.extensions["opslab.engine"].dispose()


@contextlib.contextmanager
def entry(slapd: ThrowawaySlapd, ldif: str) -> Iterator[None]:
    slapd.add_ldif(ldif)
    try:
        yield
    finally:
        connection = slapd.connect()
        with contextlib.suppress(ldap.NO_SUCH_OBJECT):
            connection.delete_s(ldif.splitlines()[0].removeprefix("dn: "))
        connection.unbind_s()


@pytest.fixture
def made(slapd: ThrowawaySlapd) -> Iterator[list[str]]:
    """The uids a test creates through the API: their entries and memberships removed
    after it."""
    uids: list[str] = []
    yield uids
    connection = slapd.connect()
    for uid in uids:
        dn = f"uid={uid},{PEOPLE}"
        with contextlib.suppress(ldap.NO_SUCH_OBJECT, ldap.NO_SUCH_ATTRIBUTE):
            connection.modify_s(f"cn=web,{PROJECTS}", [(ldap.MOD_DELETE, "member",
                                                        [dn.encode()])])
        with contextlib.suppress(ldap.NO_SUCH_OBJECT):
            connection.delete_s(dn)
    connection.unbind_s()


def create(api: FlaskClient, made: list[str], uid: str, as_: str = "olga",
           **fields: Any) -> Any:
    if uid not in PASSWORDS:  # the session's own people stay
        made.append(uid)
    return api.post("/v1/people", json={"uid": uid, "name": f"{uid.title()} Example",
                                        **fields}, headers=basic(as_))


def login(uid: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{uid}:{password}".encode()).decode()}


def stored(slapd: ThrowawaySlapd, dn: str) -> dict[str, list[bytes]]:
    connection = slapd.connect()
    try:
        [(_, attributes)] = connection.search_s(dn, ldap.SCOPE_BASE, attrlist=["*", "+"])
    finally:
        connection.unbind_s()
    return dict(attributes)


def test_operations_create_a_person_who_has_an_account_and_joins_the_default_project(
    api: FlaskClient, slapd: ThrowawaySlapd, made: list[str], keys: dict[str, str]
) -> None:
    answer = create(api, made, "nina", ssh_keys=[keys["ed25519"]], mail="nina@example.org")
    assert answer.status_code == 201, answer.json
    person, password = answer.json["person"], answer.json["password"]
    assert len(password) >= 24
    assert (person["uid"], person["name"], person["home"], person["shell"]) == (
        "nina", "Nina Example", "/home/nina", "/bin/bash")
    assert person["uid_number"] >= 10000
    assert [key["key"] for key in person["ssh_keys"]] == [keys["ed25519"]]

    entry = stored(slapd, f"uid=nina,{PEOPLE}")
    assert entry["gidNumber"] == [b"100"]
    assert {b"posixAccount", b"ldapPublicKey"} <= set(entry["objectClass"])
    # The directory holds a hash of the password, never the password itself.
    assert password.encode() not in entry["userPassword"][0]
    assert entry["userPassword"][0].startswith(b"{")

    # The password works at once, and the new person is a member of the default project.
    shown = api.get("/v1/people/nina", headers=login("nina", password))
    assert shown.status_code == 200
    assert shown.json["projects"] == ["web"]
    assert "nina" in api.get("/v1/projects/web", headers=basic("carol")).json["members"]
    actions = [change["action"] for change in
               api.get("/v1/changes?limit=5", headers=basic("olga")).json]
    assert actions[:2] == ["project.member.add", "person.create"]
    assert password not in str(api.get("/v1/changes?limit=5", headers=basic("olga")).json)


def test_only_operations_and_account_admins_create_people(
    api: FlaskClient, made: list[str]
) -> None:
    refused = create(api, made, "mallory", as_="carol")
    assert refused.status_code == 403
    assert "only operations and members of 'accountadmins'" in refused.json["error"]
    assert api.get("/v1/people/mallory", headers=basic("carol")).status_code == 404
    assert create(api, made, "ravi", as_="dave").status_code == 201


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"uid": "root"}, "system or package account"),
    ({"uid": "nobody"}, "system or package account"),
    ({"uid": "debian"}, "system or package account"),
    ({"uid": "_apt"}, "system or package account"),
    ({"uid": "systemd-network"}, "system or package account"),
    ({"name": "\u3000\u3000"}, "must hold visible characters"),
    ({"name": "Eve \u202egnp.exe"}, "invisible formatting"),
    ({"mail": "ev\u0093@example.org"}, "is not a mail address"),
    ({"uid": "Nina"}, "is not a login name"),
    ({"uid": "carol"}, "a person 'carol' exists"),
    ({"name": "two\nlines"}, "must be one line of text"),
    ({"ssh_keys": ["ssh-ed25519 AAAA"]}, "ssh_keys[0]: OpenSSH cannot read"),
])
def test_a_bad_person_is_refused_and_nothing_is_made(
    api: FlaskClient, slapd: ThrowawaySlapd, made: list[str], fields: dict[str, Any],
    complaint: str
) -> None:
    uid = fields.pop("uid", "quinn")
    before = api.get("/v1/changes?limit=1", headers=basic("olga")).json
    answer = create(api, made, uid, **fields)
    assert answer.status_code in (409, 422), answer.json
    assert complaint in answer.json["error"]
    assert api.get("/v1/changes?limit=1", headers=basic("olga")).json == before
    if uid == "quinn":
        assert api.get("/v1/people/quinn", headers=basic("olga")).status_code == 404


@pytest.mark.parametrize(("kind", "complaint"), [
    ("ed25519.private", "this is a private key"),
    ("rsa1024", "an RSA key of 1024 bits is too weak"),
    ("dsa", "DSA keys are too weak"),
    ("options", "without options"),
    ("two", "one key, on one line"),
    ("mislabelled", "OpenSSH cannot read"),
    ("garbage", "OpenSSH cannot read"),
    ("spoofed", "invisible formatting"),
])
def test_keys_that_are_not_a_good_public_key_are_refused(
    api: FlaskClient, keys: dict[str, str], kind: str, complaint: str
) -> None:
    blob = keys["ed25519"].split()[1]
    text = {"dsa": f"ssh-dss {blob}", "options": f'command="/bin/sh" {keys["ed25519"]}',
            "two": f"{keys['ed25519']}\n{keys['ecdsa']}", "mislabelled": f"ssh-rsa {blob}",
            "garbage": "ssh-ed25519 bm90IGEga2V5",
            "spoofed": f"{keys['ed25519']} alice\u202e@laptop"}.get(kind) or keys[kind]
    answer = api.post("/v1/people/carol/keys", json={"key": text}, headers=basic("carol"))
    assert answer.status_code == 422
    assert complaint in answer.json["error"]
    assert api.get("/v1/people/carol", headers=basic("carol")).json["ssh_keys"] == []


def test_a_person_manages_their_own_keys_and_nobody_elses(
    api: FlaskClient, slapd: ThrowawaySlapd, keys: dict[str, str]
) -> None:
    carol = basic("carol")
    try:
        added = api.post("/v1/people/carol/keys", json={"key": keys["ed25519"]}, headers=carol)
        assert added.status_code == 201, added.json
        assert added.json["type"] == "ssh-ed25519"
        assert added.json["bits"] == 256
        assert added.json["fingerprint"].startswith("SHA256:")
        # sshd gets the key exactly as stored (opslab-ssh-keys reads sshPublicKey).
        assert stored(slapd, f"uid=carol,{PEOPLE}")["sshPublicKey"] == \
            [keys["ed25519"].encode()]
        again = api.post("/v1/people/carol/keys", json={"key": keys["ed25519"]}, headers=carol)
        assert again.status_code == 409
        assert api.post("/v1/people/carol/keys", json={"key": keys["rsa3072"]},
                        headers=carol).status_code == 201

        # Operations may help; no one else may touch another person's keys, an account
        # admin (dave is one here) included: a key added there is a login as them.
        helped = api.post("/v1/people/carol/keys", json={"key": keys["ecdsa"]},
                          headers=basic("olga"))
        assert helped.status_code == 201
        for target in ("carol", "olga"):
            refused = api.post(f"/v1/people/{target}/keys", json={"key": keys["ed25519b"]},
                               headers=basic("dave"))
            assert refused.status_code == 403
            assert f"only {target} and operations may change" in refused.json["error"]
        assert api.post("/v1/people/dave/keys", json={"key": keys["ed25519b"]},
                        headers=carol).status_code == 403
        assert api.delete(f"/v1/people/dave/keys/{quote(added.json['fingerprint'], safe='')}",
                          headers=carol).status_code == 403

        fingerprint = added.json["fingerprint"]
        assert api.delete(f"/v1/people/carol/keys/{fingerprint}", headers=carol)\
            .status_code == 204
        assert api.delete(f"/v1/people/carol/keys/{quote(fingerprint, safe='')}",
                          headers=carol).status_code == 404
        left = [key["type"] for key in api.get("/v1/people/carol", headers=carol)
                .json["ssh_keys"]]
        assert sorted(left) == ["ecdsa-sha2-nistp256", "ssh-rsa"]
    finally:
        connection = slapd.connect()
        with contextlib.suppress(ldap.NO_SUCH_ATTRIBUTE):
            connection.modify_s(f"uid=carol,{PEOPLE}", [(ldap.MOD_DELETE, "sshPublicKey",
                                                         None)])
        connection.unbind_s()


def test_a_new_project_is_a_posix_group_with_a_number_of_its_own(
    api: FlaskClient, slapd: ThrowawaySlapd, made: list[str]
) -> None:
    person = create(api, made, "otto").json["person"]
    connection = slapd.connect()
    try:
        answer = api.post("/v1/projects", json={"name": "groupy"}, headers=basic("olga"))
        assert answer.status_code == 201, answer.json
        gid = answer.json["gid_number"]
        assert gid >= 10000
        assert gid != person["uid_number"]
        entry = stored(slapd, f"cn=groupy,{PROJECTS}")
        assert b"opslabPosixGroup" in entry["objectClass"]
        # An old project becomes a group at its next change.
        assert api.get("/v1/projects/web", headers=basic("carol")).json["gid_number"] is None
        changed = api.patch("/v1/projects/web", json={"description": "the web project"},
                            headers=basic("carol"))
        assert changed.json["gid_number"] not in (None, gid, person["uid_number"])
    finally:
        connection.delete_s(f"cn=groupy,{PROJECTS}")
        connection.modify_s(f"cn=web,{PROJECTS}", [
            (ldap.MOD_DELETE, "objectClass", [b"opslabPosixGroup"]),
            (ldap.MOD_DELETE, "gidNumber", None), (ldap.MOD_DELETE, "description", None)])
        connection.unbind_s()


def test_a_number_used_by_an_entry_made_by_hand_is_skipped(
    api: FlaskClient, slapd: ThrowawaySlapd, made: list[str]
) -> None:
    first = create(api, made, "pia").json["person"]["uid_number"]
    with entry(slapd, f"dn: uid=handmade,{PEOPLE}\nobjectClass: inetOrgPerson\n"
                      f"objectClass: posixAccount\nuid: handmade\ncn: h\nsn: h\n"
                      f"uidNumber: {first + 1}\ngidNumber: 100\nhomeDirectory: /home/h\n"):
        assert create(api, made, "pim").json["person"]["uid_number"] == first + 2


def test_people_created_at_once_get_numbers_of_their_own(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None, made: list[str]
) -> None:
    served = ServedApi(tmp_path, slapd, BASE, {"api": {"workers": 2, "threads": 4}})
    served.start()
    try:
        uids = [f"burst{index}" for index in range(16)]
        made.extend(uids)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda uid: served.request(
                "POST", "/v1/people", body={"uid": uid, "name": uid}, headers=basic("olga")),
                uids))
        assert [status for status, _ in answers] == [201] * len(uids)
        numbers = [json.loads(body)["person"]["uid_number"] for _, body in answers]
        assert len(set(numbers)) == len(numbers)
        connection = slapd.connect()
        found = connection.search_s(PEOPLE, ldap.SCOPE_ONELEVEL, "(uid=burst*)", ["uidNumber"])
        connection.unbind_s()
        assert sorted(int(a["uidNumber"][0]) for _, a in found) == sorted(numbers)
    finally:
        served.stop()


def test_a_person_is_not_made_when_the_default_project_is_missing(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None, made: list[str]
) -> None:
    app = create_app(api_config(tmp_path, slapd, default_project="nosuchproject"))
    with app.test_client() as client:
        answer = create(client, made, "halfmade")
        assert answer.status_code == 404
        assert "no project 'nosuchproject'" in answer.json["error"]
        assert client.get("/v1/people/halfmade", headers=basic("olga")).status_code == 404
    app.extensions["opslab.engine"].dispose()
