"""Recent Changes, the Server Admin Log, CI runs and the host query as pages
(api/pages/activity.py, api/pages/query.py), and hosts by class for Prometheus
(api/monitoring.py, GET /v1/monitoring/file_sd), through Flask's test client against
the real slapd. The same pages in chromium: test_pages_activity_browser.py."""

import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from opslab.api.app import create_app
from opslab.api.monitoring import LABEL_NAME
from opslab.api.pages.activity import latest_by_project
from opslab.api.pages.diff import diff_documents, line_diff
from opslab.slapd import ThrowawaySlapd
from tests.conftest import api_config, basic
from tests.test_api_ci import RUN, as_ci, ci_account  # noqa: F401 (a fixture)
from tests.test_logbot_api import BOT, BOT_PASSWORD, add_bot_account, as_bot

SITE = "https://opslab.example.org"
HOSTILE = "<script>alert(1)</script> \u202edesrever\u202c"


class Page(HTMLParser):
    """A page's links (href and text), headings, and its text as a person reads it."""

    def __init__(self, html: bytes) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.headings: list[tuple[int, str]] = []
        self.scripts = 0
        self._href: str | None = None
        self._heading: int | None = None
        self._text: list[str] = []
        self.text = ""
        self.feed(html.decode())
        self.text = re.sub(r"\s+", " ", "".join(self._text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts += 1
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._link: list[str] = []
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = int(tag[1])
            self._words: list[str] = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, re.sub(r"\s+", " ", "".join(self._link)).strip()))
            self._href = None
        if self._heading is not None and tag == f"h{self._heading}":
            self.headings.append((self._heading,
                                  re.sub(r"\s+", " ", "".join(self._words)).strip()))
            self._heading = None

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        if self._href is not None:
            self._link.append(data)
        if self._heading is not None:
            self._words.append(data)


def page(client: FlaskClient, path: str, uid: str | None = "carol",
         status: int = 200) -> Page:
    answer = client.get(path, base_url=SITE, headers=basic(uid) if uid else {})
    assert answer.status_code == status, answer.data[:2000]
    return Page(answer.data)


def well_formed(shown: Page) -> None:
    """One h1 first, no heading skipping a level, no script."""
    levels = [level for level, _ in shown.headings]
    assert levels[0] == 1
    assert levels.count(1) == 1
    assert all(level <= before + 1 for before, level in itertools.pairwise(levels))
    assert shown.scripts == 0


# Recent Changes.

@pytest.fixture
def web_description(client: FlaskClient) -> Iterator[str]:
    """web's description, put back after the test (the directory is the session's)."""
    before = client.get("/v1/projects/web", headers=basic("olga")).json["description"]
    yield before
    client.patch("/v1/projects/web", json={"description": before}, headers=basic("olga"))
    client.delete("/v1/projects/web/members/dave", headers=basic("olga"))


def test_recent_changes_list_filter_and_link_each_change(client: FlaskClient,
                                                         web_description: str) -> None:
    assert client.patch("/v1/projects/web", json={"description": "Web servers, renewed"},
                        headers=basic("carol")).status_code == 200
    assert client.post("/v1/projects/web/members", json={"uid": "dave"},
                       headers=basic("carol")).status_code == 200
    shown = page(client, "/changes")
    well_formed(shown)
    assert "project.member.add" in shown.text
    assert "project.update" in shown.text
    changes = client.get("/v1/changes", headers=basic("carol")).json
    for change in changes:
        assert (f"/changes/{change['id']}", change["action"]) in shown.links
    only = page(client, "/changes?action=project.member.add&project=web")
    assert "project.member.add" in only.text
    assert "project.update" not in only.text
    # The form's fields left blank filter nothing; the feed link carries the filters.
    assert "project.update" in page(client, "/changes?project=&actor=&action=&target=").text
    assert ("/v1/changes.atom?project=web&action=project.member.add",
            "Recent changes (Atom, these filters)") in only.links
    refused = page(client, "/changes?who=carol", status=422)
    assert "unknown filters: who" in refused.text


