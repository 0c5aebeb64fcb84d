"""The hosts' pages in chromium (tests/browser.py), against the API served by gunicorn
with openstacksdk talking to the OpenStack stand-in: a member creates a host with its
instance, changes a class parameter and deletes the host after confirming; everyone sees
a failed run with its failure, inert. Screenshots of each page (desktop and phone) and
the accessibility basics."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from opslab.slapd import ThrowawaySlapd
from tests.browser import PHONE, assert_accessible, screenshot, wait_for
from tests.conftest import BASE, basic, bearer
from tests.openstack_standin import StandIn
from tests.served_api import ServedApi

CREATED = "browser1.web.example.org"
FAILING = "browser2.web.example.org"
HOSTILE = "\x1b[31mError\u202e: <script>document.title='owned'</script>"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with StandIn() as cloud:
        yield cloud


@pytest.fixture(scope="module")
def pages_api(tmp_path_factory: pytest.TempPathFactory, slapd: ThrowawaySlapd,
              people: None, standin: StandIn) -> Iterator[ServedApi]:
    """The API and its pages under gunicorn, launching instances on the stand-in (this
    module's own: the shared pages_api launches none)."""
    work = tmp_path_factory.mktemp("pages-hosts-api")
    clouds = standin.clouds_yaml(work / "clouds.yaml")
    served = ServedApi(work, slapd, BASE, settings={"instances": {
        "provider": "openstack", "cloud": "standin", "clouds_file": str(clouds),
        "image": "debian-12", "flavor": "m1.small", "network": "private",
        "bootstrap_url": "https://opslab.example.org/bootstrap.sh", "package": "opslab==0.1",
        "ldap_uri": "ldaps://ldap.example.org", "remote": "https://git.example.org/puppet.git",
        "launch_timeout": 20.0, "delete_timeout": 10.0, "request_timeout": 5.0}})
    served.start()
    yield served
    for name in (CREATED, FAILING):
        served.request("DELETE", f"/v1/hosts/{name}", None, basic("olga"))
    served.stop()


def api(served: ServedApi, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> Any:
    status, answer = served.request(method, path, body, headers or basic("carol"))
    assert status in (200, 201, 204), (method, path, status, answer[:300])
    return json.loads(answer) if answer else None


def shown_everywhere(browser: WebDriver, name: str) -> None:
    """The page passes the accessibility basics on a desktop and on a phone, where nothing
    is wider than the screen; its screenshots are kept."""
    assert_accessible(browser)
    screenshot(browser, name)
    browser.set_window_size(*PHONE)
    try:
        assert_accessible(browser)
        assert browser.execute_script("return document.documentElement.scrollWidth") \
            <= PHONE[0]
    finally:
        screenshot(browser, f"{name}-phone", PHONE)


def test_a_member_creates_a_host_with_an_instance(carol_browser: WebDriver,
                                                  pages_api: ServedApi,
                                                  standin: StandIn) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/projects/web/hosts/new")
    shown_everywhere(browser, "new-host")
    assert browser.find_element(By.ID, "host-launch").is_selected()  # the site launches
    browser.find_element(By.ID, "host-name").send_keys("browser1")
    browser.find_element(By.ID, "host-classes").send_keys("motd\nnginx")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(browser, "pre.token")
    assert browser.find_element(By.TAG_NAME, "h1").text == f"{CREATED} is created"
    assert "Shown this once." in browser.find_element(By.CSS_SELECTOR, "p.flash.error").text
    token = browser.find_element(By.CSS_SELECTOR, "pre.token").text
    assert "Its instance is active at 10.0.0." in browser.find_element(By.TAG_NAME, "main").text
    shown_everywhere(browser, "new-host-created")
    # The token is the host's own, and shown nowhere else.
    assert api(pages_api, "GET", f"/v1/hosts/{CREATED}", headers=bearer(token))["name"] == \
        CREATED
    assert token not in pages_api.log.read_text(encoding="utf-8", errors="replace")

    browser.find_element(By.LINK_TEXT, "its page").click()
    wait_for(browser, "#instance")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "State\nactive" in main
    assert "Flavor\nm1.small: 1 core, 2048 MB of RAM" in main
    assert [server.created.name for server in standin.servers.values()] == [CREATED]


def test_a_member_changes_a_class_parameter(carol_browser: WebDriver,
                                            pages_api: ServedApi) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/hosts/{CREATED}")
    browser.find_element(By.ID, "parameter-class").send_keys("nginx")
    browser.find_element(By.ID, "parameter-name").send_keys("port")
    browser.find_element(By.ID, "parameter-value").send_keys("8080")
    Select(browser.find_element(By.ID, "parameter-kind")).select_by_value("json")
    browser.find_element(By.XPATH, "//button[text()='Set the parameter']").click()
    wait_for(browser, "p.flash.info")
    assert browser.find_element(By.CSS_SELECTOR, "p.flash.info").text == \
        "The class parameter nginx::port is set."
    assert browser.current_url.endswith(f"/hosts/{CREATED}#class-parameters")
    classes = browser.find_element(By.XPATH, "//h3[text()='Classes and their parameters']"
                                             "/following-sibling::div[1]").text
    assert "port = 8080 from host" in classes
    assert api(pages_api, "GET", f"/v1/hosts/{CREATED}")["class_parameters"] == {
        "nginx": {"port": 8080}}
    shown_everywhere(browser, "host")

    # A bad one is refused in the API's words; what was typed stays to be mended.
    browser.find_element(By.ID, "parameter-class").send_keys("Nginx")
    browser.find_element(By.ID, "parameter-name").send_keys("port")
    browser.find_element(By.ID, "parameter-value").send_keys("80")
    browser.find_element(By.XPATH, "//button[text()='Set the parameter']").click()
    wait_for(browser, "p.flash.error")
    assert "'Nginx' is not a Puppet class name" in browser.find_element(
        By.CSS_SELECTOR, "p.flash.error").text
    assert browser.find_element(By.ID, "parameter-class").get_attribute("value") == "Nginx"
    assert api(pages_api, "GET", f"/v1/hosts/{CREATED}")["class_parameters"] == {
        "nginx": {"port": 8080}}


def test_everyone_sees_a_failed_run_with_its_failure_inert(carol_browser: WebDriver,
                                                           pages_api: ServedApi) -> None:
    host_token = api(pages_api, "POST", "/v1/projects/web/hosts",
                     {"name": "browser2", "classes": ["nginx"]})["token"]
    report = {"status": "failed", "exit_code": 4, "commit": "cd" * 20,
              "resources": {"changed": 0, "failed": 1},
              "failed_resources": [{"resource": "Service[nginx]",
                                    "messages": [f"Could not start: {HOSTILE}"]}]}
    api(pages_api, "POST", f"/v1/hosts/{FAILING}/reports", report, bearer(host_token))
    api(pages_api, "PUT", f"/v1/hosts/{FAILING}/smoke",
        {"checked_at": datetime.now(UTC).isoformat(), "passed": 0, "failed": 1, "skipped": 0,
         "failures": [{"class": "nginx", "check": "http", "kind": "http",
                       "message": "connection refused on port 80"}]}, bearer(host_token))
    browser = carol_browser
    browser.get(f"{pages_api.url}/hosts/{FAILING}")
    wait_for(browser, "ul.failures")
    assert browser.title == f"{FAILING} · opslab"  # no script of the report ran
    assert browser.find_elements(By.CSS_SELECTOR, "main script") == []
    failure = browser.find_element(By.CSS_SELECTOR, "ul.failures li").text
    assert "Service[nginx]" in failure
    assert "Could not start: \\x1b[31mError\\x202e: <script>document.title='owned'</script>" \
        in failure
    smoke = browser.find_element(By.XPATH, "//h2[@id='smoke']/following-sibling::div[1]").text
    assert "connection refused on port 80" in smoke
    assert "failing" in browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    shown_everywhere(browser, "host-failing")

    # The project's page lists it with its last run and smoke status, and links to it.
    browser.get(f"{pages_api.url}/projects/web")
    row = browser.find_element(By.XPATH, f"//table[contains(@class, 'hosts')]//tr[th/a[text()="
                                         f"'{FAILING}']]")
    assert "failed" in row.text
    assert "1 failed" in row.text
    assert "cdcdcdcdcdcd" in row.text
    browser.set_window_size(*PHONE)
    try:
        assert browser.execute_script("return document.documentElement.scrollWidth") \
            <= PHONE[0]
        screenshot(browser, "project-hosts-phone", PHONE)
    finally:
        browser.set_window_size(1280, 900)
    row.find_element(By.LINK_TEXT, FAILING).click()
    wait_for(browser, "ul.failures")


def test_a_member_deletes_a_host_after_confirming(carol_browser: WebDriver,
                                                  pages_api: ServedApi, standin: StandIn,
                                                  tmp_path: Path) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/hosts/{CREATED}")
    browser.find_element(By.CSS_SELECTOR, "a.delete-host").click()
    wait_for(browser, "button.danger")
    assert api(pages_api, "GET", f"/v1/hosts/{CREATED}")["name"] == CREATED  # not yet
    shown_everywhere(browser, "host-delete")
    browser.find_element(By.CSS_SELECTOR, "button.danger").click()
    wait_for(browser, "p.flash.info")
    assert browser.find_element(By.CSS_SELECTOR, "p.flash.info").text == \
        f"{CREATED} is deleted, with its instance."
    status, _ = pages_api.request("GET", f"/v1/hosts/{CREATED}", None, basic("carol"))
    assert status == 404
    assert all(standin.status(sid) is None for sid in standin.servers)
