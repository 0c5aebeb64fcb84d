"""The pages attacked as the community's hostile volunteers would: a member of another
project or of none posting forms by hand, hostile Markdown, header and URL tricks, old
sessions, and requests that would make a worker spin. Through Flask's test client
against the real slapd (tests/test_pages_session.py's login and CSRF token pattern).
"""

import contextlib
import signal
import time
import types
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import itsdangerous.timed
import ldap
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from opslab.api.app import create_app
from opslab.api.pages import session as page_session
from opslab.api.pages.diff import diff_documents, line_diff
from opslab.api.pages.markdown import render
from opslab.slapd import ThrowawaySlapd
from tests.conftest import PASSWORDS, PEOPLE, api_config, basic
from tests.test_pages_session import SITE, Tags, log_in, token


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fails the test (instead of hanging it) if the block takes more than ``seconds``: a
    bound against blow-ups that took minutes, wide enough for a busy machine (speed itself
    is the benchmarks' to prove)."""
    def expired(signum: int, frame: Any) -> None:
        raise AssertionError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def as_person(client: FlaskClient, uid: str) -> FlaskClient:
    status, _ = log_in(client, uid, PASSWORDS[uid])
    assert status == 302
    return client


def post(client: FlaskClient, path: str, data: dict[str, str]) -> TestResponse:
    """A form sent as a browser sends it: the session's CSRF token, from the site."""
    form = client.get("/login", base_url=SITE)
    return client.post(path, base_url=SITE, headers={"Referer": f"{SITE}/"},
                       data={"csrf_token": token(form.data), **data})


@contextlib.contextmanager
def tools_host(client: FlaskClient, label: str) -> Iterator[str]:
    """A host of tools (carol and dave are no members of it), made by operations."""
    created = client.post("/v1/projects/tools/hosts", json={"name": label, "classes": ["motd"]},
                          headers=basic("olga"))
    assert created.status_code == 201, created.json
    try:
        yield f"{label}.tools.example.org"
    finally:
        client.delete(f"/v1/hosts/{label}.tools.example.org", headers=basic("olga"))


# Another project's member, and a member of nothing.

def test_a_member_of_web_cannot_touch_a_host_of_tools_by_its_url(client: FlaskClient) -> None:
    with tools_host(client, "attack1") as fqdn:
        as_person(client, "carol")
        before = client.get(f"/v1/hosts/{fqdn}", headers=basic("olga")).json
        audit = client.get(f"/v1/changes?target={fqdn}", headers=basic("olga")).json
        for path, data in [
            (f"/hosts/{fqdn}/classes", {"classes": "pwned"}),
            (f"/hosts/{fqdn}/class-parameter", {"class": "motd", "parameter": "m",
                                                "value": "x", "action": "set"}),
            (f"/hosts/{fqdn}/variable", {"name": "x", "value": "y"}),
            (f"/hosts/{fqdn}/branch", {"branch": "evil"}),
            (f"/hosts/{fqdn}/delete", {}),
            # The short name, and the name's case: the same host, the same rule.
            ("/hosts/attack1/classes", {"classes": "pwned"}),
            (f"/hosts/{fqdn.upper()}/classes", {"classes": "pwned"}),
            ("/projects/tools/hosts/new", {"name": "carols", "classes": "motd"}),
        ]:
            answer = post(client, path, data)
            assert answer.status_code in (403, 404), (path, answer.status_code)
        assert client.get(f"/v1/hosts/{fqdn}", headers=basic("olga")).json == before
        assert client.get(f"/v1/changes?target={fqdn}", headers=basic("olga")).json == audit
        assert client.get("/v1/hosts/carols.tools.example.org",
                          headers=basic("olga")).status_code == 404


def test_a_member_of_nothing_changes_nothing_of_web(client: FlaskClient) -> None:
    as_person(client, "dave")
    before = client.get("/v1/projects/web", headers=basic("olga")).json
    documentation = client.get("/v1/projects/web/documentation", headers=basic("olga")).json
    audit = client.get("/v1/changes?project=web", headers=basic("olga")).json
    for path, data in [
        ("/projects/web/members", {"uid": "dave", "owner": "yes"}),
        ("/projects/web/members/remove", {"uid": "carol"}),
        ("/projects/web/branch", {"branch": "evil"}),
        ("/projects/web/documentation", {"text": "pwned", "version": "0"}),
        ("/projects/web/documentation", {"text": "pwned",
                                         "version": str(documentation["version"])}),
        ("/projects/web/log", {"message": "dave was here"}),
        ("/projects/web/hosts/new", {"name": "daves", "classes": "motd"}),
    ]:
        answer = post(client, path, data)
        assert answer.status_code == 403, (path, answer.status_code)
    assert client.get("/v1/projects/web", headers=basic("olga")).json == before
    assert client.get("/v1/projects/web/documentation",
                      headers=basic("olga")).json == documentation
    assert client.get("/v1/changes?project=web", headers=basic("olga")).json == audit
    assert all(entry["message"] != "dave was here"
               for entry in client.get("/v1/projects/web/log").json)


def test_a_member_of_web_cannot_act_on_tools_through_web_forms(client: FlaskClient) -> None:
    """The project is the URL's: a form of web's page posted to tools' address is tools'."""
    as_person(client, "carol")
    before = client.get("/v1/projects/tools", headers=basic("olga")).json
    for path, data in [("/projects/tools/members", {"uid": "carol"}),
                       ("/projects/tools/branch", {"branch": "evil"}),
                       ("/projects/tools/log", {"message": "carol was here"}),
                       ("/projects/tools/documentation", {"text": "pwned", "version": "0"})]:
        assert post(client, path, data).status_code == 403, path
    assert client.get("/v1/projects/tools", headers=basic("olga")).json == before


# Numbers a form or a URL carries.

@pytest.mark.parametrize("digits", [19, 5000])
def test_a_huge_version_number_is_refused_not_a_crash(client: FlaskClient, digits: int) -> None:
    as_person(client, "carol")
    answer = post(client, "/projects/web/documentation", {"text": "x", "version": "9" * digits})
    assert answer.status_code == 422, answer.data[:300]


@pytest.mark.parametrize("path", ["/changes", "/ci", "/log/web"])
@pytest.mark.parametrize("limit", ["0", "-1", "99999999999999999999", "9" * 5000, "1e9", "١٢"])
def test_any_limit_is_answered_or_refused_never_a_crash(client: FlaskClient, path: str,
                                                        limit: str) -> None:
    as_person(client, "carol")
    answer = client.get(f"{path}?limit={limit}", base_url=SITE)
    assert answer.status_code in (200, 422), (path, limit, answer.status_code)


# The session.

def test_a_session_ends_at_its_lifetime_even_when_used_all_along(
        client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask signs the cookie again at every page: a stolen cookie used every few hours
    must still die api.session_lifetime after the login."""
    now = [itsdangerous.timed.time.time()]
    clock = types.SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr(itsdangerous.timed, "time", clock)
    monkeypatch.setattr(page_session, "time", clock)
    as_person(client, "carol")
    lifetime = client.application.permanent_session_lifetime.total_seconds()
    for _ in range(3):
        now[0] += lifetime * 0.6
        answer = client.get("/projects", base_url=SITE)
        if answer.status_code != 200:
            break
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/login")


def test_a_cookie_of_another_site_key_or_forged_is_no_login(client: FlaskClient) -> None:
    forged = itsdangerous.URLSafeTimedSerializer(
        "not-the-key", salt="cookie-session", signer_kwargs={"key_derivation": "hmac",
                                                              "digest_method": "sha1"})
    client.set_cookie("opslab_session", forged.dumps({"uid": "olga"}), domain="opslab.example.org")
    answer = client.get("/projects", base_url=SITE)
    assert answer.status_code == 302


def test_a_session_planted_before_the_login_does_not_survive_it(client: FlaskClient) -> None:
    client.get("/login", base_url=SITE)
    before = client.get_cookie("opslab_session", domain="opslab.example.org")
    status, headers = log_in(client, "carol", PASSWORDS["carol"])
    assert status == 302
    cookie = SimpleCookie(headers["Set-Cookie"])["opslab_session"]
    app = client.application
    loaded = app.session_interface.get_signing_serializer(app).loads(cookie.value)  # type: ignore[attr-defined]
    assert "csrf_token" not in loaded  # the token of before the login is gone with it
    assert before is None or before.value != cookie.value


@pytest.mark.parametrize("target", ["/\r\nSet-Cookie: x=y", "/\t/evil.example", "/%0d%0aX: y",
                                    "\\\\evil.example", "/\\/evil.example", "https:evil.example",
                                    " //evil.example", "/.//evil.example"])
def test_next_with_line_breaks_or_tricks_stays_on_the_site(client: FlaskClient,
                                                           target: str) -> None:
    status, headers = log_in(client, "carol", PASSWORDS["carol"], target)
    assert status == 302
    # A path of the site's own ("/.//evil.example" is a path of this site, "%0d%0a" stays
    # escaped), else the front page.
    assert headers["Location"] in ("/", "/.//evil.example", "/%0d%0aX:%20y")


def test_a_post_from_another_site_with_the_cookie_is_refused(client: FlaskClient) -> None:
    as_person(client, "carol")
    page = client.get("/projects/web", base_url=SITE)
    for headers in ({"Referer": "https://evil.example/"}, {}, {"Origin": "https://evil.example"}):
        answer = client.post("/projects/web/log", base_url=SITE, headers=headers,
                             data={"csrf_token": token(page.data), "message": "forged"})
        assert answer.status_code == 400, headers
    answer = client.post("/projects/web/log", base_url=SITE, headers={"Referer": f"{SITE}/"},
                         data={"message": "forged"})
    assert answer.status_code == 400
    # Method override is no way round it.
    answer = client.get("/projects/web/log?_method=POST&message=forged", base_url=SITE,
                        headers={"X-HTTP-Method-Override": "POST"})
    assert answer.status_code == 405
    assert all(entry["message"] != "forged"
               for entry in client.get("/v1/projects/web/log").json)


def test_a_host_header_never_makes_a_redirect_leave_the_site(client: FlaskClient) -> None:
    answer = client.get("/projects", base_url="https://evil.example")
    assert answer.status_code == 302
    assert not answer.headers["Location"].startswith(("http", "//"))


# Hostile Markdown.

@pytest.mark.parametrize("source", [
    "[x](jav&#x61;script:alert(1))", "[x](&#106;avascript:alert(1))",
    "[x](javascript&colon;alert(1))", "[x](JaVaScRiPt:alert(1))", "[x](java\tscript:x)",
    "[x]: javascript:alert(1)\n\n[x]", "[x](vbscript:msgbox)", "[x](data:text/html,<script>)",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "<svg onload=alert(1)>", "<a href=javascript:alert(1)>x</a>",
    "`<img src=x onerror=alert(1)>`", "```\n<img src=x onerror=alert(1)>\n```",
    "| a |\n|---|\n| <img src=x onerror=alert(1)> |", "<p style=\"background:url(x)\">x</p>",
    "[x](http://x \"\" onmouseover=alert(1))", "<details open ontoggle=alert(1)>",
    "[a](<javascript:alert(1)>)", "![a](x\" onerror=\"alert(1))",
])
def test_hostile_markdown_has_no_script_handler_style_or_bad_scheme(source: str) -> None:
    html = render(source)
    tags = Tags()
    tags.feed(html)
    assert tags.tags <= {"p", "a", "img", "code", "pre", "table", "thead", "tbody", "tr", "th",
                         "td"}, html
    for name, value in tags.attributes:
        assert not name.startswith("on"), html
        assert name != "style", html
        if name in ("href", "src"):
            assert (value or "").startswith(("http://", "https://", "mailto:", "/", "#",
                                              "x")), html


def test_the_documentation_at_its_limit_renders_in_time(client: FlaskClient) -> None:
    """Pathological Markdown at 65,536 characters: the page is still made in seconds."""
    for source in ("![" * 32768, "[a](" * 16384, "*a " * 21845, "_a" * 32768,
                   "a|" * 1000 + "\n" + "-|" * 1000 + "\n" + ("x|" * 1000 + "\n") * 29):
        with within(30):
            render(source[:65536])


# A diff of two large texts.

@pytest.mark.parametrize(("before", "after"), [
    ("a b " * 16384, "b a " * 16384),  # one line of 32,768 words each
    ("a\nb\n" * 16384, "b\na\n" * 16384),  # lines that repeat
    ("\n".join("abc"[(i * 7) % 3] for i in range(32768)),
     "\n".join("abc"[(i * 5) % 3] for i in range(32768))),
    ("\n".join(f"w{i} a b c d e f g" for i in range(7000)),
     "\n".join(f"w{i} a b c d e f h" for i in range(7000))),  # every line edited
])
def test_the_diff_of_two_large_texts_takes_bounded_time(before: str, after: str) -> None:
    with within(30):
        lines = line_diff(before[:65536], after[:65536])
    assert lines


def test_the_change_page_of_two_64k_documentations_is_made_in_time(client: FlaskClient) -> None:
    version = client.get("/v1/projects/tools/documentation", headers=basic("olga")).json["version"]
    for text in ("a b\n" * 16384, "b a\n" * 16384):
        answer = client.put("/v1/projects/tools/documentation", headers=basic("olga"),
                            json={"text": text, "version": version})
        assert answer.status_code == 200, answer.json
        version = answer.json["version"]
    change = client.get("/v1/changes?action=project.documentation",
                        headers=basic("olga")).json[0]
    with within(60):
        answer = client.get(f"/changes/{change['id']}", base_url=SITE, headers=basic("carol"))
    assert answer.status_code == 200


# The directory: a lock, and a server that hangs.

def test_a_session_ends_at_the_next_page_once_the_account_is_locked(
        client: FlaskClient, slapd: ThrowawaySlapd) -> None:
    dn = f"uid=mallet,{PEOPLE}"
    slapd.add_ldif(f"dn: {dn}\nobjectClass: inetOrgPerson\nobjectClass: shadowAccount\n"
                   "uid: mallet\ncn: mallet\nsn: mallet\nuserPassword: mallet-secret\n")
    connection = slapd.connect()
    try:
        status, _ = log_in(client, "mallet", "mallet-secret")
        assert status == 302
        assert client.get("/projects", base_url=SITE).status_code == 200
        connection.modify_s(dn, [(ldap.MOD_ADD, "shadowExpire", [b"1"])])
        answer = client.get("/projects", base_url=SITE)
        assert answer.status_code == 302
        assert answer.headers["Location"] == "/login"
        assert client.get("/projects", base_url=SITE).status_code == 302  # and stays ended
    finally:
        connection.delete_s(dn)
        connection.unbind_s()


def test_a_directory_that_hangs_answers_the_login_within_its_deadline(
        tmp_path: Path, slapd: ThrowawaySlapd, hanging_server: int) -> None:
    config = api_config(tmp_path, slapd)
    hanging = config._replace(ldap=config.ldap._replace(
        uri=f"ldap://127.0.0.1:{hanging_server}", connect_timeout=1.0, timeout=1.0,
        deadline=3.0))
    app = create_app(hanging)
    try:
        with app.test_client() as hung:
            form = hung.get("/login", base_url=SITE)
            assert form.status_code == 200
            started = time.monotonic()
            with within(20):
                answer = hung.post("/login", base_url=SITE,
                                   headers={"Referer": f"{SITE}/login"},
                                   data={"csrf_token": token(form.data), "uid": "carol",
                                         "password": PASSWORDS["carol"]})
            assert time.monotonic() - started < 10
            assert answer.status_code == 503, answer.data[:300]
            assert "opslab_session" not in answer.headers.get("Set-Cookie", "")
    finally:
        app.extensions["opslab.engine"].dispose()


# Large forms.

def test_huge_forms_are_refused_whole_and_change_nothing(client: FlaskClient) -> None:
    as_person(client, "carol")
    documentation = client.get("/v1/projects/web/documentation", headers=basic("olga")).json
    log = client.get("/v1/projects/web/log").json
    for path, data in [("/projects/web/log", {"message": "x" * 3_000_000}),
                       ("/projects/web/documentation",
                        {"text": "é" * 1_000_000, "version": str(documentation["version"])}),
                       ("/hosts/page1.web.example.org/classes", {"classes": "a " * 1_000_000})]:
        answer = post(client, path, data)
        assert answer.status_code == 413, (path, answer.status_code)
    many = {f"field{number}": "x" for number in range(5000)}
    assert post(client, "/projects/web/log", {**many, "message": "many"}).status_code in (
        400, 413)
    assert client.get("/v1/projects/web/documentation",
                      headers=basic("olga")).json == documentation
    assert client.get("/v1/projects/web/log").json == log


def test_a_documentation_at_its_limit_is_taken_from_the_form_and_shown(
        client: FlaskClient) -> None:
    """65,536 characters of the widest kind (each 12 bytes in a form) fit the form's limit,
    and the page showing them is made in time."""
    as_person(client, "olga")
    version = client.get("/v1/projects/tools/documentation", headers=basic("olga")).json["version"]
    text = ("😀 " * 32768)[:65536]
    with within(60):
        answer = post(client, "/projects/tools/documentation",
                      {"text": text, "version": str(version)})
    assert answer.status_code == 303, answer.data[:300]
    with within(60):
        page = client.get("/projects/tools", base_url=SITE)
    assert page.status_code == 200
    assert client.get("/v1/projects/tools/documentation",
                      headers=basic("olga")).json["text"] == text


def test_a_documentation_slow_to_render_costs_its_time_once_not_at_every_view(
        client: FlaskClient) -> None:
    """markdown-it takes seconds over some 64 KiB texts: a page viewed again and again must
    not spend them each time (any person could keep a worker busy by reloading)."""
    as_person(client, "olga")
    version = client.get("/v1/projects/tools/documentation", headers=basic("olga")).json["version"]
    slow = "[\n" * 32768
    assert client.put("/v1/projects/tools/documentation", headers=basic("olga"),
                      json={"text": slow, "version": version}).status_code == 200
    assert client.get("/projects/tools", base_url=SITE).status_code == 200
    started = time.monotonic()
    for _ in range(5):
        assert client.get("/projects/tools", base_url=SITE).status_code == 200
    assert time.monotonic() - started < 2.5


def test_a_new_host_form_cannot_name_a_host_of_another_project(client: FlaskClient) -> None:
    with tools_host(client, "attack2") as fqdn:
        as_person(client, "carol")
        # (attack2 alone would be attack2.web.example.org: a host of web's own namespace.)
        for name in ("evil.tools.example.org", fqdn, fqdn.upper(), "evil.tools",
                     "x.web.example.org.tools.example.org", "attack2.tools"):
            answer = post(client, "/projects/web/hosts/new", {"name": name, "classes": "motd"})
            assert answer.status_code in (403, 409, 422), (name, answer.status_code)
        for name in ("evil.tools.example.org", "x.web.example.org.tools.example.org"):
            assert client.get(f"/v1/hosts/{name}", headers=basic("olga")).status_code == 404
        assert client.get(f"/v1/hosts/{fqdn}", headers=basic("olga")).json["project"] == "tools"


def test_the_diff_of_two_long_lists_takes_bounded_time() -> None:
    # 100,000 members: linear, a fraction of a second; quadratic, many minutes. The bound is
    # wide: the machine may be busy with the rest of the suite.
    before = {"members": [f"person{number}" for number in range(100000)]}
    after = {"members": [f"person{number}" for number in range(1, 100001)]}
    with within(30):
        [field] = diff_documents(before, after)
    assert (field.added, field.removed) == (["person100000"], ["person0"])


def test_a_session_from_a_server_whose_clock_is_a_little_ahead_holds(
        client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    as_person(client, "carol")
    now = page_session.time.time()
    monkeypatch.setattr(page_session, "time", types.SimpleNamespace(time=lambda: now - 60))
    assert client.get("/projects", base_url=SITE).status_code == 200


# The JSON API and a browser's remembered Basic credentials.

@contextlib.contextmanager
def person(slapd: ThrowawaySlapd, uid: str) -> Iterator[str]:
    """A person of the test's own (whose password a failing test may change); the password."""
    dn = f"uid={uid},{PEOPLE}"
    slapd.add_ldif(f"dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n"
                   f"userPassword: {uid}-secret\n")
    try:
        yield f"{uid}-secret"
    finally:
        connection = slapd.connect()
        connection.delete_s(dn)
        connection.unbind_s()


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"},
                                     {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "https://evil.example", "Sec-Fetch-Site": "none"}])