def test_a_change_shows_who_when_and_a_diff_of_before_and_after(
        client: FlaskClient, web_description: str) -> None:
    old = "Web servers for the community's public sites, kept by the web team and volunteers"
    new = "Web servers for the community's public sites and wiki, kept by the web team"
    client.patch("/v1/projects/web", json={"description": old}, headers=basic("olga"))
    client.patch("/v1/projects/web", json={"description": new}, headers=basic("carol"))
    client.post("/v1/projects/web/members", json={"uid": "dave"}, headers=basic("carol"))
    updates = client.get("/v1/changes?action=project.update", headers=basic("carol")).json
    answer = client.get(f"/changes/{updates[0]['id']}", base_url=SITE, headers=basic("dave"))
    assert answer.status_code == 200
    shown = Page(answer.data)
    well_formed(shown)
    assert shown.headings[0] == (1, f"Change {updates[0]['id']}: project.update web")
    assert "<dt>Who</dt><dd>carol</dd>" in answer.data.decode()
    assert ("/changes?actor=person:carol", "every change by carol") in shown.links
    # A long text reads like a wiki's diff: the words that went and came marked.
    html = answer.data.decode()
    assert "kept by the web team<del> and volunteers</del>" in html
    assert "public sites<ins> and wiki</ins>, kept by" in html
    added = client.get("/v1/changes?action=project.member.add", headers=basic("carol")).json
    member = client.get(f"/changes/{added[0]['id']}", base_url=SITE, headers=basic("carol"))
    text = member.data.decode()
    # A list shows the values it gained (and keeps the others out of the way).
    assert re.search(r'<code>members</code> <span class="kind">changed</span>', text)
    assert re.search(r"<ins><span class=\"visually-hidden\">added: </span>dave</ins>", text)


@pytest.fixture
def tools_documentation(client: FlaskClient) -> Iterator[int]:
    """tools' documentation version now (the store is the test's own)."""
    answer = client.get("/v1/projects/tools/documentation", headers=basic("olga"))
    assert answer.status_code == 200, answer.json
    return int(answer.json["version"])


def test_a_documentation_edit_reads_like_a_wiki_diff(client: FlaskClient,
                                                     tools_documentation: int) -> None:
    first = "# Tools\n\nThe builder runs the nightly jobs.\n\n## Access\n\nAsk in #tools.\n"
    second = ("# Tools\n\nThe builder runs the nightly and weekly jobs.\n\n## Access\n\n"
              "Ask in #tools.\n<script>alert(1)</script>\n")
    version = tools_documentation
    for text in (first, second):
        answer = client.put("/v1/projects/tools/documentation", headers=basic("olga"),
                            json={"text": text, "version": version})
        assert answer.status_code == 200, answer.json
        version = answer.json["version"]
    change = client.get("/v1/changes?action=project.documentation",
                        headers=basic("carol")).json[0]
    answer = client.get(f"/changes/{change['id']}", base_url=SITE, headers=basic("carol"))
    html = answer.data.decode()
    shown = Page(answer.data)
    well_formed(shown)
    assert shown.scripts == 0
    # The changed line, its words marked; the added line; the lines around kept.
    assert re.search(r'<tr class="removed">\s*<td class="num">3</td><td class="num"></td>', html)
    assert "The builder runs the nightly <ins>and weekly </ins>jobs." in html
    assert "<ins>&lt;script&gt;alert(1)&lt;/script&gt;</ins>" in html
    assert "Ask in #tools." in shown.text
    assert "version changed" in shown.text


def test_a_hostile_value_is_shown_inert(client: FlaskClient, web_description: str) -> None:
    assert client.patch("/v1/projects/web", json={"description": HOSTILE},
                        headers=basic("carol")).status_code == 200
    change = client.get("/v1/changes?action=project.update", headers=basic("carol")).json[0]
    for path in ("/changes", f"/changes/{change['id']}"):
        answer = client.get(path, base_url=SITE, headers=basic("carol"))
        html = answer.data.decode()
        assert "<script>" not in html
        assert "\u202e" not in html
        assert Page(answer.data).scripts == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\x202edesrever\\x202c" in html


