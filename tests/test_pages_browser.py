"""The pages in a real browser: Debian's chromium driven by Selenium, against the API
served by gunicorn (tests/served_api.py) and the real slapd. Screenshots of the pages
are kept as test artifacts (tests/browser.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from opslab.slapd import ThrowawaySlapd
from tests.browser import PHONE, chromium, log_in, screenshot, wait_for
from tests.conftest import BASE, PASSWORDS
from tests.served_api import ServedApi


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, slapd: ThrowawaySlapd,
         people: None) -> Iterator[ServedApi]:
    served = ServedApi(tmp_path_factory.mktemp("pages-api"), slapd, BASE)
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium")) as driver:
        yield driver


@pytest.fixture
def carol(browser: WebDriver, site: ServedApi) -> WebDriver:
    """The browser, logged in as carol (a member of web)."""
    browser.delete_all_cookies()
    log_in(browser, site.url, "carol", PASSWORDS["carol"])
    return browser


def test_a_person_logs_in_and_out(browser: WebDriver, site: ServedApi, tmp_path: Path) -> None:
    browser.delete_all_cookies()
    browser.get(f"{site.url}/projects")
    assert "/login?next=/projects" in browser.current_url  # sent to log in, and back after
    screenshot(browser, "login")
    screenshot(browser, "login-phone", PHONE)
    log_in(browser, site.url, "carol", PASSWORDS["carol"])
    assert browser.current_url == f"{site.url}/projects"
    cookie = browser.get_cookie("opslab_session")
    assert cookie is not None
    assert cookie["secure"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"
    assert browser.find_element(By.CSS_SELECTOR, "header .who span").text == "carol"
    browser.find_element(By.CSS_SELECTOR, "header .who button").click()
    wait_for(browser, "p.flash.info")
    browser.get(f"{site.url}/projects")
    assert "/login" in browser.current_url


def test_a_wrong_password_is_shown_and_kept_out(browser: WebDriver, site: ServedApi) -> None:
    browser.delete_all_cookies()
    browser.get(f"{site.url}/login")
    browser.find_element(By.ID, "uid").send_keys("carol")
    browser.find_element(By.ID, "password").send_keys("not her password")
    browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    wait_for(browser, "p.flash.error")
    assert "invalid user name or password" in browser.find_element(
        By.CSS_SELECTOR, "p.flash.error").text
    assert browser.find_element(By.ID, "uid").get_attribute("value") == "carol"
    assert browser.find_element(By.ID, "password").get_attribute("value") == ""