def test_a_write_from_another_sites_page_with_remembered_basic_credentials_is_refused(
        client: FlaskClient, slapd: ThrowawaySlapd, headers: dict[str, str]) -> None:
    """The pages link to Atom feeds that ask the browser for a user name and password, and a
    browser then sends them to the site on its own, even for another site's form. A form
    needs no JSON to POST /v1/people/UID/password: the API must see a write a page of
    another site made, and refuse it."""
    before = client.get("/v1/projects/web/log").json
    with person(slapd, "victim") as password:
        answer = client.post("/v1/people/victim/password", base_url=SITE,
                             headers={**basic("olga"), **headers, "Content-Type": "text/plain"},
                             data="x=y")
        assert answer.status_code == 403, answer.json
        assert log_in(client, "victim", password)[0] == 302  # the password is still theirs
    answer = client.post("/v1/projects/web/log", base_url=SITE, json={"message": "forged"},
                         headers={**basic("carol"), **headers})
    assert answer.status_code == 403
    assert client.get("/v1/projects/web/log").json == before


def test_scripts_and_the_sites_own_pages_still_write_to_the_json_api(client: FlaskClient) -> None:
    for headers in ({}, {"Origin": SITE}, {"Sec-Fetch-Site": "same-origin", "Origin": SITE},
                    {"Sec-Fetch-Site": "none"}):
        answer = client.post("/v1/projects/web/log", base_url=SITE, json={"message": "ok"},
                             headers={**basic("carol"), **headers})
        assert answer.status_code == 201, (headers, answer.json)


def test_guessing_a_password_at_the_login_form_is_slowed_down(client: FlaskClient,
                                                              slapd: ThrowawaySlapd) -> None:
    """Past api.login_failure_limit wrong passwords from one address, even the right one
    is not tried until the window has passed (api/logins.py)."""
    with person(slapd, "guessed") as password:
        statuses = [log_in(client, "guessed", f"guess{number}")[0] for number in range(30)]
        assert statuses[:20] == [401] * 20
        assert statuses[20:] == [429] * 10
        assert log_in(client, "guessed", password)[0] == 429


@pytest.mark.parametrize("name", ["no-such-project", "Pay%20here", "a" * 300])
def test_the_log_of_no_project_is_not_found(client: FlaskClient, name: str) -> None:
    """/log/ANYTHING would otherwise show a log titled with the visitor's own words."""
    answer = client.get(f"/log/{name}")
    assert answer.status_code == 404
    assert b"no project" in answer.data


def test_the_log_of_a_project_without_entries_is_shown(client: FlaskClient) -> None:
    answer = client.get("/log/web")
    assert answer.status_code == 200
    assert b"Nothing logged yet." in answer.data
