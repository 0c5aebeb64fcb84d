"""Recent Changes, the Server Admin Log, CI runs and the host query in chromium
(tests/browser.py), against the API served by gunicorn: what a person sees, screenshots
of each page (desktop and phone), and the accessibility basics."""

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import PHONE, assert_accessible, screenshot
from tests.conftest import basic
from tests.served_api import ServedApi


def test_the_combined_log_is_public_and_readable(browser: WebDriver,
                                                 pages_api: ServedApi) -> None:
    for project, message in (("web", "restarted nginx"), ("tools", "rotated the logs")):
        status, _ = pages_api.request("POST", f"/v1/projects/{project}/log",
                                      {"message": message}, basic("olga"))
        assert status == 201
    browser.delete_all_cookies()
    browser.get(f"{pages_api.url}/log")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Server Admin Log"
    sections = [heading.text for heading in browser.find_elements(By.CSS_SELECTOR, "main h2")]
    assert sections[:2] == ["tools", "web"]
    assert_accessible(browser)
    screenshot(browser, "activity-log")
    screenshot(browser, "activity-log-phone", PHONE)
