"""Recent Changes, the Server Admin Log, CI runs and the host query in chromium
(tests/browser.py), against the API served by gunicorn: what a person sees and follows,
screenshots of each page (desktop and phone), and the accessibility basics."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser import PAGE_DEADLINE, PHONE, assert_accessible, screenshot, wait_for
from tests.conftest import basic
from tests.served_api import ServedApi
from tests.test_api_ci import RUN, as_ci, ci_account  # noqa: F401 (a fixture)
from tests.test_pages_activity import HOSTILE


def call(api: ServedApi, method: str, path: str, body: Any, uid: str = "carol") -> Any:
    status, _ = api.request(method, path, body, basic(uid))
    assert status in (200, 201, 204), (method, path, status)


def submit(browser: WebDriver, form: str, asked: str) -> None:
    """Send ``form`` and wait for the page it asks for (its URL holds ``asked``): the page
    before it has the same table."""
    browser.find_element(By.CSS_SELECTOR, f"{form} button[type=submit]").click()
    WebDriverWait(browser, PAGE_DEADLINE).until(lambda driver: asked in driver.current_url)
    wait_for(browser, "footer.site")


def shown_everywhere(browser: WebDriver, name: str) -> None:
    """The page passes the accessibility basics, on a desktop and on a phone, and its
    screenshots are kept."""
    assert_accessible(browser)
    screenshot(browser, name)
    browser.set_window_size(*PHONE)
    try:
        assert_accessible(browser)
        # Nothing wider than the phone: the page scrolls down, never sideways.
        assert browser.execute_script(
            "return document.documentElement.scrollWidth") <= PHONE[0]
    finally:
        screenshot(browser, f"{name}-phone", PHONE)


@pytest.fixture
def web_described(pages_api: ServedApi) -> Iterator[None]:
    """web's description changed twice (the second hostile) and dave added; put back."""
    status, body = pages_api.request("GET", "/v1/projects/web", None, basic("olga"))
    assert status == 200
    described = json.loads(body)["description"]
    call(pages_api, "PATCH", "/v1/projects/web",
         {"description": "Web servers for the public sites, kept by the web team"})
    call(pages_api, "PATCH", "/v1/projects/web",
         {"description": "Web servers for the public sites and the wiki, kept by the web "
                         f"team {HOSTILE}"})
    call(pages_api, "POST", "/v1/projects/web/members", {"uid": "dave"})
    yield
    call(pages_api, "PATCH", "/v1/projects/web", {"description": described}, "olga")
    call(pages_api, "DELETE", "/v1/projects/web/members/dave", None, "olga")


@pytest.mark.usefixtures("web_described")
def test_recent_changes_and_a_change_with_its_diff(carol_browser: WebDriver,
                                                   pages_api: ServedApi) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/changes")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Recent changes"
    shown_everywhere(browser, "activity-changes")
    browser.find_element(By.ID, "filter-action").send_keys("project.update")
    submit(browser, "form.filters", "action=project.update")
    browser.find_element(By.CSS_SELECTOR, "table.changes tbody tr td a").click()
    wait_for(browser, "table.text-diff")
    assert browser.find_element(By.TAG_NAME, "h1").text.endswith("project.update web")
    assert [element.text for element in browser.find_elements(By.CSS_SELECTOR, ".diff ins")][
        :1] == [" and the wiki"]
    # The hostile text is there as text: no script ran, and the override is shown as \x202e.
    text = browser.find_element(By.CSS_SELECTOR, "table.text-diff").text
    assert "<script>alert(1)</script>" in text
    assert "\\x202e" in text
    assert browser.execute_script("return document.scripts.length") == 0
    shown_everywhere(browser, "activity-change-diff")


def test_a_documentation_edit_reads_like_a_wiki_diff(carol_browser: WebDriver,
                                                     pages_api: ServedApi) -> None:
    status, body = pages_api.request("GET", "/v1/projects/web/documentation", None,
                                     basic("carol"))
    assert status == 200
    version = json.loads(body)["version"]
    for text in ("# Web\n\nThe web servers serve www and the wiki.\n\n## Deploying\n\n"
                 "1. Log it with `!log web deployed X`.\n2. Run the deploy.\n",
                 "# Web\n\nThe web servers serve www, the wiki and the blog.\n\n"
                 "## Deploying\n\n1. Log it with `!log web deployed X`.\n"
                 "2. Run the deploy from the builder.\n3. Check the front page.\n"):
        status, body = pages_api.request("PUT", "/v1/projects/web/documentation",
                                         {"text": text, "version": version}, basic("carol"))
        assert status == 200, body
        version = json.loads(body)["version"]
    browser = carol_browser
    browser.get(f"{pages_api.url}/changes?action=project.documentation")
    browser.find_element(By.CSS_SELECTOR, "table.changes tbody tr td a").click()
    wait_for(browser, "table.text-diff")
    added = [element.text for element in browser.find_elements(By.CSS_SELECTOR, ".diff ins")]
    # The edited line marks the words that came; the new line came whole.
    assert added[-3:-1] == [" from the builder", "3. Check the front page."]
    assert "2. Run the deploy from the builder." in browser.find_element(
        By.CSS_SELECTOR, "table.text-diff").text
    shown_everywhere(browser, "activity-change-documentation")


