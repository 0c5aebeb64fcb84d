"""The projects' pages in a real browser (Debian's chromium through Selenium), against the
API served by gunicorn and the real slapd: a member switches the branch, adds a member,
logs a line and edits the documentation (a script in it stays text); the accessibility
basics of each page; screenshots of the list and of a project's page, on a desktop and
on a phone (tests/browser.py keeps them as artifacts)."""

import json
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.browser import PHONE, assert_accessible, log_in, screenshot, wait_for
from tests.conftest import PASSWORDS, basic
from tests.served_api import ServedApi

PROJECT = "web"


def images_have_alt(driver: WebDriver) -> None:
    missing = [image.get_attribute("outerHTML")
               for image in driver.find_elements(By.TAG_NAME, "img")
               if image.get_attribute("alt") is None]
    assert missing == []


def submit(form_field: WebElement) -> None:
    form_field.find_element(By.XPATH, "./ancestor::form").find_element(
        By.CSS_SELECTOR, "button[type=submit]").click()


def flash(driver: WebDriver) -> str:
    wait_for(driver, "p.flash")
    return " ".join(item.text for item in driver.find_elements(By.CSS_SELECTOR, "p.flash"))


@pytest.fixture
def web_restored(pages_api: ServedApi) -> Iterator[None]:
    """web's members and branch as they were before the test (the directory is shared)."""
    status, body = pages_api.request("GET", f"/v1/projects/{PROJECT}", headers=basic("olga"))
    assert status == 200
    before = json.loads(body)
    yield
    _, body = pages_api.request("GET", f"/v1/projects/{PROJECT}", headers=basic("olga"))
    for uid in set(json.loads(body)["members"]) - set(before["members"]):
        pages_api.request("DELETE", f"/v1/projects/{PROJECT}/members/{uid}",
                          headers=basic("olga"))
    pages_api.request("PATCH", f"/v1/projects/{PROJECT}", {"branch": before["branch"]},
                      headers=basic("olga"))


def test_the_projects_list(carol_browser: WebDriver, pages_api: ServedApi) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/projects")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.projects tbody tr")
    names = [row.find_element(By.CSS_SELECTOR, "th a").text for row in rows]
    assert PROJECT in names
    assert names == sorted(names)
    web = rows[names.index(PROJECT)]
    assert "carol" in web.text
    assert_accessible(browser)
    images_have_alt(browser)
    screenshot(browser, "projects")
    screenshot(browser, "projects-phone", PHONE)
    web.find_element(By.CSS_SELECTOR, "th a").click()
    wait_for(browser, "h1")
    assert browser.current_url == f"{pages_api.url}/projects/{PROJECT}"


def test_a_member_switches_the_branch_adds_a_member_and_logs(
        carol_browser: WebDriver, pages_api: ServedApi, web_restored: None) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/projects/{PROJECT}")
    assert browser.find_element(By.TAG_NAME, "h1").text == PROJECT
    assert_accessible(browser)
    images_have_alt(browser)

    branch = browser.find_element(By.ID, "branch-name")
    branch.clear()
    branch.send_keys("feature/browser")
    submit(branch)
    assert "now follow the branch feature/browser" in flash(browser)
    assert browser.current_url.endswith(f"/projects/{PROJECT}#branch")
    assert browser.find_element(By.ID, "branch-name").get_attribute("value") == "feature/browser"

    uid = browser.find_element(By.ID, "member-uid")
    uid.send_keys("dave")
    submit(uid)
    assert "dave is now a member of web." in flash(browser)
    members = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR,
                                                            "table.members tbody th")]
    assert "dave" in members

    message = browser.find_element(By.ID, "log-message")
    message.send_keys("switched web to feature/browser from the browser")
    submit(message)
    assert "Logged." in flash(browser)
    assert "switched web to feature/browser from the browser" in browser.find_element(
        By.CSS_SELECTOR, "#log table.log").text

    # A refusal is shown at its form, and the page is as accessible as ever.
    message = browser.find_element(By.ID, "log-message")
    message.send_keys("   ")
    submit(message)
    assert "must be one line of 1 to 2000 characters" in flash(browser)
    assert_accessible(browser)
    screenshot(browser, "project-refused-phone", PHONE)


def test_a_member_edits_the_documentation_and_a_script_stays_text(
        carol_browser: WebDriver, pages_api: ServedApi) -> None:
    browser = carol_browser
    browser.get(f"{pages_api.url}/projects/{PROJECT}")
    text = browser.find_element(By.ID, "documentation-text")
    if not text.is_displayed():
        browser.find_element(By.CSS_SELECTOR, "details.project-edit summary").click()
    text.clear()
    text.send_keys("# The web site\n\nHow to deploy: **run puppet**.\n\n"
                   "<script>document.title = 'owned'</script>\n\n"
                   "- [the wiki](https://wiki.example.org)\n- [trap](javascript:alert(1))\n")
    submit(text)
    assert "The documentation is saved." in flash(browser)
    document = browser.find_element(By.CSS_SELECTOR, "#documentation .document")
    assert "<script>document.title = 'owned'</script>" in document.text  # shown, as text
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.title != "owned"
    assert document.find_element(By.TAG_NAME, "strong").text == "run puppet"
    assert document.find_element(By.TAG_NAME, "h3").text == "The web site"
    links = {link.text: link.get_attribute("href")
             for link in document.find_elements(By.TAG_NAME, "a")}
    assert links["the wiki"] == "https://wiki.example.org/"
    assert "trap" not in links  # nh3 keeps no javascript: link
    assert_accessible(browser)
    images_have_alt(browser)
    screenshot(browser, "project")
    screenshot(browser, "project-phone", PHONE)


def test_a_person_of_no_project_sees_no_member_forms(browser: WebDriver,
                                                    pages_api: ServedApi) -> None:
    browser.delete_all_cookies()
    log_in(browser, pages_api.url, "dave", PASSWORDS["dave"])
    browser.get(f"{pages_api.url}/projects/{PROJECT}")
    assert browser.find_elements(By.CSS_SELECTOR, "main form") == []
    assert_accessible(browser)
    screenshot(browser, "project-not-a-member")
