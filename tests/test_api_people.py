"""People as accounts: created by operations, numbered without collisions, managing their
own SSH keys; projects as posix groups. Against the real slapd and ssh-keygen."""

import base64
import contextlib
import json
import logging
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import ldap
import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from opslab import sshkeys
from opslab.api.app import create_app
from opslab.api.store import engine_for, migrate
from opslab.directory import Directory, DirectoryUnavailable
from opslab.slapd import ThrowawaySlapd
from tests.conftest import BASE, PASSWORDS, PEOPLE, PROJECTS, api_config, basic, project_ldif
from tests.postgres import ThrowawayPostgres
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
        # A project made before projects were groups becomes one at its next change.
        slapd.add_ldif(project_ldif("oldish"))
        assert api.get("/v1/projects/oldish", headers=basic("olga")).json["gid_number"] is None
        changed = api.patch("/v1/projects/oldish", json={"description": "an old project"},
                            headers=basic("olga"))
        assert changed.json["gid_number"] not in (None, gid, person["uid_number"])
    finally:
        for name in ("groupy", "oldish"):
            with contextlib.suppress(ldap.NO_SUCH_OBJECT):
                connection.delete_s(f"cn={name},{PROJECTS}")
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


# Password resets.


def reset(api: FlaskClient, uid: str, headers: dict[str, str]) -> Any:
    return api.post(f"/v1/people/{uid}/password", headers=headers)


def changes(api: FlaskClient, limit: int = 5) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = api.get(f"/v1/changes?limit={limit}",
                                           headers=basic("olga")).json
    return answer


def stored_bytes(tmp_path: Path) -> bytes:
    """The API's SQLite store as it is on disk (its write-ahead log too)."""
    return b"".join(path.read_bytes() for path in tmp_path.glob("api.sqlite*"))


