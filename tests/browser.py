"""A real browser for the pages' tests: Debian's chromium, driven by Selenium through
Debian's chromium-driver, headless, with the page's screenshots kept as test artifacts.

Screenshots go to ``$OPSLAB_ARTIFACTS/screenshots`` (default ``build/test-artifacts``
in the checkout, which git ignores).
"""

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_DEADLINE = 30.0  # seconds for a page to load, or an element to show
PHONE = (390, 844)  # CSS pixels: a phone held upright
DESKTOP = (1280, 900)


def artifacts() -> Path:
    """Where screenshots are kept."""
    base = Path(os.environ.get("OPSLAB_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    folder = base / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium(work: Path) -> Iterator[WebDriver]:
    """A headless chromium with a profile of its own in ``work``, quit (and reaped) after."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        raise RuntimeError("chromium and chromium-driver are needed (make system-packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", f"--user-data-dir={work / 'profile'}",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}", "--lang=en-GB",
                     "--no-first-run", "--disable-background-networking"):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, log_output=str(work / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(PAGE_DEADLINE)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, css: str) -> None:
    """Until an element matching ``css`` is on the page (PAGE_DEADLINE at most)."""
    WebDriverWait(driver, PAGE_DEADLINE).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def screenshot(driver: WebDriver, name: str, size: tuple[int, int] = DESKTOP) -> Path:
    """A screenshot of the whole current page at ``size`` wide, kept as ``name``.png."""
    driver.set_window_size(*size)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size[0], max(size[1], min(int(height), 6000)))
    path = artifacts() / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(*DESKTOP)
    return path


def log_in(driver: WebDriver, base: str, uid: str, password: str) -> None:
    """Through the login form, as a person would."""
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "uid").send_keys(uid)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form.stacked button[type=submit]").click()
    WebDriverWait(driver, PAGE_DEADLINE).until(lambda d: "/login" not in d.current_url)
