"""The API's bot role (issue 14): a bot account may relay Server Admin Log entries from
chat on behalf of a nick, and do nothing else; entries say they came through it; a nick
is limited per window; a person is named only when the network's account vouches."""

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import ldap
import pytest
from flask.testing import FlaskClient

from opslab.api.app import create_app
from opslab.slapd import ThrowawaySlapd
from tests.conftest import PEOPLE, api_config, basic

BOT = "salbot"
BOT_PASSWORD = "salbot-account-secret"
LIMIT = 3


def add_bot_account(slapd: ThrowawaySlapd, uid: str, password: str) -> None:
    """A directory entry for a bot account (once per session's directory)."""
    connection = slapd.connect()
    try:
        exists = connection.search_s(f"uid={uid},{PEOPLE}", ldap.SCOPE_BASE)
    except ldap.NO_SUCH_OBJECT:
        exists = []
    finally:
        connection.unbind_s()
    if not exists:
        slapd.add_ldif(f"dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                       f"cn: {uid}\nsn: bot\nuserPassword: {password}\n")


def as_bot(password: str = BOT_PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{BOT}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def api(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[FlaskClient]:
    add_bot_account(slapd, BOT, BOT_PASSWORD)
    app = create_app(api_config(tmp_path, slapd, bot_accounts=[BOT], bot_nick_limit=LIMIT,
                                bot_nick_window=3600))
    with app.test_client() as test_client:
        yield test_client
    app.extensions["opslab.engine"].dispose()


def chat(api: FlaskClient, line: str, nick: str | None = "Carol_", **more: Any) -> Any:
    body = {"line": line, **({"nick": nick} if nick is not None else {}), **more}
    return api.post("/v1/log/chat", json=body, headers=as_bot())


def test_a_relayed_line_is_logged_as_the_nick_via_the_bot(api: FlaskClient) -> None:
    answer = chat(api, "!log tools restarted the builder")
    assert answer.status_code == 201, answer.json
    entry = answer.json
    assert (entry["project"], entry["author"], entry["message"], entry["via"],
            entry["person"]) == ("tools", "Carol_", "restarted the builder", BOT, None)
    assert api.get(f"/v1/log/{entry['id']}").json == entry
    # A member's own post is unchanged: no via, no person.
    own = api.post("/v1/projects/web/log", json={"message": "by hand"}, headers=basic("carol"))
    assert (own.status_code, own.json["author"], own.json["via"], own.json["person"]) == (
        201, "carol", None, None)
    feed = ElementTree.fromstring(api.get("/v1/projects/tools/log.atom").data)
    atom = "{http://www.w3.org/2005/Atom}"
    assert feed.findtext(f"{atom}entry/{atom}author/{atom}name") == \
        f"Carol_ (from chat via {BOT})"
    assert f"via {BOT}" in (feed.findtext(f"{atom}entry/{atom}content") or "")


def test_anyone_in_the_channel_may_log_for_any_existing_project(api: FlaskClient) -> None:
    # Wikimedia's rule: no membership check (dave is a member of nothing; operations is
    # global, changed by operations only).
    for line in ("!log web deployed", "!log operations rotated the logs"):
        assert chat(api, line, nick="dave").status_code == 201


@pytest.mark.parametrize(("account", "person"), [
    ("carol", "carol"),  # a person of the directory: vouched for
    (None, None),  # a nick alone vouches for nothing, whatever it is
    ("nosuchperson", None),
    (BOT, None),  # a bot account is no person
    ("Carol With Spaces", None),  # no login name
])
def test_a_person_is_named_only_when_the_networks_account_is_one(
        api: FlaskClient, account: str | None, person: str | None) -> None:
    answer = chat(api, "!log web checked", nick="carol",
                  **({"account": account} if account is not None else {}))
    assert answer.status_code == 201, answer.json
    assert (answer.json["author"], answer.json["person"]) == ("carol", person)


@pytest.mark.parametrize(("line", "body", "status", "message"), [
    ("!log nosuchproject did things", {}, 404, "no project 'nosuchproject'"),
    ("!log web", {}, 422, "!log PROJECT"),
    ("!log web two\nlines", {}, 422, "one line"),
    ("!log web fine", {"nick": "bad nick"}, 422, "IRC nick"),
    ("!log web fine", {"nick": "a" * 65}, 422, "nick"),
    ("!log web fine", {"nick": "\x02bold"}, 422, "IRC nick"),
    ("!log web fine", {"account": "a\rb"}, 422, "control characters"),
])
def test_bad_relays_are_refused_and_change_nothing(
        api: FlaskClient, line: str, body: dict[str, str], status: int, message: str) -> None:
    before = api.get("/v1/log?limit=1000").json
    answer = api.post("/v1/log/chat", json={"line": line, "nick": "carol", **body},
                      headers=as_bot())
    assert answer.status_code == status, answer.json
    assert message in answer.json["error"]
    assert api.get("/v1/log?limit=1000").json == before


def test_a_nick_is_limited_per_window_and_told_when_to_retry(api: FlaskClient) -> None:
    for number in range(LIMIT):
        assert chat(api, f"!log web step {number}", nick="Flooder").status_code == 201
    refused = chat(api, "!log web one too many", nick="flooder")  # nicks ignore case
    assert refused.status_code == 429
    assert "retry in" in refused.json["error"]
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    # Another nick is not held back by this one.
    assert chat(api, "!log web someone else", nick="calm").status_code == 201
    assert [entry["message"] for entry in api.get("/v1/projects/web/log").json
            if entry["author"].lower() == "flooder"] == [f"step {n}" for n in (2, 1, 0)]


def test_a_person_may_not_speak_for_a_nick_and_a_bot_must_name_one(api: FlaskClient) -> None:
    refused = api.post("/v1/log/chat", json={"line": "!log web x", "nick": "dave"},
                       headers=basic("carol"))
    assert (refused.status_code, "only a bot account" in refused.json["error"]) == (403, True)
    # A bot without a nick is no person: it may not log as itself.
    refused = chat(api, "!log web as myself", nick=None)
    assert (refused.status_code, "bot account" in refused.json["error"]) == (403, True)
    # A member's own chat line still works as before.
    own = api.post("/v1/log/chat", json={"line": "!log web mine"}, headers=basic("carol"))
    assert (own.status_code, own.json["author"], own.json["via"]) == (201, "carol", None)
    assert api.post("/v1/log/chat", json={"line": "!log web x", "nick": "x"},
                    headers=as_bot("wrong")).status_code == 401


HOST = {"name": "botmade.web.example.org", "classes": ["ntp"]}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/projects", None),
    ("GET", "/v1/projects/web", None),
    ("POST", "/v1/projects/web/hosts", HOST),
    ("GET", "/v1/hosts/web1.web.example.org", None),
    ("PATCH", "/v1/hosts/web1.web.example.org", {"classes": ["ntp"]}),
    ("DELETE", "/v1/hosts/web1.web.example.org", None),
    ("GET", "/v1/nodes/web1.web.example.org", None),
    ("POST", "/v1/projects/web/log", {"message": "as the bot itself"}),
    ("POST", "/v1/projects", {"name": "botproject"}),
    ("POST", "/v1/projects/web/members", {"uid": BOT}),
    ("GET", "/v1/changes", None),
    ("GET", f"/v1/people/{BOT}", None),
    ("POST", f"/v1/people/{BOT}/keys", {"key": "ssh-ed25519 AAAA"}),
    ("POST", "/v1/people", {"uid": "botfriend", "name": "Bot Friend"}),
    ("GET", "/v1/ci/runs", None),
    ("POST", "/v1/hosts/web1.web.example.org/reports", {"status": "changed"}),
])
def test_a_bot_account_may_do_nothing_else(api: FlaskClient, method: str, path: str,
                                           body: Any) -> None:
    answer = api.open(path, method=method, json=body, headers=as_bot())
    assert answer.status_code == 403, (answer.status_code, answer.json)
    if answer.status_code == 403:
        assert "bot account" in answer.json["error"] or "token" in answer.json["error"]
    assert api.get("/v1/hosts/web1.web.example.org", headers=basic("carol")).status_code == 200
    assert api.get("/v1/changes", headers=basic("olga")).json == []