def test_recent_changes_are_for_people_dave_included(client: FlaskClient) -> None:
    assert page(client, "/changes", uid="dave").headings[0] == (1, "Recent changes")
    for path in ("/changes", "/changes/1"):
        answer = client.get(path, base_url=SITE)
        assert answer.status_code == 302
        assert answer.headers["Location"].startswith("/login?next=")
    assert page(client, "/changes/999999", status=404).headings[0] == (1, "Not found")


def test_the_diff_of_documents_field_by_field() -> None:
    before = {"name": "web", "classes": ["motd", "role::web"], "variables": {"a": "1"},
              "branch": "production", "documentation": "# Web\n\nline two\nline three\n"}
    after = {"name": "web", "classes": ["role::web", "nginx"], "variables": {"b": "2"},
             "branch": None, "documentation": "# Web\n\nline 2\nline three\nline four\n"}
    fields = {field.path: field for field in diff_documents(before, after)}
    assert (fields["classes"].added, fields["classes"].removed) == (['nginx'], ['motd'])
    assert (fields["variables.a"].kind, fields["variables.b"].kind) == ("removed", "added")
    assert (fields["branch"].before, fields["branch"].after) == ("production", "null")
    assert fields["name"].kind == "unchanged"
    assert list(fields)[-1] == "name"  # unchanged fields come last
    lines = fields["documentation"].lines
    assert [(line.sign, line.pieces) for line in lines if line.sign != " "] == [
        ("\u2212", (("same", "line "), ("del", "two"))),
        ("+", (("same", "line "), ("ins", "2"))),
        ("+", (("ins", "line four"),))]
    assert [field.kind for field in diff_documents(None, {"a": 1})] == ["added"]
    assert [field.kind for field in diff_documents({"a": 1}, None)] == ["removed"]
    # Far apart changes keep their context and say what was left out.
    text = "\n".join(f"line {number}" for number in range(1, 21))
    changed = line_diff(text, text.replace("line 2\n", "line II\n").replace("line 19",
                                                                             "line XIX"))
    assert [line.gap for line in changed].count(True) == 1
    assert changed[-1].new == 20


# The Server Admin Log.

@pytest.fixture
def bot_client(tmp_path: Path, slapd: ThrowawaySlapd, people: None) -> Iterator[FlaskClient]:
    """The API with a bot account (tests/test_logbot_api.py's)."""
    add_bot_account(slapd, BOT, BOT_PASSWORD)
    app = create_app(api_config(tmp_path, slapd, bot_accounts=[BOT], bot_nick_limit=10,
                                bot_nick_window=3600))
    with app.test_client() as test_client:
        yield test_client
    app.extensions["opslab.engine"].dispose()


def test_the_combined_log_is_public_and_orders_projects_by_their_latest_entry(
        bot_client: FlaskClient) -> None:
    client = bot_client
    for project, message in (("web", "first in web"), ("tools", "tools' only entry"),
                             ("web", "second in web")):
        assert client.post(f"/v1/projects/{project}/log", json={"message": message},
                           headers=basic("olga")).status_code == 201
    relayed = client.post("/v1/log/chat", json={"line": "!log tools rebooted builder",
                                                "nick": "Carol_", "account": "carol"},
                          headers=as_bot())
    assert relayed.status_code == 201, relayed.json
    shown = page(client, "/log", uid=None)
    well_formed(shown)
    assert [heading for level, heading in shown.headings if level == 2] == ["tools", "web"]
    assert shown.text.index("rebooted builder") < shown.text.index("tools' only entry") \
        < shown.text.index("second in web") < shown.text.index("first in web")
    assert f"Carol_ via bot {BOT}, directory person carol" in shown.text
    assert ("/v1/log.atom", "the whole Server Admin Log (Atom)") in shown.links
    assert ("/v1/projects/tools/log.atom", "its feed (Atom)") in shown.links
    answer = client.get("/log", base_url=SITE)
    assert b'<link rel="alternate" type="application/atom+xml"' in answer.data
    web = page(client, "/log/web", uid=None)
    well_formed(web)
    assert "second in web" in web.text
    assert "tools" not in web.text.split("Server Admin Log of web")[-1]
    assert ("/v1/projects/web/log.atom", "the log of web (Atom)") in web.links
    # Anonymous visitors land on the log.
    assert client.get("/", base_url=SITE).headers["Location"] == "/log"


