"""The hosts' pages (api/pages/hosts.py) through Flask's test client against the real
slapd: each host's page, its forms and their refusals, creating a host (with an
instance, through openstacksdk and the OpenStack stand-in), and that every page action
writes through the API's own functions: the same validation, the same words, the same
audit rows. The browser tests are in test_pages_hosts_browser.py."""

import contextlib
import html
import itertools
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event

from opslab.api.pages.hosts import project_hosts
from opslab.slapd import ThrowawaySlapd
from tests.cloud_api import HOSTS, Cloud, cloud, entry
from tests.conftest import PASSWORDS, basic, bearer
from tests.openstack_standin import Fate
from tests.test_pages_session import SITE, log_in, token

__all__ = ["cloud"]  # the fixture, imported for pytest
HOST = "page1.web.example.org"
# What an instance may say: a terminal escape, a right-to-left override, markup.
HOSTILE = "\x1b[31mError\u202e: <script>alert('run')</script> & done"


@contextlib.contextmanager
def host(client: FlaskClient, label: str, **fields: Any) -> Iterator[str]:
    """A host of web created through the JSON API for the test; its token. Deleted after."""
    created = client.post("/v1/projects/web/hosts", json={"name": label, **fields},
                          headers=basic("carol"))
    assert created.status_code == 201, created.json
    try:
        yield created.json["token"]
    finally:
        client.delete(f"/v1/hosts/{label}.web.example.org", headers=basic("carol"))


def logged_in(client: FlaskClient, uid: str) -> FlaskClient:
    status, _ = log_in(client, uid, PASSWORDS[uid])
    assert status == 302
    return client


def post(client: FlaskClient, path: str, **data: str) -> Any:
    """A form posted as the browser posts it: with the session's CSRF token, from the site."""
    form = client.get("/login", base_url=SITE)
    return client.post(path, base_url=SITE, headers={"Referer": f"{SITE}/"},
                       data={"csrf_token": token(form.data), **data})


def page(client: FlaskClient, path: str, status: int = 200) -> str:
    answer = client.get(path, base_url=SITE)
    assert answer.status_code == status, answer.data[:300]
    return answer.get_data(as_text=True)


def text(markup: str) -> str:
    """A page's text as a person reads it: tags gone, entities read, spaces joined."""
    words = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())
    return re.sub(r" ([,.:;)])", r"\1", words)


def view(client: FlaskClient, name: str = HOST) -> dict[str, Any]:
    answer = client.get(f"/v1/hosts/{name}", headers=basic("dave"))
    assert answer.status_code == 200, answer.json
    document: dict[str, Any] = answer.json
    return document


def changes(client: FlaskClient, target: str) -> list[dict[str, Any]]:
    """The audit log of ``target``, oldest first."""
    found: list[dict[str, Any]] = client.get(f"/v1/changes?target={target}",
                                             headers=basic("olga")).json
    return found[::-1]


def comparable(change: dict[str, Any], name: str) -> dict[str, Any]:
    """An audit row without what differs between two writes (id, time), the host's name
    replaced by ``HOST``."""
    kept = {key: value for key, value in change.items()
            if key not in ("id", "at", "created_at", "url", "done_at")}
    return renamed(kept, name)


def renamed(document: Any, name: str) -> Any:
    if isinstance(document, dict):
        return {key: renamed(value, name) for key, value in document.items()}
    if isinstance(document, list):
        return [renamed(value, name) for value in document]
    return HOST if document == name else document


# Reading.

def test_a_host_page_needs_a_login(client: FlaskClient) -> None:
    with host(client, "page1"):
        answer = client.get(f"/hosts/{HOST}", base_url=SITE)
        assert answer.status_code == 302
        assert answer.headers["Location"] == f"/login?next=/hosts/{HOST}"


