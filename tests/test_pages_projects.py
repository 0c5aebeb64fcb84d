"""The projects' pages (api/pages/projects.py) and a project's documentation
(api/documents.py, /v1/projects/P/documentation), through Flask's test client against
the real slapd: every form, its refusals, and that each action left the audit record
the JSON API leaves. The browser tests are in test_pages_projects_browser.py.

The directory is the session's shared one: what a test changes in web (its members,
branch, description) it puts back.
"""

import html
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from opslab.api import context, documents
from opslab.api.store import CiRun
from tests.conftest import basic
from tests.test_pages_session import PASSWORDS, SITE, Tags, log_in, token

PROJECT = "web"
PAGE = f"/projects/{PROJECT}"
EDITORS = 6


def as_person(client: FlaskClient, uid: str) -> FlaskClient:
    status, _ = log_in(client, uid, PASSWORDS[uid])
    assert status == 302
    return client


def post(client: FlaskClient, path: str, data: dict[str, str]) -> TestResponse:
    """A form of the project's page, sent as the browser sends it (with its CSRF token)."""
    page = client.get(PAGE, base_url=SITE)
    assert page.status_code == 200, page.data[:300]
    return client.post(path, base_url=SITE, headers={"Referer": f"{SITE}{PAGE}"},
                       data={"csrf_token": token(page.data), **data})


def changes(client: FlaskClient, action: str) -> list[dict[str, Any]]:
    """The audit log's records of ``action`` in web, newest first, as the JSON API has them."""
    answer = client.get(f"/v1/changes?project={PROJECT}&action={action}", headers=basic("olga"))
    assert answer.status_code == 200
    found: list[dict[str, Any]] = answer.json  # type: ignore[assignment]
    return found


def project(client: FlaskClient) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"/v1/projects/{PROJECT}", headers=basic("olga")).json  # type: ignore[assignment]
    return found


def shown_text(page: bytes) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page.decode()))).strip()


def refusal(page: bytes) -> str:
    found = re.search(rb'<p class="flash error" role="alert">(.*?)</p>', page, re.DOTALL)
    assert found, page[:600]
    return shown_text(found.group(1))


@pytest.fixture
def web_restored(client: FlaskClient) -> Iterator[None]:
    """web's members, branch and description as they were before the test."""
    before = project(client)
    yield
    after = project(client)
    for uid in set(after["members"]) - set(before["members"]):
        client.delete(f"/v1/projects/{PROJECT}/members/{uid}", headers=basic("olga"))
    client.patch(f"/v1/projects/{PROJECT}", headers=basic("olga"),
                 json={"branch": before["branch"], "description": before["description"]})


# The list of projects.

def test_the_projects_list_shows_members_instances_and_links(client: FlaskClient) -> None:
    as_person(client, "dave")
    page = client.get("/projects", base_url=SITE)
    assert page.status_code == 200
    hosts = client.get(f"/v1/hosts?project={PROJECT}", headers=basic("olga")).json
    row = re.search(rb'<tr>\s*<th scope="row"><a href="/projects/web">web</a>.*?</tr>', page.data,
                    re.DOTALL)
    assert row, page.data[:2000]
    cells = [shown_text(cell).strip()
             for cell in re.findall(rb"<td[^>]*>(.*?)</td>", row.group(0), re.DOTALL)]
    assert cells[0] == "The community's public web site"
    assert cells[1] == "3: alice (owner), bob, carol"
    assert cells[2] == str(len(hosts))
    assert len(hosts) >= 1
    assert cells[3] == "production"
    names = re.findall(rb'<th scope="row"><a href="/projects/([a-z0-9-]+)">', page.data)
    assert names == sorted(names)
    assert b"/projects/operations" in page.data


def test_the_projects_pages_are_for_people_who_logged_in(client: FlaskClient) -> None:
    for path in ("/projects", PAGE):
        answer = client.get(path, base_url=SITE)
        assert answer.status_code == 302
        assert answer.headers["Location"] == f"/login?next={path}"