def test_the_combined_log_takes_each_projects_newest_entries_on_every_database(
        stored_client: FlaskClient) -> None:
    # Two queries whatever the number of projects: a window function, which SQLite,
    # PostgreSQL and MariaDB each must run.
    for number in range(7):
        project = ("web", "tools", "operations")[number % 3]
        assert stored_client.post(f"/v1/projects/{project}/log",
                                  json={"message": f"entry {number}"},
                                  headers=basic("olga")).status_code == 201
    with stored_client.application.app_context():
        sections = latest_by_project(2, 2)
    assert [(project, [entry.message for entry in entries])
            for project, entries in sections] == [("web", ["entry 6", "entry 3"]),
                                                 ("operations", ["entry 5", "entry 2"])]


def test_a_hostile_log_message_is_shown_inert(client: FlaskClient) -> None:
    assert client.post("/v1/projects/web/log", json={"message": HOSTILE},
                       headers=basic("carol")).status_code == 201
    for path in ("/log", "/log/web"):
        html = client.get(path, base_url=SITE).data.decode()
        assert "<script>" not in html
        assert "\u202e" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; \\x202edesrever\\x202c" in html


def test_a_log_message_links_its_web_addresses_and_nothing_else(client: FlaskClient) -> None:
    message = ('deployed, see https://review.example.org/c/42. Not "javascript:alert(1)" '
               'nor <a href="https://evil.example.org">this</a>')
    assert client.post("/v1/projects/web/log", json={"message": message},
                       headers=basic("carol")).status_code == 201
    shown = page(client, "/log/web", uid=None)
    assert ("https://review.example.org/c/42", "https://review.example.org/c/42") in shown.links
    assert not [href for href, _ in shown.links if "javascript" in href]
    # Markup in a message is text; the address in it is a link like any other, and ends at
    # the quote.
    assert 'nor <a href="https://evil.example.org">this</a>' in shown.text
    assert ("https://evil.example.org", "https://evil.example.org") in shown.links


# CI runs.

def finished_run(client: FlaskClient, **fields: Any) -> dict[str, Any]:
    created = client.post("/v1/ci/runs", json={**RUN, **fields}, headers=as_ci())
    assert created.status_code == 201, created.json
    run_id = created.json["id"]
    for body in ({"state": "running", "build_url": "https://jenkins.example.org/job/ci/7/",
                  "hosts": [{"original": "web1.web.example.org",
                             "clone": "ci-42-3-web1.ci.example.org", "result": None}]},
                 {"state": "failed", "vote": -1, "message": "Puppet failed: <b>boom</b>",
                  "hosts": [{"original": "web1.web.example.org",
                             "clone": "ci-42-3-web1.ci.example.org", "result": "failed"}],
                  "result": {"passed": False, "secrets": [],
                             "hosts": [{"host": "ci-42-3-web1.ci.example.org",
                                        "failed_resources": 1, "changed_again": [],
                                        "failed_checks": ["motd.file"]}]}}):
        answer = client.patch(f"/v1/ci/runs/{run_id}", json=body, headers=as_ci())
        assert answer.status_code == 200, answer.json
    document: dict[str, Any] = answer.json
    return document