def test_the_combined_log_is_public_and_readable(browser: WebDriver,
                                                 pages_api: ServedApi) -> None:
    for project, message in (("web", "restarted nginx on web1"),
                             ("tools", "rotated the builder's logs")):
        call(pages_api, "POST", f"/v1/projects/{project}/log", {"message": message}, "olga")
    browser.delete_all_cookies()
    browser.get(f"{pages_api.url}/")
    wait_for(browser, "main h2")
    assert browser.current_url == f"{pages_api.url}/log"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Server Admin Log"
    sections = [heading.text for heading in browser.find_elements(By.CSS_SELECTOR, "main h2")]
    assert sections[:2] == ["tools", "web"]
    feeds = browser.find_elements(By.CSS_SELECTOR, "link[rel=alternate]")
    assert [feed.get_attribute("href") for feed in feeds] == [f"{pages_api.url}/v1/log.atom"]
    shown_everywhere(browser, "activity-log")
    browser.find_element(By.LINK_TEXT, "The whole log of web").click()
    WebDriverWait(browser, PAGE_DEADLINE).until(
        lambda driver: driver.current_url.endswith("/log/web"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "Server Admin Log of web"


@pytest.mark.usefixtures("ci_account")
def test_ci_runs_and_a_run(carol_browser: WebDriver, pages_api: ServedApi) -> None:
    def ci(method: str, path: str, body: Any) -> Any:
        status, answer = pages_api.request(method, path, body, as_ci())
        assert status in (200, 201), answer
        return json.loads(answer)

    run = ci("POST", "/v1/ci/runs", {**RUN, "event_key": "browser-1"})
    hosts = [{"original": "web1.web.example.org", "clone": "ci-42-3-web1.ci.example.org",
              "result": "failed"}]
    ci("PATCH", f"/v1/ci/runs/{run['id']}",
       {"state": "running", "build_url": "https://jenkins.example.org/job/ci/7/"})
    ci("PATCH", f"/v1/ci/runs/{run['id']}",
       {"state": "failed", "vote": -1, "hosts": hosts,
        "message": "Verified -1: web1.web.example.org: File[/etc/motd] failed",
        "result": {"passed": False, "secrets": [],
                   "hosts": [{"host": hosts[0]["clone"], "failed_resources": 1,
                              "changed_again": [], "failed_checks": ["motd.file"]}]}})
    ci("POST", "/v1/ci/runs", {**RUN, "event_key": "browser-2", "change": 43,
                               "subject": "tools: a second builder"})
    browser = carol_browser
    browser.get(f"{pages_api.url}/ci")
    assert browser.find_element(By.TAG_NAME, "h1").text == "CI runs"
    shown_everywhere(browser, "activity-ci-runs")
    Select(browser.find_element(By.ID, "filter-state")).select_by_visible_text("failed")
    submit(browser, "form.filters", "state=failed")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.ci-runs tbody tr")
    assert len(rows) == 1
    rows[0].find_element(By.LINK_TEXT, str(run["id"])).click()
    wait_for(browser, "dl.facts")
    assert browser.find_element(By.LINK_TEXT, "change 42 in Gerrit").get_attribute("href") \
        == RUN["change_url"]
    assert browser.find_element(By.LINK_TEXT, "the Jenkins build").get_attribute("href") \
        == "https://jenkins.example.org/job/ci/7/"
    assert "smoke checks failed: motd.file" in browser.find_element(By.TAG_NAME, "main").text
    shown_everywhere(browser, "activity-ci-run")


@pytest.fixture
def query_hosts(pages_api: ServedApi) -> Iterator[list[str]]:
    names = [f"mon{number}.web.example.org" for number in (1, 2)]
    for name, cluster in zip(names, ("eqiad", "codfw"), strict=True):
        call(pages_api, "POST", "/v1/projects/web/hosts",
             {"name": name, "classes": ["prometheus::node"], "variables": {"cluster": cluster}})
    yield names
    for name in names:
        pages_api.request("DELETE", f"/v1/hosts/{name}", None, basic("carol"))


def test_the_host_query(carol_browser: WebDriver, pages_api: ServedApi,
                        query_hosts: list[str]) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/query")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Hosts"
    browser.find_element(By.ID, "class-1").send_keys("prometheus::node")
    browser.find_element(By.ID, "var-1").send_keys("cluster=eqiad")
    submit(browser, "form.query", "class=prometheus")
    names = [cell.text for cell in
             browser.find_elements(By.CSS_SELECTOR, "table.query-hosts tbody th")]
    assert names == query_hosts[:1]
    assert browser.find_element(By.ID, "class-1").get_attribute("value") == "prometheus::node"
    assert browser.find_element(By.LINK_TEXT, "CSV").get_attribute("href").endswith(
        "format=csv&class=prometheus::node&var=cluster%3Deqiad")
    shown_everywhere(browser, "activity-query")