def test_an_unknown_project_is_a_404_page(client: FlaskClient) -> None:
    as_person(client, "carol")
    answer = client.get("/projects/nosuchproject", base_url=SITE)
    assert answer.status_code == 404
    assert "no project 'nosuchproject'" in shown_text(answer.data)


def test_a_hostile_description_is_shown_as_text(client: FlaskClient, web_restored: None) -> None:
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)"> \u202eevil'
    assert client.patch(f"/v1/projects/{PROJECT}", headers=basic("carol"),
                        json={"description": hostile}).status_code == 200
    as_person(client, "carol")
    for path in ("/projects", PAGE):
        page = client.get(path, base_url=SITE).data
        parsed = Tags()
        parsed.feed(page.decode())
        assert "script" not in parsed.tags
        assert not any(name.startswith("on") for name, _ in parsed.attributes)
        assert b"&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=" in page
        assert "\u202e".encode() not in page  # shown as \x202e: it cannot reorder the page
        assert b"\\x202eevil" in page


# The project's page: what it shows, and to whom.

def test_the_page_shows_the_project_and_its_sections(client: FlaskClient) -> None:
    as_person(client, "carol")
    page = client.get(PAGE, base_url=SITE)
    assert page.status_code == 200
    html = page.data.decode()
    assert html.count("<h1") == 1
    assert "The community&#39;s public web site" in html
    for heading in ("Documentation", "Members", "Branch", "Instances", "Server Admin Log",
                    "Recent changes", "CI runs"):
        assert f">{heading}</h2>" in html
    assert "web1.web.example.org" in html  # the hosts' table
    assert '<link rel="alternate" type="application/atom+xml"' in html
    assert 'href="/v1/projects/web/log.atom"' in html
    assert 'href="/v1/changes.atom?project=web"' in html
    assert 'href="/changes?project=web"' in html
    assert 'href="/log/web"' in html
    assert 'href="/projects/web/hosts/new"' in html


def test_members_see_the_member_forms_and_others_do_not(client: FlaskClient) -> None:
    as_person(client, "carol")
    page = client.get(PAGE, base_url=SITE).data
    for field in (b'id="documentation-text"', b'id="member-uid"', b'id="branch-name"',
                  b'id="log-message"', b"Leave the project"):
        assert field in page
    assert b'id="member-owner"' not in page  # carol is no owner of web
    assert b"Remove alice" not in page

    as_person(client, "dave")
    page = client.get(PAGE, base_url=SITE).data
    for field in (b'id="documentation-text"', b'id="member-uid"', b'id="branch-name"',
                  b'id="log-message"', b"Leave the project", b"Remove "):
        assert field not in page
    assert b'href="/projects/web/hosts/new"' not in page

    as_person(client, "olga")
    page = client.get(PAGE, base_url=SITE).data
    assert b'id="member-owner"' in page
    assert b"Remove alice" in page


def test_every_field_has_a_label(client: FlaskClient) -> None:
    as_person(client, "olga")
    html = client.get(PAGE, base_url=SITE).data.decode()
    fields = re.findall(r'<(?:input|textarea|select)\b[^>]*\bid="([^"]+)"', html)
    assert len(fields) >= 5
    for field in fields:
        assert f'<label for="{field}"' in html, field
    unlabelled = [tag for tag in re.findall(r"<(?:input|textarea|select)\b[^>]*>", html)
                  if 'type="hidden"' not in tag and " id=" not in tag]
    assert unlabelled == []


# Members.

def test_dave_cannot_add_members_to_web(client: FlaskClient, web_restored: None) -> None:
    as_person(client, "dave")
    before = project(client)["members"]
    answer = post(client, f"{PAGE}/members", {"uid": "dave"})
    assert answer.status_code == 403
    assert refusal(answer.data) == ("Not done, nothing was changed: dave is not a member of "
                                    "project 'web' Go to the form")
    assert project(client)["members"] == before
    assert changes(client, "project.member.add") == []