@pytest.mark.usefixtures("ci_account")
def test_ci_runs_list_and_a_run_with_its_hosts_results_and_vote(client: FlaskClient) -> None:
    run = finished_run(client)
    queued = client.post("/v1/ci/runs", json={**RUN, "event_key": "another", "change": 43},
                         headers=as_ci()).json
    shown = page(client, "/ci", uid="dave")
    well_formed(shown)
    assert (f"/ci/{run['id']}", str(run["id"])) in shown.links
    assert ("https://review.example.org/c/42", "42") in shown.links
    assert ("https://jenkins.example.org/job/ci/7/", "build") in shown.links
    assert "Verified -1" in shown.text
    assert "queued" in shown.text
    only = page(client, "/ci?state=queued&project=&change=")
    assert (f"/ci/{queued['id']}", str(queued["id"])) in only.links
    assert (f"/ci/{run['id']}", str(run["id"])) not in only.links
    assert "state must be one of" in page(client, "/ci?state=won", status=422).text
    one = page(client, f"/ci/{run['id']}")
    well_formed(one)
    assert ("https://review.example.org/c/42", "change 42 in Gerrit") in one.links
    assert ("https://jenkins.example.org/job/ci/7/", "the Jenkins build") in one.links
    assert "web1.web.example.org ci-42-3-web1.ci.example.org failed" in one.text
    assert "Puppet resources failed: 1" in one.text
    assert "smoke checks failed: motd.file" in one.text
    assert "Puppet failed: <b>boom</b>" in one.text  # as text, never markup
    assert ("/v1/ci/runs.atom", "CI runs (Atom)") not in one.links  # in the head only
    assert client.get("/ci", base_url=SITE).status_code == 302  # people only


@pytest.mark.usefixtures("ci_account")
def test_a_run_url_that_is_not_http_is_never_a_link(client: FlaskClient) -> None:
    # The API takes http(s) URLs only; a run stored before that rule, or written to the
    # database by hand, still shows inert.
    run = finished_run(client)
    engine = client.application.extensions["opslab.engine"]
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE ci_runs SET build_url = ?, change_url = ? WHERE id = ?",
            ("javascript:alert(1)", "javascript:alert(2)", run["id"]))
    for path in ("/ci", f"/ci/{run['id']}"):
        shown = page(client, path)
        assert not [href for href, _ in shown.links if "javascript" in href.lower()]
    assert "javascript:alert(1)" in page(client, f"/ci/{run['id']}").text


# The host query and the monitoring export.

@pytest.fixture
def queried_hosts(client: FlaskClient) -> Iterator[list[str]]:
    """Two hosts of web with classes and variables, one with a value a spreadsheet would
    take for a formula; deleted after."""
    names = []
    for label, variables in (("q1", {"cluster": "eqiad", "note": "=HYPERLINK(\"x\")"}),
                             ("q2", {"cluster": "codfw", "note": "-2+3"})):
        created = client.post("/v1/projects/web/hosts", headers=basic("carol"), json={
            "name": f"{label}.web.example.org", "classes": ["prometheus::node", "motd"],
            "variables": variables})
        assert created.status_code == 201, created.json
        names.append(created.json["host"]["name"])
    yield names
    for name in names:
        client.delete(f"/v1/hosts/{name}", headers=basic("carol"))


@pytest.mark.parametrize("query", ["class=prometheus::node",
                                   "project=web&class=motd&var=cluster=eqiad",
                                   "failing=false&class=prometheus::node"])
def test_the_query_answers_as_the_api_does_in_html_json_and_csv(
        client: FlaskClient, queried_hosts: list[str], query: str) -> None:
    expected = client.get(f"/v1/hosts?{query}", headers=basic("dave")).json
    assert expected
    assert client.get(f"/query?{query}&format=json", base_url=SITE,
                      headers=basic("dave")).json == expected
    shown = page(client, f"/query?{query}", uid="dave")
    well_formed(shown)
    assert [text for href, text in shown.links if href.startswith("/hosts/")] == \
        [host["name"] for host in expected]
    rows = list(csv.DictReader(io.StringIO(client.get(
        f"/query?{query}&format=csv", base_url=SITE, headers=basic("dave")).data.decode())))
    assert [row["name"] for row in rows] == [host["name"] for host in expected]
    assert [row["classes"] for row in rows] == [" ".join(host["classes"]) for host in expected]