def test_the_page_says_where_every_class_parameter_and_variable_comes_from(
    client: FlaskClient,
) -> None:
    with host(client, "page1", classes=["nginx"], variables={"cluster": "esams"},
              class_parameters={"nginx": {"port": 8080}, "motd": {"message": "hi"}}):
        shown = text(page(logged_in(client, "dave"), f"/hosts/{HOST}"))
    # The layers, most specific first, as opslab-enc --explain lists them.
    assert "host dc=page1.web.example.org,ou=hosts,dc=example,dc=org" in shown
    assert "project cn=web,ou=projects,dc=example,dc=org" in shown
    assert "default dc=default,ou=hosts,dc=example,dc=org" in shown
    assert "Environment production, from the branch production (set by project web)." in shown
    # Each class with the entries naming it; each value with its source entry.
    assert "nginx host" in shown
    assert "role::web project web" in shown
    assert "base default" in shown
    assert 'port = 8080 from host' in shown
    assert 'message = "hi" from host' in shown
    assert 'cluster "esams" host' in shown
    assert 'site_name "www.example.org" project web' in shown
    assert 'ntp_server "ntp.example.org" default' in shown
    # What a more specific entry beat.
    assert 'cluster "eqiad" project web host' in shown
    assert 'motd::message "Welcome to the web project" project web host' in shown
    assert 'cluster "unassigned" default host' in shown
    assert "History its changes in Recent changes" in shown
    # dave is no member of web: he reads it all, and is offered no form.
    assert "you may not: dave is not a member of project 'web'" in shown


def test_an_entry_written_for_puppets_old_terminus_is_shown_with_its_parent(
    client: FlaskClient,
) -> None:
    shown = text(page(logged_in(client, "carol"), "/hosts/oldmail"))
    assert "Project none (an entry written for Puppet's old terminus" in shown
    assert "parent cn=legacy-base,ou=hosts,dc=example,dc=org" in shown
    assert "base parent legacy-base, default" in shown
    assert 'ntp_server "ntp.legacy.example.org" parent legacy-base' in shown
    assert 'relay "smtp.example.org" host' in shown
    assert "you may not: this host belongs to no project: only operations may change it" \
        in shown
    assert 'id="classes-field"' in page(logged_in(client, "olga"), "/hosts/oldmail")


def test_a_member_is_offered_the_forms_and_each_input_has_its_label(client: FlaskClient) -> None:
    with host(client, "page1"):
        markup = page(logged_in(client, "carol"), f"/hosts/{HOST}")
    assert markup.count("<h1>") == 1
    inputs = re.findall(r'<(?:input|select|textarea)\b[^>]*>', markup)
    visible = [tag for tag in inputs if 'type="hidden"' not in tag]
    assert len(visible) >= 6
    for tag in visible:
        identifier = re.search(r'id="([^"]+)"', tag)
        assert identifier, tag
        assert f'<label for="{identifier.group(1)}">' in markup, tag
    levels = [int(level) for level in re.findall(r"<h([1-6])\b", markup)]
    assert all(after <= before + 1 for before, after in itertools.pairwise(levels))
    assert "<script" not in markup


def test_a_failed_run_and_smoke_failures_are_shown_inert(client: FlaskClient) -> None:
    with host(client, "page1", classes=["motd"]) as host_token:
        report = {"status": "failed", "exit_code": 4, "commit": "ab" * 20,
                  "resources": {"changed": 1, "failed": 1},
                  "failed_resources": [{"resource": "Service[nginx]",
                                        "messages": [HOSTILE, "second line"]}],
                  "errors": [f"Could not apply: {HOSTILE}"]}
        assert client.post(f"/v1/hosts/{HOST}/reports", json=report,
                           headers=bearer(host_token)).status_code == 201
        smoke = {"checked_at": datetime.now(UTC).isoformat(), "commit": "ab" * 20,
                 "passed": 2, "failed": 1, "skipped": 0,
                 "failures": [{"class": "motd", "check": "motd-file", "kind": "file",
                               "message": f"missing: {HOSTILE}"}]}
        assert client.put(f"/v1/hosts/{HOST}/smoke", json=smoke,
                          headers=bearer(host_token)).status_code == 200
        state = {"disabled": True, "reason": "upgrading <b>postgres</b>",
                 "changed_at": datetime.now(UTC).isoformat(), "version": "0.1"}
        assert client.put(f"/v1/hosts/{HOST}/agent", json=state,
                          headers=bearer(host_token)).status_code == 200
        markup = page(logged_in(client, "dave"), f"/hosts/{HOST}")
    # No markup and no control character of the instance's reaches the page.
    assert "<script>" not in markup
    assert "<b>postgres" not in markup
    assert "\x1b" not in markup
    assert "\u202e" not in markup
    assert "&lt;script&gt;alert(&#39;run&#39;)&lt;/script&gt;" in markup
    assert "\\x1b[31mError\\x202e: &lt;script&gt;" in markup
    shown = text(markup)
    assert "failing" in shown
    assert "What failed in the run of" in shown
    assert "Service[nginx]" in shown
    assert "second line" in shown
    assert "Could not apply:" in shown
    assert "2 passed, 1 failed, 0 left to an outside observer" in shown
    assert "motd motd-file (file) failed missing:" in shown
    assert "disabled: upgrading <b>postgres</b>" in shown