def test_a_member_adds_a_member_and_an_owner_removes_them(client: FlaskClient,
                                                         web_restored: None) -> None:
    as_person(client, "carol")
    answer = post(client, f"{PAGE}/members", {"uid": "dave"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{PAGE}#members"
    page = client.get(PAGE, base_url=SITE).data
    assert b"dave is now a member of web." in page
    assert "dave" in project(client)["members"]
    [added] = changes(client, "project.member.add")
    assert added["actor"] == "person:carol"
    assert "dave" in added["after"]["members"]
    assert "dave" not in added["before"]["members"]

    # carol is no owner: she can neither add an owner nor remove dave, form or not.
    answer = post(client, f"{PAGE}/members", {"uid": "olga", "owner": "yes"})
    assert answer.status_code == 403
    assert "only owners of 'web' may add owners" in refusal(answer.data)
    answer = post(client, f"{PAGE}/members/remove", {"uid": "dave"})
    assert answer.status_code == 403
    assert "only owners of 'web' may remove other members" in refusal(answer.data)
    assert "dave" in project(client)["members"]

    as_person(client, "olga")
    answer = post(client, f"{PAGE}/members/remove", {"uid": "dave"})
    assert answer.status_code == 303
    assert "dave" not in project(client)["members"]
    [removed] = changes(client, "project.member.remove")
    assert removed["actor"] == "person:olga"


def test_a_member_leaves(client: FlaskClient, web_restored: None) -> None:
    client.post(f"/v1/projects/{PROJECT}/members", headers=basic("carol"), json={"uid": "dave"})
    as_person(client, "dave")
    answer = post(client, f"{PAGE}/members/remove", {"uid": "dave"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/projects"
    assert "dave" not in project(client)["members"]
    assert changes(client, "project.member.remove")[0]["actor"] == "person:dave"


@pytest.mark.parametrize(("uid", "status", "words"), [
    ("Carol Smith", 422, "uid: 'Carol Smith' is not a login name"),
    ("nobody-here", 404, "no person 'nobody-here'"),
    ("", 422, "uid: '' is not a login name"),
])
def test_a_bad_member_is_refused_in_the_apis_words_and_kept(client: FlaskClient, uid: str,
                                                           status: int, words: str) -> None:
    as_person(client, "carol")
    answer = post(client, f"{PAGE}/members", {"uid": uid})
    assert answer.status_code == status
    assert words in refusal(answer.data)
    assert f'id="member-uid" name="uid" value="{uid}"' in answer.data.decode()
    assert changes(client, "project.member.add") == []


# The branch.

def test_a_member_switches_the_branch(client: FlaskClient, web_restored: None) -> None:
    as_person(client, "carol")
    answer = post(client, f"{PAGE}/branch", {"branch": "feature/pages"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{PAGE}#branch"
    page = client.get(PAGE, base_url=SITE).data
    assert b"The hosts of web now follow the branch feature/pages." in page
    assert b'value="feature/pages"' in page
    assert project(client)["branch"] == "feature/pages"
    [switched] = changes(client, "project.update")
    assert switched["actor"] == "person:carol"
    assert (switched["before"]["branch"], switched["after"]["branch"]) == \
        ("production", "feature/pages")


@pytest.mark.parametrize(("branch", "words"), [
    ("feature..x", "branch: "),
    ("a b", "is not a usable branch name"),
])
def test_a_bad_branch_is_refused_and_changes_nothing(client: FlaskClient, branch: str,
                                                     words: str) -> None:
    as_person(client, "carol")
    answer = post(client, f"{PAGE}/branch", {"branch": branch})
    assert answer.status_code == 422
    assert words in refusal(answer.data)
    assert f'value="{branch}"' in answer.data.decode()
    assert project(client)["branch"] == "production"
    assert changes(client, "project.update") == []


def test_dave_cannot_switch_the_branch(client: FlaskClient) -> None:
    as_person(client, "dave")
    answer = post(client, f"{PAGE}/branch", {"branch": "feature/dave"})
    assert answer.status_code == 403
    assert project(client)["branch"] == "production"


# The Server Admin Log.

def test_a_member_logs_a_line(client: FlaskClient) -> None:
    as_person(client, "carol")
    answer = post(client, f"{PAGE}/log", {"message": "  restarted apache on web1  "})
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{PAGE}#log"
    [entry] = client.get(f"/v1/projects/{PROJECT}/log").json
    assert (entry["author"], entry["message"]) == ("carol", "restarted apache on web1")
    page = client.get(PAGE, base_url=SITE).data
    assert b"restarted apache on web1" in page
    assert b"Logged." in page


@pytest.mark.parametrize(("uid", "message", "status", "words"), [
    ("dave", "not mine", 403, "dave is not a member of project 'web'"),
    ("carol", "   ", 422, "must be one line of 1 to 2000 characters"),
    ("carol", "x" * 2001, 422, "must be one line of 1 to 2000 characters"),
    ("carol", "two\nlines", 422, "must be one line of text"),
])
def test_a_log_line_refused_logs_nothing(client: FlaskClient, uid: str, message: str,
                                         status: int, words: str) -> None:
    as_person(client, uid)
    answer = post(client, f"{PAGE}/log", {"message": message})
    assert answer.status_code == status
    assert words in refusal(answer.data)
    assert client.get(f"/v1/projects/{PROJECT}/log").json == []


def test_a_form_without_its_csrf_token_changes_nothing(client: FlaskClient) -> None:
    as_person(client, "carol")
    for path, data in ((f"{PAGE}/log", {"message": "forged"}),
                       (f"{PAGE}/members", {"uid": "dave"}),
                       (f"{PAGE}/branch", {"branch": "forged"}),
                       (f"{PAGE}/documentation", {"text": "forged", "version": "0"})):
        answer = client.post(path, base_url=SITE, headers={"Referer": f"{SITE}{PAGE}"},
                             data=data)
        assert answer.status_code == 400
        assert b"CSRF" in answer.data
    assert client.get(f"/v1/projects/{PROJECT}/log").json == []
    assert "dave" not in project(client)["members"]
    assert project(client)["branch"] == "production"
    assert client.get(f"/v1/projects/{PROJECT}/documentation",
                      headers=basic("carol")).json["version"] == 0


# The documentation, on the page.

def test_a_member_edits_the_documentation(client: FlaskClient) -> None:
    as_person(client, "carol")
    text = "# Web\r\n\r\nRuns the *wiki*.\r\n\r\n## Deploying\r\n\r\n`sudo puppet apply`\r\n"
    answer = post(client, f"{PAGE}/documentation", {"text": text, "version": "0"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"{PAGE}#documentation"
    stored = client.get(f"/v1/projects/{PROJECT}/documentation", headers=basic("dave")).json
    assert stored["text"] == text.replace("\r\n", "\n")
    assert (stored["version"], stored["updated_by"]) == (1, "carol")
    page = client.get(PAGE, base_url=SITE).data.decode()
    # Under the page's h2, the documentation's headings start at h3, in their order.
    assert "<h3>Web</h3>" in page
    assert "<h4>Deploying</h4>" in page
    assert page.count("<h1") == 1
    assert "<em>wiki</em>" in page
    assert "Version 1, by carol" in page
    assert 'name="version" value="1"' in page
    [record] = changes(client, "project.documentation")
    assert record["actor"] == "person:carol"
    assert record["before"] is None
    assert record["after"] == {"text": stored["text"], "version": 1}


def test_an_edit_from_a_stale_version_is_refused_and_the_text_kept(client: FlaskClient) -> None:
    as_person(client, "carol")
    assert post(client, f"{PAGE}/documentation",
                {"text": "first words", "version": "0"}).status_code == 303
    assert post(client, f"{PAGE}/documentation",
                {"text": "olga's words", "version": "1"}).status_code == 303
    mine = "my edit <made> from version 1 & still here"
    answer = post(client, f"{PAGE}/documentation", {"text": mine, "version": "1"})
    assert answer.status_code == 409
    said = refusal(answer.data)
    assert "the documentation of 'web' was changed by carol at" in said
    assert "after version 1, the one this edit was made from; nothing was saved" in said
    html = answer.data.decode()
    assert ">\nmy edit &lt;made&gt; from version 1 &amp; still here</textarea>" in html
    assert "olga&#39;s words</pre>" in html  # the current text, to merge with
    assert 'name="version" value="2"' in html  # saving again is made from what was shown
    stored = client.get(f"/v1/projects/{PROJECT}/documentation", headers=basic("carol")).json
    assert (stored["text"], stored["version"]) == ("olga's words", 2)
    assert len(changes(client, "project.documentation")) == 2


def test_a_script_in_the_documentation_is_inert(client: FlaskClient) -> None:
    as_person(client, "carol")
    text = ("<script>alert(1)</script>\n\n[click](javascript:alert(2))\n\n"
            '<img src=x onerror="alert(3)">\n\n</textarea><script>alert(4)</script>')
    assert post(client, f"{PAGE}/documentation", {"text": text, "version": "0"}).status_code == 303
    html = client.get(PAGE, base_url=SITE).data.decode()
    parsed = Tags()
    parsed.feed(html)
    assert "script" not in parsed.tags
    assert not any(name.startswith("on") for name, _ in parsed.attributes)
    assert not any((value or "").lower().startswith("javascript:")
                   for _, value in parsed.attributes)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    assert html.count("</textarea>") == 1


@pytest.mark.parametrize(("uid", "text", "version", "status", "words"), [
    ("dave", "mine now", "0", 403, "dave is not a member of project 'web'"),
    ("carol", "bell \x07 here", "0", 422, "line 1 holds the character U+0007"),
    ("carol", "a\n\nb\x1b[31m", "0", 422, "line 3 holds the character U+001B"),
    ("carol", "x", "", 422, "the form does not say which version it was made from"),
    ("carol", "x", "-1", 422, "the form does not say which version it was made from"),
])
def test_a_refused_documentation_edit_saves_nothing(client: FlaskClient, uid: str, text: str,
                                                    version: str, status: int,
                                                    words: str) -> None:
    as_person(client, uid)
    answer = post(client, f"{PAGE}/documentation", {"text": text, "version": version})
    assert answer.status_code == status
    assert words in refusal(answer.data)
    assert client.get(f"/v1/projects/{PROJECT}/documentation",
                      headers=basic("carol")).json["version"] == 0
    assert changes(client, "project.documentation") == []


# The documentation, through the JSON API: the same module, the same rules.

def test_the_documentation_through_the_json_api(client: FlaskClient) -> None:
    url = f"/v1/projects/{PROJECT}/documentation"
    assert client.get(url).status_code == 401
    assert client.get(url, headers=basic("dave")).json == {
        "project": "web", "text": "", "version": 0, "updated_at": None, "updated_by": None}
    assert client.get("/v1/projects/nosuch/documentation", headers=basic("dave")).status_code == 404
    refused = client.put(url, headers=basic("dave"), json={"text": "x", "version": 0})
    assert (refused.status_code, refused.json) == (
        403, {"error": "dave is not a member of project 'web'"})
    saved = client.put(url, headers=basic("carol"), json={"text": "a\r\nb", "version": 0})
    assert saved.status_code == 200
    assert (saved.json["text"], saved.json["version"], saved.json["updated_by"]) == \
        ("a\nb", 1, "carol")
    stale = client.put(url, headers=basic("olga"), json={"text": "y", "version": 0})
    assert stale.status_code == 409
    assert "after version 0, the one this edit was made from" in stale.json["error"]
    same = client.put(url, headers=basic("carol"), json={"text": "a\nb", "version": 1})
    assert same.json["version"] == 1  # nothing changed: nothing stored, nothing recorded
    assert len(changes(client, "project.documentation")) == 1
    for body, words in (({"text": "x"}, "'version' is required"),
                        ({"text": "x", "version": 1, "more": 1}, "unknown fields: more"),
                        ({"text": "x\u2028", "version": 1}, "holds the character U+2028"),
                        ({"text": 5, "version": 1}, "text must be of type string")):
        answer = client.put(url, headers=basic("carol"), json=body)
        assert answer.status_code == 422
        assert words in answer.json["error"]


def test_the_documentation_has_a_size_limit(client: FlaskClient) -> None:
    """The limit is the module's, not api.max_body's (20000 bytes in these tests)."""
    url = f"/v1/projects/{PROJECT}/documentation"
    longest = "é" * documents.MAX_CHARACTERS
    assert client.put(url, headers=basic("carol"),
                      json={"text": longest, "version": 0}).status_code == 200
    answer = client.put(url, headers=basic("carol"), json={"text": longest + "x", "version": 1})
    assert answer.status_code == 422
    assert answer.json["error"] == "text: 65537 characters, more than the 65536 allowed"
    as_person(client, "carol")
    answer = post(client, f"{PAGE}/documentation",
                  {"text": "\U0001f600" * documents.MAX_CHARACTERS, "version": "1"})
    assert answer.status_code == 303  # a form of 65536 characters of 4 bytes each
    answer = post(client, f"{PAGE}/documentation", {"text": longest + "x", "version": "2"})
    assert answer.status_code == 422
    assert "65537 characters, more than the 65536 allowed" in refusal(answer.data)


def test_other_forms_keep_the_usual_body_limit(client: FlaskClient) -> None:
    app: Flask = client.application
    as_person(client, "carol")
    answer = post(client, f"{PAGE}/log", {"message": "x" * app.config["MAX_CONTENT_LENGTH"]})
    assert answer.status_code == 413


# CI runs: those that cloned (or left out) one of the project's hosts.

def test_the_page_shows_the_ci_runs_of_its_hosts(client: FlaskClient) -> None:
    def run(number: int, original: str, left_out: list[str]) -> CiRun:
        return CiRun(event_digest=f"{number:064x}", event_key=f"event {number}",
                     gerrit_project="operations/puppet", change=number, patchset=1,
                     revision="a" * 40, branch="production", trigger="check infra",
                     requested_by="olga", state="passed", vote=1, version=1, left_out=left_out,
                     hosts=[{"original": original, "clone": None, "result": "passed"}],
                     subject=f"change number {number}")

    app: Flask = client.application
    with app.app_context(), context.session() as session:
        session.add_all([run(101, "web1.web.example.org", []),
                         run(102, "builder.example.org", []),
                         run(103, "builder.example.org", ["web1.web.example.org"])])
        session.commit()
    as_person(client, "dave")
    html = client.get(PAGE, base_url=SITE).data.decode()
    ci = html[html.index('<section id="ci"'):]
    assert "change number 101" in ci
    assert "change number 103" in ci
    assert "change number 102" not in ci


@pytest.mark.parametrize("since", [0, 1])
def test_edits_made_at_once_from_one_version_store_one(stored_client: FlaskClient,
                                                       since: int) -> None:
    """The first edit (an insert) and a later one (a compare-and-swap): of edits sent at
    once from the same version, one is stored and recorded, the others refused (409)."""
    url = f"/v1/projects/{PROJECT}/documentation"
    if since:
        assert stored_client.put(url, headers=basic("carol"),
                                 json={"text": "first", "version": 0}).status_code == 200
    app: Flask = stored_client.application
    start = threading.Barrier(EDITORS)
    statuses: list[int] = []

    def edit(number: int) -> None:
        with app.test_client() as own:
            start.wait()
            statuses.append(own.put(url, headers=basic("carol"),
                                    json={"text": f"edit {number}", "version": since}).status_code)

    editors = [threading.Thread(target=edit, args=(number,)) for number in range(EDITORS)]
    for editor in editors:
        editor.start()
    for editor in editors:
        editor.join(timeout=60)
    assert sorted(statuses) == [200] + [409] * (EDITORS - 1)
    stored = stored_client.get(url, headers=basic("carol")).json
    assert stored["version"] == since + 1
    records = changes(stored_client, "project.documentation")
    assert len(records) == since + 1
    assert records[0]["after"] == {"text": stored["text"], "version": since + 1}
