"""The pages' login, session cookie, CSRF and headers (api/pages/session.py), through
Flask's test client against the real slapd; the browser tests (test_pages_browser*.py)
show the same in chromium."""

import re
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from alembic import command
from alembic.migration import MigrationContext
from flask.testing import FlaskClient
from sqlalchemy import inspect

from opslab.api.app import create_app
from opslab.api.pages.markdown import render
from opslab.api.store import engine_for
from opslab.config import ConfigError
from opslab.slapd import ThrowawaySlapd
from tests.conftest import PASSWORDS, api_config, basic
from tests.test_api_ci import alembic_config
from tests.test_logbot_api import BOT, BOT_PASSWORD, add_bot_account

SITE = "https://opslab.example.org"


def token(page: bytes) -> str:
    """The CSRF token of the first form of ``page``."""
    found = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:400]
    return found.group(1).decode()


class Tags(HTMLParser):
    """Every tag and attribute of an HTML text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += attrs


def log_in(client: FlaskClient, uid: str, password: str,
           next_page: str = "") -> tuple[int, dict[str, str]]:
    form = client.get("/login", base_url=SITE)
    answer = client.post("/login", base_url=SITE, headers={"Referer": f"{SITE}/login"},
                         data={"csrf_token": token(form.data), "uid": uid,
                               "password": password, "next": next_page})
    return answer.status_code, dict(answer.headers)


def test_login_sets_a_secure_httponly_samesite_cookie(client: FlaskClient) -> None:
    status, headers = log_in(client, "carol", PASSWORDS["carol"], "/projects/web")
    assert status == 302
    app = client.application
    cookie = SimpleCookie(headers["Set-Cookie"])["opslab_session"]
    assert app.session_interface.get_signing_serializer(app).loads(cookie.value)["uid"] == "carol"  # type: ignore[attr-defined]
    assert headers["Location"] == "/projects/web"
    cookie = SimpleCookie(headers["Set-Cookie"])["opslab_session"]
    assert cookie["secure"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Lax"
    assert cookie["expires"]  # api.session_lifetime from the login: not a browser-long cookie


@pytest.mark.parametrize(("uid", "password"), [("carol", "wrong"), ("nobody", "x"),
                                           ("carol)(uid=*", "x"), ("carol", "")])
def test_a_wrong_login_is_refused_and_says_so(client: FlaskClient, uid: str,
                                              password: str) -> None:
    status, headers = log_in(client, uid, password)
    assert status in (400, 401)
    assert "Set-Cookie" not in headers or "opslab_session=;" in headers.get("Set-Cookie", "")


def test_the_login_page_names_its_fields_and_shows_the_refusal(client: FlaskClient) -> None:
    form = client.get("/login", base_url=SITE)
    answer = client.post("/login", base_url=SITE, headers={"Referer": f"{SITE}/login"},
                         data={"csrf_token": token(form.data), "uid": "carol", "password": "no"})
    assert answer.status_code == 401
    assert b"invalid user name or password" in answer.data
    assert b'<label for="uid">' in answer.data
    assert b'<label for="password">' in answer.data
    assert b'value="carol"' in answer.data  # the name typed is kept, never the password
    assert b'value="no"' not in answer.data


def test_a_form_without_its_csrf_token_changes_nothing(client: FlaskClient) -> None:
    answer = client.post("/login", base_url=SITE, headers={"Referer": f"{SITE}/login"},
                         data={"uid": "carol", "password": PASSWORDS["carol"]})
    assert answer.status_code == 400
    assert b"CSRF" in answer.data
    assert "opslab_session" not in answer.headers.get("Set-Cookie", "")


def test_a_form_posted_from_another_site_is_refused(client: FlaskClient) -> None:
    form = client.get("/login", base_url=SITE)
    answer = client.post("/login", base_url=SITE, headers={"Referer": "https://evil.example/"},
                         data={"csrf_token": token(form.data), "uid": "carol",
                               "password": PASSWORDS["carol"]})
    assert answer.status_code == 400
    assert b"referrer does not match" in answer.data


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x",
                                    "/\\evil.example", "javascript:alert(1)", "evil"])
def test_login_never_sends_a_person_to_another_site(client: FlaskClient, target: str) -> None:
    status, headers = log_in(client, "carol", PASSWORDS["carol"], target)
    assert status == 302
    assert headers["Location"] == "/"


def test_the_json_api_never_takes_the_session_cookie(client: FlaskClient) -> None:
    """A page open in a browser cannot be made to call the JSON API as its person."""
    log_in(client, "carol", PASSWORDS["carol"])
    answer = client.post("/v1/projects/web/log", base_url=SITE, json={"message": "forged"})
    assert answer.status_code == 401
    assert client.get("/v1/projects/web/log", base_url=SITE).json == []


def test_logout_ends_the_session(client: FlaskClient) -> None:
    log_in(client, "carol", PASSWORDS["carol"])
    form = client.get("/login", base_url=SITE)
    answer = client.post("/logout", base_url=SITE, headers={"Referer": f"{SITE}/"},
                         data={"csrf_token": token(form.data)})
    assert answer.status_code == 302
    cookie = SimpleCookie(answer.headers["Set-Cookie"])["opslab_session"]
    app = client.application
    session = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    assert "uid" not in session
    assert list(session["_flashes"][0]) == ["info", "You are logged out."]


def test_pages_forbid_scripts_frames_and_sniffing(client: FlaskClient) -> None:
    answer = client.get("/login", base_url=SITE)
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src" not in policy  # default-src 'none' covers scripts
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "private, no-store"


def test_the_json_api_still_takes_basic_credentials(client: FlaskClient) -> None:
    assert client.get("/v1/projects", headers=basic("carol")).status_code == 200


@pytest.mark.parametrize("source", [
    "<script>alert(1)</script>",
    "[x](javascript:alert(1))",
    "![x](javascript:alert(1))",
    '<img src=x onerror="alert(1)">',
    "[x](JaVaScRiPt:alert(1))",
    "<a href='javascript:alert(1)'>x</a>",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<iframe src=https://evil.example></iframe>",
    "<svg onload=alert(1)>",
    "``` onload=alert(1)\ncode\n```",
])
def test_markdown_renders_every_script_inert(source: str) -> None:
    html = str(render(source))
    parsed = Tags()
    parsed.feed(html)
    assert parsed.tags <= {"p", "a", "img", "pre", "code"}, html
    for name, value in parsed.attributes:
        assert not name.startswith("on"), html
        if name in ("href", "src"):
            assert (value or "").split(":")[0].lower() in ("http", "https", "mailto") \
                or ":" not in (value or ""), html


def test_markdown_keeps_what_documentation_needs() -> None:
    html = str(render("# Web\n\n*Runs* the [wiki](https://wiki.example.org).\n\n"
                      "| a | b |\n|---|---|\n| 1 | 2 |\n\n```\nsudo puppet apply\n```\n"))
    assert "<h1>Web</h1>" in html
    assert "<em>Runs</em>" in html
    assert '<a href="https://wiki.example.org" rel="nofollow noopener noreferrer">wiki</a>' in html
    assert "<table>" in html
    assert "<code>sudo puppet apply\n</code>" in html


def test_behind_a_trusted_proxy_a_form_from_another_site_is_refused(
        tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> None:
    """nginx terminates TLS: with api.trusted_proxies, the pages know the scheme was
    https and check the referrer; without, the proxy's header is not believed."""
    app = create_app(api_config(tmp_path, slapd, trusted_proxies=1))
    proxied = app.test_client()
    form = proxied.get("/login", headers={"X-Forwarded-Proto": "https"})
    answer = proxied.post("/login", headers={"X-Forwarded-Proto": "https",
                                             "Referer": "https://evil.example/"},
                          data={"csrf_token": token(form.data), "uid": "carol",
                                "password": PASSWORDS["carol"]})
    assert answer.status_code == 400
    assert b"referrer does not match" in answer.data
    answer = proxied.post("/login", headers={"X-Forwarded-Proto": "https",
                                             "Referer": "https://localhost/login"},
                          data={"csrf_token": token(form.data), "uid": "carol",
                                "password": PASSWORDS["carol"]})
    assert answer.status_code == 302
    app.extensions["opslab.engine"].dispose()


