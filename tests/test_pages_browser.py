"""The pages in a real browser: Debian's chromium driven by Selenium, against the API
served by gunicorn (tests/served_api.py) and the real slapd. Screenshots of the pages
are kept as test artifacts (tests/browser.py)."""

from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import PHONE, log_in, screenshot, wait_for
from tests.conftest import PASSWORDS
from tests.served_api import ServedApi


def test_a_person_logs_in_and_out(browser: WebDriver, pages_api: ServedApi, tmp_path: Path) -> None:
    browser.delete_all_cookies()
    browser.get(f"{pages_api.url}/projects")
    assert "/login?next=/projects" in browser.current_url  # sent to log in, and back after
    screenshot(browser, "login")
    screenshot(browser, "login-phone", PHONE)
    log_in(browser, pages_api.url, "carol", PASSWORDS["carol"])
    assert browser.current_url == f"{pages_api.url}/projects"
    cookie = browser.get_cookie("opslab_session")
    assert cookie is not None
    assert cookie["secure"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax"
    assert browser.find_element(By.CSS_SELECTOR, "header .who span").text == "carol"
    browser.find_element(By.CSS_SELECTOR, "header .who button").click()
    wait_for(browser, "p.flash.info")
    browser.get(f"{pages_api.url}/projects")
    assert "/login" in browser.current_url


def test_a_wrong_password_is_shown_and_kept_out(browser: WebDriver, pages_api: ServedApi) -> None:
    browser.delete_all_cookies()
    browser.get(f"{pages_api.url}/login")
    browser.find_element(By.ID, "uid").send_keys("carol")
    browser.find_element(By.ID, "password").send_keys("not her password")
    browser.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    wait_for(browser, "p.flash.error")
    assert "invalid user name or password" in browser.find_element(
        By.CSS_SELECTOR, "p.flash.error").text
    assert browser.find_element(By.ID, "uid").get_attribute("value") == "carol"
    assert browser.find_element(By.ID, "password").get_attribute("value") == ""