def test_the_project_hosts_table_reads_all_hosts_in_two_queries(client: FlaskClient) -> None:
    with host(client, "page1", classes=["motd"]) as first, host(client, "page2"), \
            host(client, "page3") as third:
        client.post(f"/v1/hosts/{HOST}/reports", headers=bearer(first),
                    json={"status": "changed", "exit_code": 2, "commit": "c" * 40})
        client.put("/v1/hosts/page3.web.example.org/agent", headers=bearer(third),
                   json={"disabled": True, "reason": "maintenance",
                         "changed_at": datetime.now(UTC).isoformat()})
        app = client.application
        statements: list[str] = []

        def count(*arguments: Any) -> None:
            statements.append(str(arguments[2]))

        engine = app.extensions["opslab.engine"]
        with app.test_request_context():
            event.listen(engine, "before_cursor_execute", count)
            try:
                hosts = {item["name"]: item for item in project_hosts("web")}
            finally:
                event.remove(engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2
    first_host = hosts[HOST]
    assert first_host["classes"] == ["motd"]
    assert (first_host["last_run"]["status"], first_host["last_run"]["commit"]) == \
        ("changed", "c" * 40)
    assert hosts["page3.web.example.org"]["agent"]["reason"] == "maintenance"
    assert hosts["page2.web.example.org"]["last_run"] is None
    assert hosts["web1.web.example.org"]["address"] == "192.0.2.11"


# Changing a host.

def test_a_member_changes_classes_and_the_audit_row_is_the_apis(client: FlaskClient) -> None:
    with host(client, "page1"), host(client, "page2"):
        logged_in(client, "carol")
        answer = post(client, f"/hosts/{HOST}/classes", classes="motd\nrole::web, nginx")
        assert answer.status_code == 303
        assert answer.headers["Location"] == f"/hosts/{HOST}#classes"
        assert "The classes are saved." in text(page(client, f"/hosts/{HOST}"))
        assert view(client)["classes"] == ["motd", "role::web", "nginx"]
        through_api = client.patch("/v1/hosts/page2.web.example.org",
                                   json={"classes": ["motd", "role::web", "nginx"]},
                                   headers=basic("carol"))
        assert through_api.status_code == 200
        by_page = changes(client, HOST)[-1]
        by_api = changes(client, "page2.web.example.org")[-1]
    assert by_page["action"] == "host.update"
    assert comparable(by_page, HOST) == comparable(by_api, "page2.web.example.org")


def test_a_bad_class_name_is_refused_in_the_apis_words_and_changes_nothing(
    client: FlaskClient,
) -> None:
    with host(client, "page1", classes=["motd"]):
        logged_in(client, "carol")
        before = changes(client, HOST)
        answer = post(client, f"/hosts/{HOST}/classes", classes="motd Role::Web")
        api = client.patch(f"/v1/hosts/{HOST}", json={"classes": ["motd", "Role::Web"]},
                           headers=basic("carol"))
        assert answer.status_code == api.status_code == 422
        assert api.json["error"] in html.unescape(answer.get_data(as_text=True))
        assert "is not a Puppet class name" in api.json["error"]
        # What was typed is kept in the form, to be mended.
        assert "motd Role::Web</textarea>" in answer.get_data(as_text=True)
        assert view(client)["classes"] == ["motd"]
        assert changes(client, HOST) == before


def test_a_non_member_is_refused_and_nothing_changes(client: FlaskClient) -> None:
    with host(client, "page1", classes=["motd"], variables={"cluster": "esams"},
              class_parameters={"motd": {"message": "hi"}}):
        logged_in(client, "dave")
        before = view(client)
        audit = changes(client, HOST)
        for path, data in [
            (f"/hosts/{HOST}/classes", {"classes": "base"}),
            (f"/hosts/{HOST}/class-parameter", {"class": "motd", "parameter": "message",
                                                "value": "pwned", "action": "set"}),
            (f"/hosts/{HOST}/class-parameter", {"class": "motd", "parameter": "message",
                                                "action": "remove"}),
            (f"/hosts/{HOST}/variable", {"name": "cluster", "value": "x", "action": "set"}),
            (f"/hosts/{HOST}/delete", {}),
        ]:
            answer = post(client, path, **data)
            assert answer.status_code == 403, path
            assert "dave is not a member of project &#39;web&#39;" in answer.get_data(
                as_text=True), path
        assert view(client) == before
        assert changes(client, HOST) == audit
        # Nor is he shown the delete button.
        assert 'class="danger"' not in page(client, f"/hosts/{HOST}/delete")


def test_a_class_parameter_is_set_changed_and_removed(client: FlaskClient) -> None:
    with host(client, "page1", classes=["nginx"],
              class_parameters={"nginx": {"workers": 4}}), host(client, "page2"):
        logged_in(client, "carol")
        assert post(client, f"/hosts/{HOST}/class-parameter", **{
            "class": "nginx", "parameter": "port", "value": "8080", "kind": "json",
            "action": "set"}).status_code == 303
        assert post(client, f"/hosts/{HOST}/class-parameter", **{
            "class": "motd", "parameter": "message", "value": "hello <world>",
            "action": "set"}).status_code == 303
        assert view(client)["class_parameters"] == {
            "nginx": {"workers": 4, "port": 8080}, "motd": {"message": "hello <world>"}}
        shown = text(page(client, f"/hosts/{HOST}"))
        assert "The class parameter motd::message is set." in shown
        assert 'motd::message "hello <world>"' in shown

        assert post(client, f"/hosts/{HOST}/class-parameter", **{
            "class": "nginx", "parameter": "workers", "action": "remove"}).status_code == 303
        assert post(client, f"/hosts/{HOST}/class-parameter", **{
            "class": "motd", "parameter": "message", "action": "remove"}).status_code == 303
        assert view(client)["class_parameters"] == {"nginx": {"port": 8080}}
        # The page's audit rows are those the API writes for the same changes.
        client.patch("/v1/hosts/page2.web.example.org", headers=basic("carol"),
                     json={"classes": ["nginx"], "class_parameters": {"nginx": {"workers": 4}}})
        for body in ({"nginx": {"workers": 4, "port": 8080}},
                     {"nginx": {"workers": 4, "port": 8080}, "motd": {"message": "hello <world>"}},
                     {"nginx": {"port": 8080}, "motd": {"message": "hello <world>"}},
                     {"nginx": {"port": 8080}}):
            assert client.patch("/v1/hosts/page2.web.example.org", headers=basic("carol"),
                                json={"class_parameters": body}).status_code == 200
        by_page = [comparable(change, HOST) for change in changes(client, HOST)[1:]]
        by_api = [comparable(change, "page2.web.example.org")
                  for change in changes(client, "page2.web.example.org")[2:]]
        assert by_page == by_api


@pytest.mark.parametrize(("data", "words"), [
    ({"class": "Nginx", "parameter": "port", "value": "80"}, "is not a Puppet class name"),
    ({"class": "nginx", "parameter": "Port", "value": "80"}, "is not a Puppet parameter name"),
    ({"class": "nginx", "parameter": "port", "value": "NaN", "kind": "json"},
     "which is not a JSON number"),
    ({"class": "nginx", "parameter": "port", "value": "{\"a\": 1, \"a\": 2}", "kind": "json"},
     "names the key 'a' twice"),
    ({"class": "nginx", "parameter": "port", "value": "x" * 5000},
     "is larger than 4096 bytes as JSON"),
    ({"class": "nginx", "parameter": "port", "value": "a\x00b"}, "contains a NUL character"),
])
def test_a_bad_class_parameter_is_refused_with_the_apis_words(
    client: FlaskClient, data: dict[str, str], words: str
) -> None:
    with host(client, "page1", classes=["nginx"], class_parameters={"nginx": {"port": 80}}):
        logged_in(client, "carol")
        audit = changes(client, HOST)
        answer = post(client, f"/hosts/{HOST}/class-parameter", action="set", **data)
        assert answer.status_code == 422
        assert words in html.unescape(answer.get_data(as_text=True))
        assert view(client)["class_parameters"] == {"nginx": {"port": 80}}
        assert changes(client, HOST) == audit


def test_removing_what_is_not_there_is_refused(client: FlaskClient) -> None:
    with host(client, "page1"):
        logged_in(client, "carol")
        answer = post(client, f"/hosts/{HOST}/class-parameter", **{
            "class": "nginx", "parameter": "port", "action": "remove"})
        assert answer.status_code == 404
        assert f"{HOST} has no class parameter nginx::port" in answer.get_data(as_text=True)
        answer = post(client, f"/hosts/{HOST}/variable", name="cluster", action="remove")
        assert answer.status_code == 404
        assert len(changes(client, HOST)) == 1  # its creation only


def test_variables_are_set_and_removed_within_the_apis_rules(client: FlaskClient) -> None:
    with host(client, "page1", variables={"cluster": "esams"}):
        logged_in(client, "carol")
        assert post(client, f"/hosts/{HOST}/variable", name="role_name",
                    value="frontend", action="set").status_code == 303
        assert view(client)["variables"] == {"cluster": "esams", "role_name": "frontend"}
        for name, value, words in [
            ("trusted", "x", "is one Puppet reserves"),
            ("cluster", "two\nlines", "must be one line of printable ASCII text"),
            ("Bad-Name", "x", "is not a Puppet variable name"),
        ]:
            answer = post(client, f"/hosts/{HOST}/variable", name=name, value=value,
                          action="set")
            assert answer.status_code == 422, name
            assert words in html.unescape(answer.get_data(as_text=True)), name
        assert post(client, f"/hosts/{HOST}/variable", name="cluster",
                    action="remove").status_code == 303
        assert view(client)["variables"] == {"role_name": "frontend"}
        assert [change["action"] for change in changes(client, HOST)] == [
            "host.create", "host.update", "host.update"]


def test_a_host_takes_a_branch_of_its_own_and_gives_it_back(client: FlaskClient) -> None:
    with host(client, "page1"):
        logged_in(client, "carol")
        assert post(client, f"/hosts/{HOST}/branch", branch="feature/motd").status_code == 303
        assert view(client)["branch"] == "feature/motd"
        shown = text(page(client, f"/hosts/{HOST}"))
        assert "The branch is feature/motd." in shown
        assert "Environment feature_motd, from the branch feature/motd (set by host)." in shown
        refused = post(client, f"/hosts/{HOST}/branch", branch="feature..motd")
        api = client.patch(f"/v1/hosts/{HOST}", json={"branch": "feature..motd"},
                           headers=basic("carol"))
        assert refused.status_code == api.status_code == 422
        assert api.json["error"] in html.unescape(refused.get_data(as_text=True))
        assert post(client, f"/hosts/{HOST}/branch", branch="").status_code == 303
        assert view(client)["branch"] is None
        assert [change["action"] for change in changes(client, HOST)] == [
            "host.create", "host.update", "host.update"]


def test_a_form_without_its_csrf_token_changes_nothing(client: FlaskClient) -> None:
    with host(client, "page1", classes=["motd"]):
        logged_in(client, "carol")
        answer = client.post(f"/hosts/{HOST}/classes", base_url=SITE,
                             headers={"Referer": f"{SITE}/"}, data={"classes": "base"})
        assert answer.status_code == 400
        answer = client.post(f"/hosts/{HOST}/delete", base_url=SITE,
                             headers={"Referer": f"{SITE}/"}, data={})
        assert answer.status_code == 400
        assert view(client)["classes"] == ["motd"]


def test_deleting_asks_first_then_deletes_as_the_api_does(client: FlaskClient,
                                                          slapd: ThrowawaySlapd) -> None:
    with host(client, "page1"):
        logged_in(client, "carol")
        confirm = page(client, f"/hosts/{HOST}/delete")
        assert f'action="/hosts/{HOST}/delete"' in confirm
        assert 'method="post"' in confirm
        assert entry(slapd, f"dc={HOST},{HOSTS}") is not None  # asking changed nothing
        answer = post(client, f"/hosts/{HOST}/delete")
        assert answer.status_code == 303
        assert entry(slapd, f"dc={HOST},{HOSTS}") is None
        assert f"{HOST} is deleted." in text(page(client, answer.headers["Location"]))
        deleted = changes(client, HOST)[-1]
        assert (deleted["action"], deleted["actor"], deleted["after"]) == \
            ("host.delete", "person:carol", None)
        assert client.get(f"/hosts/{HOST}", base_url=SITE).status_code == 404


# Creating a host.

def test_the_new_host_form_is_for_members(client: FlaskClient) -> None:
    markup = page(logged_in(client, "carol"), "/projects/web/hosts/new")
    assert markup.count("<h1>") == 1
    for field in ("host-name", "host-classes", "host-launch", "host-image", "host-flavor"):
        assert f'<label for="{field}">' in markup
        assert f'id="{field}"' in markup
    # This site launches no instances (no instances.bootstrap_url): not asked by default.
    assert '<input type="checkbox" id="host-launch" name="launch" value="yes">' in markup
    dave = page(logged_in(client, "dave"), "/projects/web/hosts/new")
    assert "<form method=\"post\" action=\"/projects/web/hosts/new\"" not in dave
    assert "dave is not a member of project &#39;web&#39;" in dave
    assert "no project" in text(page(client, "/projects/nosuch/hosts/new", status=404))


def test_creating_a_host_shows_its_token_once_and_logs_it_nowhere(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    logged_in(client, "carol")
    with caplog.at_level(logging.DEBUG):
        answer = post(client, "/projects/web/hosts/new", name="page1", classes="motd role::web")
    try:
        assert answer.status_code == 201, answer.data[:500]
        markup = answer.get_data(as_text=True)
        assert answer.headers["Cache-Control"] == "private, no-store"
        host_token = re.search(r'<pre class="token">([^<]+)</pre>', markup)
        assert host_token
        assert "Shown this once." in markup
        assert f'href="/hosts/{HOST}"' in markup
        # The token is the host's: it reads its own host.
        assert client.get(f"/v1/hosts/{HOST}",
                          headers=bearer(host_token.group(1))).status_code == 200
        assert host_token.group(1) not in caplog.text
        assert view(client)["classes"] == ["motd", "role::web"]
        [created] = changes(client, HOST)
        assert (created["action"], created["actor"]) == ("host.create", "person:carol")
        # The same name again: the API's conflict, with the form kept.
        again = post(client, "/projects/web/hosts/new", name="page1", classes="motd")
        assert again.status_code == 409
        assert "would take over existing entries" in again.get_data(as_text=True)
        assert 'value="page1"' in again.get_data(as_text=True)
    finally:
        client.delete(f"/v1/hosts/{HOST}", headers=basic("carol"))


@pytest.mark.parametrize(("uid", "name", "classes", "status", "words"), [
    ("carol", "Page_1", "", 422, "is not a lowercase DNS name"),
    ("carol", "page1.mail.example.org", "", 422, "name:"),
    ("carol", "page1", "motd motd", 422, "has non-unique elements"),
    ("dave", "page1", "motd", 403, "dave is not a member of project 'web'"),
])
def test_a_refused_creation_creates_nothing(client: FlaskClient, slapd: ThrowawaySlapd,
                                            uid: str, name: str, classes: str, status: int,
                                            words: str) -> None:
    logged_in(client, uid)
    answer = post(client, "/projects/web/hosts/new", name=name, classes=classes)
    assert answer.status_code == status
    assert words in html.unescape(answer.get_data(as_text=True))
    assert entry(slapd, f"dc={HOST},{HOSTS}") is None
    assert changes(client, HOST) == []


def test_a_member_creates_a_host_with_an_instance(cloud: Cloud, slapd: ThrowawaySlapd) -> None:
    client = logged_in(cloud.client, "carol")
    answer = post(client, "/projects/web/hosts/new", name="page1", classes="motd",
                  launch="yes", flavor="m1.small")
    assert answer.status_code == 201, answer.data[:600]
    shown = text(answer.get_data(as_text=True))
    [created] = cloud.created
    assert created.name == HOST
    assert "Its instance is active at" in shown
    assert "The instance already has it." in shown
    assert [change["action"] for change in changes(client, HOST)] == [
        "host.create", "instance.launch"]
    host_page = text(page(client, f"/hosts/{HOST}"))
    assert "State active" in host_page
    assert "Image debian-12" in host_page
    assert "Flavor m1.small: 1 core, 2048 MB of RAM" in host_page
    # Deleting it through the page deletes the instance first, as the API does.
    assert post(client, f"/hosts/{HOST}/delete").status_code == 303
    assert cloud.standin.status(created.id) is None
    assert [change["action"] for change in changes(client, HOST)][-2:] == [
        "instance.delete", "host.delete"]


def test_a_launch_that_fails_is_shown_and_leaves_nothing(cloud: Cloud,
                                                         slapd: ThrowawaySlapd) -> None:
    cloud.standin.on_create = lambda created: (cloud.created.append(created),
                                               Fate.error("No valid host was found."))[1]
    client = logged_in(cloud.client, "carol")
    answer = post(client, "/projects/web/hosts/new", name="page1", classes="motd",
                  launch="yes")
    assert answer.status_code == 502
    assert "No valid host was found." in answer.get_data(as_text=True)
    assert 'value="page1"' in answer.get_data(as_text=True)
    assert entry(slapd, f"dc={HOST},{HOSTS}") is None
    assert [change["action"] for change in changes(client, HOST)] == [
        "host.create", "host.delete"]