def test_a_bot_account_may_not_log_in_to_the_pages(
        tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> None:
    """The bot role may only post Server Admin Log entries for a nick (docs/logbot.md)."""
    add_bot_account(slapd, BOT, BOT_PASSWORD)
    app = create_app(api_config(tmp_path, slapd, bot_accounts=[BOT]))
    status, headers = log_in(app.test_client(), BOT, BOT_PASSWORD)
    assert status == 403
    assert "opslab_session" not in headers.get("Set-Cookie", "")
    app.extensions["opslab.engine"].dispose()


def test_migration_0010_upgrades_and_downgrades(database: str) -> None:
    """0010 adds the projects' documentation and the log's via and person columns, and
    takes them away again, on every database (test_api.py checks the schema at head)."""
    engine = engine_for(database)
    try:
        def state() -> tuple[str | None, bool, set[str]]:
            with engine.connect() as connection:
                revision = MigrationContext.configure(connection).get_current_revision()
                found = inspect(connection)
                return (revision, found.has_table("project_documents"),
                        {column["name"] for column in found.get_columns("server_admin_log")})

        command.downgrade(alembic_config(database), "0009")
        revision, documents, columns = state()
        assert (revision, documents) == ("0009", False)
        assert not {"via", "person"} & columns
        command.upgrade(alembic_config(database), "0010")
        revision, documents, columns = state()
        assert (revision, documents) == ("0010", True)
        assert {"via", "person"} <= columns
    finally:
        engine.dispose()


@pytest.mark.parametrize(("content", "words"), [(b"short\n", "holds 5 bytes"),
                                            (b"\xff" * 40, "it is not text"),
                                            (None, "cannot read")])
def test_a_session_key_too_short_or_unreadable_stops_the_api(
        tmp_path: Path, slapd: ThrowawaySlapd, content: bytes | None, words: str) -> None:
    key = tmp_path / "bad.secret"
    if content is not None:
        key.write_bytes(content)
    with pytest.raises(ConfigError, match=words):
        create_app(api_config(tmp_path, slapd, session_secret_file=str(key)))