def test_the_query_form_labels_its_fields_and_keeps_what_was_asked(
        client: FlaskClient, queried_hosts: list[str]) -> None:
    html = client.get("/query?class=motd&var=cluster=codfw&project=", base_url=SITE,
                      headers=basic("carol")).data.decode()
    for field in re.findall(r'<input id="([^"]+)"', html):
        assert f'<label for="{field}">' in html
    assert 'value="cluster=codfw"' in html
    assert '<option value="" selected>any</option>' in html
    assert "1 host" in Page(html.encode()).text
    assert page(client, "/query?var=cluster", status=422).text.count("var must be NAME=VALUE")
    assert page(client, "/query?format=xml", status=422).text.count("format must be one of")
    assert client.get("/query", base_url=SITE).status_code == 302


def test_the_csv_neutralises_formulas(client: FlaskClient, queried_hosts: list[str]) -> None:
    answer = client.get("/query?class=prometheus::node&format=csv", base_url=SITE,
                        headers=basic("carol"))
    assert answer.mimetype == "text/csv"
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(answer.data.decode())))
    assert rows[0] == ["name", "project", "classes", "variables", "branch", "addresses"]
    variables = {row[0]: row[3] for row in rows[1:]}
    # Sorted by name; a cell that starts with = + - @ gets an apostrophe first.
    assert variables["q1.web.example.org"].startswith("cluster=eqiad")
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row)
    assert json.dumps(rows).count("HYPERLINK") == 1


def test_file_sd_groups_hosts_by_class_and_project(client: FlaskClient,
                                                   queried_hosts: list[str]) -> None:
    answer = client.get("/v1/monitoring/file_sd?class=prometheus::node&class=motd&port=9100",
                        headers=basic("dave"))
    assert answer.status_code == 200, answer.json
    groups = answer.json
    # Sorted by class, then project; the session's directory holds other tests' hosts too.
    labels = [(group["labels"]["opslab_class"], group["labels"].get("opslab_project", ""))
              for group in groups]
    assert labels == sorted(labels)
    assert ("motd", "web") in labels
    by_class = {group["labels"]["opslab_class"]: group for group in groups
                if group["labels"].get("opslab_project") == "web"}
    assert by_class["prometheus::node"]["targets"] == [
        "q1.web.example.org:9100", "q2.web.example.org:9100"]
    for group in groups:
        assert set(group) == {"targets", "labels"}
        assert all(LABEL_NAME.fullmatch(name) for name in group["labels"])
        assert all(re.fullmatch(r"[a-z0-9.-]+:9100", target) for target in group["targets"])
    only = client.get("/v1/monitoring/file_sd?class=prometheus::node&project=web",
                      headers=basic("carol")).json
    assert [group["targets"] for group in only] == [[f"{name}:9100" for name in queried_hosts]]
    default = client.get("/v1/monitoring/file_sd?class=prometheus::node",
                         headers=basic("carol")).json
    assert default[0]["targets"][0].endswith(":9100")
    none = client.get("/v1/monitoring/file_sd?class=nosuch::class", headers=basic("carol"))
    assert (none.status_code, none.json) == (200, [])


@pytest.mark.parametrize(("query", "message"), [
    ("class=motd&port=0", "port must be a TCP port number, 1 to 65535, got '0'"),
    ("class=motd&port=65536", "port must be a TCP port number, 1 to 65535, got '65536'"),
    ("class=motd&port=http", "port must be a TCP port number, 1 to 65535, got 'http'"),
    ("class=motd&port=1&port=2", "port may be given once"),
    ("port=9100", "class: give at least one Puppet class"),
    ("class=", "class and project may not be empty"),
    ("class=motd&job=x", "unknown parameters: job"),
])
def test_file_sd_refuses_what_it_cannot_answer_and_says_why(client: FlaskClient, query: str,
                                                            message: str) -> None:
    answer = client.get(f"/v1/monitoring/file_sd?{query}", headers=basic("carol"))
    assert answer.status_code == 422
    assert message in answer.json["error"]


def test_file_sd_is_for_people(client: FlaskClient) -> None:
    assert client.get("/v1/monitoring/file_sd?class=motd").status_code == 401