@pytest.fixture
def given(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password the API hands to the directory (RFC 3062), as it hands it over."""
    passwords: list[str] = []
    real = Directory.set_password

    def spy(self: Directory, dn: str, password: str) -> None:
        passwords.append(password)
        real(self, dn, password)

    monkeypatch.setattr(Directory, "set_password", spy)
    return passwords


def test_a_reset_gives_a_new_password_once_and_the_old_one_stops_working(
    api: FlaskClient, made: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture,
    given: list[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    old = create(api, made, "rita").json["password"]
    answer = reset(api, "rita", basic("olga"))
    assert answer.status_code == 200, answer.json
    assert set(answer.json) == {"uid", "password"}
    new = answer.json["password"]
    assert answer.json["uid"] == "rita"
    assert answer.headers["Cache-Control"] == "no-store"
    # Made as creation makes it, and handed to the directory as creation hands it over.
    assert len(new) == len(old) == 24
    assert given == [old, new]

    assert api.get("/v1/people/rita", headers=login("rita", new)).status_code == 200
    refused = api.get("/v1/people/rita", headers=login("rita", old))
    assert refused.status_code == 401

    [change] = [change for change in changes(api) if change["action"] == "person.password.reset"]
    assert (change["actor"], change["target"], change["state"]) == ("person:olga", "rita", "done")
    assert change["after"]["uid"] == "rita"
    for password in (old, new):
        assert password not in json.dumps(changes(api, 100))
        assert password.encode() not in stored_bytes(tmp_path)
        assert password not in caplog.text


def test_a_person_resets_their_own_password(api: FlaskClient, made: list[str]) -> None:
    old = create(api, made, "sven").json["password"]
    answer = reset(api, "sven", login("sven", old))
    assert answer.status_code == 200, answer.json
    assert api.get("/v1/people/sven", headers=login("sven", answer.json["password"])) \
        .status_code == 200
    assert reset(api, "sven", login("sven", old)).status_code == 401
    assert changes(api)[0]["actor"] == "person:sven"


def test_only_the_person_and_operations_reset_a_password(api: FlaskClient,
                                                        made: list[str]) -> None:
    password = create(api, made, "tess").json["password"]
    before = changes(api)
    # carol is a member of web; dave an account admin, who creates people but must not
    # get a login as anyone (the new password would be one).
    for who in ("carol", "dave"):
        refused = reset(api, "tess", basic(who))
        assert refused.status_code == 403
        assert refused.json["error"] == "only tess and operations may reset tess's password"
    assert api.post("/v1/people/tess/password").status_code == 401
    assert changes(api) == before
    assert api.get("/v1/people/tess", headers=login("tess", password)).status_code == 200
    assert reset(api, "tess", basic("olga")).status_code == 200
    assert changes(api)[0]["actor"] == "person:olga"


@pytest.mark.parametrize(("uid", "lines", "status", "complaint"), [
    ("nosuchperson", None, 404, "no person 'nosuchperson'"),
    ("Not A Name", None, 404, "no person 'Not A Name'"),
    ("postgres", [], 403, "'postgres' is the name of a system or package account"),
    ("systemd-x", [], 403, "'systemd-x' is the name of a system or package account"),
    ("lowuid", ["objectClass: posixAccount", "uidNumber: 999", "gidNumber: 999",
                "homeDirectory: /"], 403, "its uidNumber 999 is below accounts.min_uid"),
])
def test_a_reset_is_refused_for_no_person_and_for_system_accounts(
    api: FlaskClient, slapd: ThrowawaySlapd, uid: str, lines: list[str] | None, status: int,
    complaint: str
) -> None:
    before = changes(api)
    ldif = "" if lines is None else (
        f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
        f"sn: {uid}\n" + "".join(f"{line}\n" for line in lines))
    with entry(slapd, ldif) if ldif else contextlib.nullcontext():
        answer = reset(api, quote(uid), basic("olga"))
        assert answer.status_code == status, answer.json
        assert complaint in answer.json["error"]
        if ldif:
            assert "userPassword" not in stored(slapd, f"uid={uid},{PEOPLE}")
    assert changes(api) == before


def test_a_person_left_without_a_password_gets_one(
    api: FlaskClient, slapd: ThrowawaySlapd
) -> None:
    """What a creation leaves when the API is stopped between the entry and its password."""
    with entry(slapd, f"dn: uid=halfway,{PEOPLE}\nobjectClass: inetOrgPerson\n"
                      "objectClass: posixAccount\nuid: halfway\ncn: Half Way\nsn: Way\n"
                      "uidNumber: 19999\ngidNumber: 100\nhomeDirectory: /home/halfway\n"):
        answer = reset(api, "halfway", basic("olga"))
        assert answer.status_code == 200, answer.json
        assert api.get("/v1/people/halfway", headers=login("halfway", answer.json["password"])) \
            .status_code == 200


def test_a_directory_unavailable_at_the_reset_changes_nothing(
    api: FlaskClient, made: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    password = create(api, made, "ursa").json["password"]
    before = changes(api)

    def unavailable(self: Directory, dn: str, password: str) -> None:
        raise DirectoryUnavailable(f"giving {dn} a new password: Can't contact LDAP server")

    monkeypatch.setattr(Directory, "set_password", unavailable)
    answer = reset(api, "ursa", basic("olga"))
    assert answer.status_code == 503
    assert "the directory is unavailable" in answer.json["error"]
    assert "password" not in answer.json
    monkeypatch.undo()
    assert changes(api) == before
    assert api.get("/v1/people/ursa", headers=login("ursa", password)).status_code == 200


def test_a_reset_that_cannot_be_recorded_stays_pending_and_is_not_undone(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None, made: list[str],
    postgres: ThrowawayPostgres
) -> None:
    """The database refuses the record's "done" at the commit after the directory write:
    an old password cannot be put back, so the record stays pending (api/audit.py)."""
    migrate(postgres.url)
    engine = engine_for(postgres.url)
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE FUNCTION refuse_reset() RETURNS trigger AS $$ BEGIN "
            "IF NEW.action = 'person.password.reset' AND NEW.state = 'done' "
            "THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql"))
        connection.execute(text(
            "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON changes "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_reset()"))
    app = create_app(api_config(tmp_path, slapd, postgres.url))
    try:
        client = app.test_client()
        password = create(client, made, "vera").json["password"]
        answer = reset(client, "vera", basic("olga"))
        assert answer.status_code == 503
        assert "undoing it failed too; it stays pending" in answer.json["error"]
        assert client.get("/v1/people/vera", headers=login("vera", password)).status_code == 401
        [change] = client.get("/v1/changes?action=person.password.reset",
                              headers=basic("olga")).json
        assert (change["target"], change["state"]) == ("vera", "pending")
    finally:
        app.extensions["opslab.engine"].dispose()
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()


LOCKED = "000001010000Z"  # ppolicy's "locked until an administrator unlocks"


def password_policy(server: ThrowawaySlapd) -> None:
    """slapd's ppolicy overlay on the directory, with a default policy, as a site that
    locks accounts runs it."""
    admin = ldap.initialize(server.ldapi_uri)
    admin.sasl_external_bind_s()
    admin.modify_s("cn=module{0},cn=config", [(ldap.MOD_ADD, "olcModuleLoad", [b"ppolicy"])])
    admin.add_s("olcOverlay=ppolicy,olcDatabase={1}mdb,cn=config", [
        ("objectClass", [b"olcOverlayConfig", b"olcPPolicyConfig"]),
        ("olcOverlay", [b"ppolicy"]), ("olcPPolicyDefault", [f"cn=passwords,{BASE}".encode()])])
    admin.unbind_s()
    server.add_ldif(f"dn: cn=passwords,{BASE}\nobjectClass: device\nobjectClass: pwdPolicy\n"
                    "cn: passwords\npwdAttribute: userPassword\n")


def person_with_password(uid: str, *lines: str) -> str:
    extra = "".join(f"{line}\n" for line in lines)
    return (f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
            f"sn: {uid}\nuserPassword: {uid}-secret\n{extra}")


def lock(server: ThrowawaySlapd, uid: str) -> None:
    connection = server.connect()
    connection.modify_s(f"uid={uid},{PEOPLE}",
                        [(ldap.MOD_ADD, "pwdAccountLockedTime", [LOCKED.encode()])])
    connection.unbind_s()


def locked_time(server: ThrowawaySlapd, uid: str) -> list[bytes]:
    connection = server.connect()
    try:
        [(_, found)] = connection.search_s(f"uid={uid},{PEOPLE}", ldap.SCOPE_BASE,
                                           attrlist=["pwdAccountLockedTime"])
    finally:
        connection.unbind_s()
    return list(found.get("pwdAccountLockedTime", []))


def test_a_reset_does_not_unlock_a_locked_account(
    tmp_path: Path, private_slapd: ThrowawaySlapd, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, given: list[str]
) -> None:
    server = private_slapd
    password_policy(server)
    server.add_ldif("\n".join([
        person_with_password("olga"),
        f"dn: cn=operations,{PROJECTS}\nobjectClass: groupOfNames\ncn: operations\n"
        f"member: uid=olga,{PEOPLE}\n",
        person_with_password("lena"), person_with_password("lars"),
        person_with_password("lisa"),
        person_with_password("lotte", "objectClass: shadowAccount", "shadowExpire: 1"),
    ]))
    for uid in ("lena", "lars", "lisa"):
        lock(server, uid)
    # Without the API: a password change deletes the lock (the overlay's own rule).
    connection = server.connect()
    connection.passwd_s(f"uid=lars,{PEOPLE}", None, "anything-else")
    connection.unbind_s()
    assert locked_time(server, "lars") == []

    app = create_app(api_config(tmp_path, server))
    client = app.test_client()
    try:
        olga = login("olga", "olga-secret")
        for uid in ("lena", "lotte"):
            answer = reset(client, uid, olga)
            assert answer.status_code == 200, answer.json
            still = client.get(f"/v1/people/{uid}", headers=login(uid, answer.json["password"]))
            assert still.status_code in (401, 403), still.json  # the lock holds
        assert locked_time(server, "lena") == [LOCKED.encode()]
        assert stored(server, f"uid=lotte,{PEOPLE}")["shadowExpire"] == [b"1"]

        # The lock cannot be put back: the answer and the log say so, the record is kept.
        caplog.set_level(logging.DEBUG)
        real = Directory.modify

        def no_lock(self: Directory, dn: str, modifications: Any) -> None:
            if any(name == "pwdAccountLockedTime" for _, name, _ in modifications):
                raise DirectoryUnavailable("Can't contact LDAP server")
            real(self, dn, modifications)

        monkeypatch.setattr(Directory, "modify", no_lock)
        answer = reset(client, "lisa", olga)
        assert answer.status_code == 503
        assert "lisa's password was reset, but their lock could not be put back" in \
            answer.json["error"]
        assert "lock the account again" in answer.json["error"]
        critical = [record for record in caplog.records if record.levelno == logging.CRITICAL]
        assert [record.name for record in critical] == ["opslab.api.people"]
        assert "set pwdAccountLockedTime: 000001010000Z on uid=lisa" in critical[0].getMessage()
        assert given
        assert all(password not in caplog.text for password in given)
        [change] = client.get("/v1/changes?target=lisa", headers=olga).json
        assert (change["action"], change["state"]) == ("person.password.reset", "done")
    finally:
        app.extensions["opslab.engine"].dispose()


def test_passwords_never_reach_the_api_log(
    tmp_path: Path, slapd: ThrowawaySlapd, people: None, made: list[str]
) -> None:
    served = ServedApi(tmp_path, slapd, BASE, {"api": {"workers": 1}})
    served.start()
    try:
        made.append("walt")
        status, body = served.request("POST", "/v1/people", body={"uid": "walt", "name": "W"},
                                      headers=basic("olga"))
        assert status == 201, body
        status, answer = served.request("POST", "/v1/people/walt/password",
                                        headers=basic("olga"))
        assert status == 200, answer
    finally:
        served.stop()
    log = served.log.read_text(encoding="utf-8")
    assert "/v1/people/walt/password" in log  # gunicorn's access log, the API's output
    for password in (json.loads(body)["password"], json.loads(answer)["password"]):
        assert password not in log


# Keys are read by ssh-keygen once per process.


def test_ssh_keygen_reads_a_key_once_and_a_refusal_is_kept_too(
    api: FlaskClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sshkeys._keygen.cache_clear()
    runs: list[str] = []
    real = subprocess.run

    def counted(command: list[str], **options: Any) -> Any:
        if command[0] == "ssh-keygen":
            runs.append(options["input"])
        return real(command, **options)

    monkeypatch.setattr(sshkeys.subprocess, "run", counted)
    first = sshkeys.parse(keys["ecdsa"])
    again = sshkeys.parse(" ".join(keys["ecdsa"].split()[:2]) + " another comment")
    assert len(runs) == 1
    assert (again.fingerprint, again.bits, again.comment) == (
        first.fingerprint, first.bits, "another comment")

    messages = []
    for _ in range(2):
        with pytest.raises(sshkeys.InvalidKey) as refused:
            sshkeys.parse("ssh-ed25519 bm90IGEga2V5")
        messages.append(str(refused.value))
    assert len(runs) == 2
    assert messages == ["OpenSSH cannot read this public key (ssh-keygen -l refuses it)"] * 2
    with pytest.raises(sshkeys.InvalidKey, match="1024 bits is too weak"):
        sshkeys.parse(keys["rsa1024"])
    with pytest.raises(sshkeys.InvalidKey, match="1024 bits is too weak"):
        sshkeys.parse(keys["rsa1024"])
    assert len(runs) == 3

    # Showing a person reads their stored keys again: no process for a key already read.
    try:
        added = api.post("/v1/people/carol/keys", json={"key": keys["ecdsa"]},
                         headers=basic("carol"))
        assert added.status_code == 201
        for _ in range(3):
            shown = api.get("/v1/people/carol", headers=basic("carol")).json["ssh_keys"]
            assert [key["fingerprint"] for key in shown] == [first.fingerprint]
        assert len(runs) == 3
    finally:
        api.delete(f"/v1/people/carol/keys/{quote(first.fingerprint, safe='')}",
                   headers=basic("carol"))
