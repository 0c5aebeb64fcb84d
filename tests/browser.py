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
    driver.execute_script("window.scrollTo(0, 0)")  # the whole page, header included
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


# Accessibility basics (WCAG 2.x AA), checked on the page as chromium lays it out: any page's
# test may call assert_accessible(driver).
AA_TEXT = 4.5  # the contrast normal text needs
AA_LARGE_TEXT = 3.0  # for large text: 24 px, or 18.66 px bold
_COLOUR = re.compile(r"rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)"
                     r"(?:\s*[,/]\s*([\d.]+%?))?\s*\)")

Rgba = tuple[float, float, float, float]


def parse_colour(css: str) -> Rgba:
    """A CSS colour as getComputedStyle gives it (``rgb(...)``, ``rgba(...)``) or
    ``#rrggbb``: (red, green, blue) 0-255 and alpha 0-1."""
    text = css.strip().lower()
    if re.fullmatch(r"#[0-9a-f]{6}", text):
        return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16), 1.0)
    found = _COLOUR.fullmatch(text)
    if found is None:
        raise ValueError(f"not a colour this check reads: {css!r}")
    alpha = found.group(4)
    opacity = 1.0 if alpha is None else \
        float(alpha[:-1]) / 100 if alpha.endswith("%") else float(alpha)
    return (float(found.group(1)), float(found.group(2)), float(found.group(3)), opacity)


def _over(top: Rgba, below: Rgba) -> Rgba:
    """``top`` composited over the opaque ``below``."""
    alpha = top[3]
    return (top[0] * alpha + below[0] * (1 - alpha), top[1] * alpha + below[1] * (1 - alpha),
            top[2] * alpha + below[2] * (1 - alpha), 1.0)


def _luminance(colour: Rgba) -> float:
    """WCAG's relative luminance of an opaque colour."""
    def linear(channel: float) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4
    return 0.2126 * linear(colour[0]) + 0.7152 * linear(colour[1]) + 0.0722 * linear(colour[2])


def contrast_ratio(fg: str, bg: str) -> float:
    """WCAG's contrast ratio (1 to 21) of text in colour ``fg`` on ``bg`` (CSS colours; a
    translucent background is taken over white, translucent text over the background)."""
    back = _over(parse_colour(bg), (255, 255, 255, 1.0))
    front = _over(parse_colour(fg), back)
    lighter, darker = sorted((_luminance(front), _luminance(back)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


# Every element with text of its own that is shown: its colour, its size and weight, and
# the background colours from it up to the root (the first opaque one is what shows).
_TEXT_COLOURS = """
const found = [];
for (const element of document.body.querySelectorAll('*')) {
  if (!Array.from(element.childNodes).some(n => n.nodeType === 3 && n.textContent.trim())) continue;
  if (['SCRIPT', 'STYLE', 'OPTION'].includes(element.tagName)) continue;
  const style = getComputedStyle(element);
  const box = element.getBoundingClientRect();
  if (style.visibility !== 'visible' || box.width < 2 || box.height < 2
      || box.right < 0 || box.bottom < 0) continue;
  const backs = [];
  for (let node = element; node; node = node.parentElement) {
    backs.push(getComputedStyle(node).backgroundColor);
  }
  const classes = element.className ? '.' + element.className : '';
  found.push({what: element.tagName.toLowerCase() + classes,
              text: element.textContent.trim().slice(0, 40), colour: style.color, backs: backs,
              size: parseFloat(style.fontSize), weight: parseInt(style.fontWeight, 10)});
}
return found;
"""

_STRUCTURE = """
const unlabelled = [];
for (const field of document.querySelectorAll('input, select, textarea')) {
  if (['hidden', 'submit', 'button', 'reset'].includes(field.type)) continue;
  const named = (field.id && document.querySelector('label[for="' + CSS.escape(field.id) + '"]'))
    || field.closest('label') || field.getAttribute('aria-label')
    || field.getAttribute('aria-labelledby');
  if (!named) unlabelled.push(field.outerHTML.slice(0, 120));
}
return {
  headings: Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6'),
                       h => [parseInt(h.tagName[1], 10), h.textContent.trim().slice(0, 60)]),
  unlabelled: unlabelled,
  unscoped: Array.from(document.querySelectorAll('th:not([scope])'),
                       th => th.outerHTML.slice(0, 120)),
  lang: document.documentElement.lang,
  title: document.title,
};
"""


def _shown_background(backs: list[str]) -> Rgba:
    """What shows behind an element: its backgrounds from the root down, over white."""
    colour: Rgba = (255, 255, 255, 1.0)
    for css in reversed(backs):
        colour = _over(parse_colour(css), colour)
    return colour


def contrast_failures(driver: WebDriver) -> list[str]:
    """Each shown text of the current page whose contrast with what is behind it is below
    WCAG AA (4.5:1; 3:1 for large text), described."""
    failures = []
    for item in driver.execute_script(_TEXT_COLOURS):
        back = _shown_background(item["backs"])
        css_back = f"rgb({back[0]:.0f}, {back[1]:.0f}, {back[2]:.0f})"
        ratio = contrast_ratio(item["colour"], css_back)
        large = item["size"] >= 24 or (item["size"] >= 18.66 and item["weight"] >= 700)
        needed = AA_LARGE_TEXT if large else AA_TEXT
        if ratio < needed:
            failures.append(f"{item['what']} {item['text']!r}: {item['colour']} on {css_back} "
                            f"is {ratio:.2f}:1, needs {needed}:1")
    return failures


def assert_accessible(driver: WebDriver) -> None:
    """The current page has the basics: a language and a title, one h1 and headings in
    order (none skips a level), a label for every form field, ``scope`` on every table
    header, and text in AA contrast with its background."""
    page = driver.execute_script(_STRUCTURE)
    where = driver.current_url
    assert page["lang"], f"{where}: <html> has no lang"
    assert page["title"].strip(), f"{where}: no title"
    levels = [level for level, _ in page["headings"]]
    assert levels.count(1) == 1, f"{where}: {levels.count(1)} h1, not one: {page['headings']}"
    assert levels[0] == 1, f"{where}: the first heading is not the h1: {page['headings']}"
    skipped = [(levels[index - 1], level) for index, level in enumerate(levels)
               if index and level > levels[index - 1] + 1]
    assert not skipped, f"{where}: headings skip a level {skipped}: {page['headings']}"
    assert not page["unlabelled"], f"{where}: form fields without a label: {page['unlabelled']}"
    assert not page["unscoped"], f"{where}: table headers without scope: {page['unscoped']}"
    failures = contrast_failures(driver)
    assert not failures, f"{where}: text below WCAG AA contrast:\n" + "\n".join(failures)
