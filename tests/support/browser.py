"""A person in Chromium: log in to the Airflow UI and use a DAG's trigger form (Selenium).

Uses Debian's ``chromium`` and ``chromium-driver`` (``make browser`` installs them); Selenium is
pointed at them explicitly, so it never tries to download a browser.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver", "chromium-driver")


def _which(names: tuple[str, ...]) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


def missing() -> str | None:
    """Why no browser test can run here (``None``: Chromium and its driver are installed)."""
    if _which(CHROMIUM) is None or _which(DRIVER) is None:
        return (
            "Chromium and chromedriver are not installed: run `make browser` (apt-get install "
            "chromium chromium-driver, as root)"
        )
    return None


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium driven by Selenium; quits on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.binary_location = str(_which(CHROMIUM))
    driver = webdriver.Chrome(service=Service(str(_which(DRIVER))), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, find: Any, timeout: float = 30, what: str = "element") -> Any:
    """Poll ``find(driver)`` until it returns something truthy; fail naming ``what`` and the page.

    A React re-render can replace an element between finding and reading it: such a poll counts
    as "not yet" and is tried again.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            found = find(driver)
        except StaleElementReferenceException:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {what} on {getattr(driver, 'current_url', driver)} within {timeout:.0f}s"
            )
        time.sleep(0.25)


def _until_done(driver: Any, action: Any, what: str, timeout: float = 30) -> Any:
    """Run ``action()`` until it completes without meeting an element a re-render replaced."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt(_: Any) -> Any:
        try:
            return (action(),)
        except StaleElementReferenceException:
            return None

    return wait_for(driver, attempt, timeout=timeout, what=what)[0]


def buttons(driver: Any, text: str) -> list[Any]:
    """Visible buttons whose text is exactly ``text`` (ones a re-render just removed are skipped)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    found = []
    for b in driver.find_elements(By.TAG_NAME, "button"):
        try:
            if b.is_displayed() and b.text.strip() == text:
                found.append(b)
        except StaleElementReferenceException:
            continue
    return found


def log_in(driver: Any, base_url: str, username: str, password: str) -> None:
    """Sign in on Airflow's login page, as a person would."""
    from selenium.webdriver.common.by import By

    driver.get(base_url + "/")
    wait_for(driver, lambda d: d.find_elements(By.NAME, "username"), what="login form")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    buttons(driver, "Sign in")[0].click()
    wait_for(driver, lambda d: "/auth/login" not in d.current_url, what="page after signing in")


def trigger_dialog(driver: Any) -> Any:
    """The open trigger dialog, found afresh (React may have re-rendered the one found before)."""
    from selenium.webdriver.common.by import By

    return wait_for(
        driver,
        lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]") if "Run Parameters" in e.text
        ],
        what="trigger dialog with Run Parameters",
    )[0]


def open_trigger_form(driver: Any, base_url: str, dag_id: str) -> None:
    """Open the DAG's page and its Trigger dialog, and wait until its Param fields are drawn."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/dags/{dag_id}")

    def click_trigger() -> None:
        wait_for(driver, lambda d: buttons(d, "Trigger"), what=f"Trigger button of {dag_id}")[0].click()

    _until_done(driver, click_trigger, what=f"a click on the Trigger button of {dag_id}")
    wait_for(
        driver,
        lambda d: trigger_dialog(d).find_elements(By.CSS_SELECTOR, "[id^=element_]"),
        what="the trigger dialog's Param fields",
    )


def form_errors(driver: Any) -> list[str]:
    """Fields the open trigger form marks invalid (their labels), e.g. a required field left empty."""
    from selenium.webdriver.common.by import By

    def read() -> list[str]:
        invalid = trigger_dialog(driver).find_elements(By.CSS_SELECTOR, "[aria-invalid=true], [data-invalid]")
        return [e.get_attribute("id") or e.get_attribute("name") or e.tag_name for e in invalid]

    return list(_until_done(driver, read, what="the form's invalid fields"))


def choose(driver: Any, param: str, option: str) -> None:
    """Pick ``option`` in the select of Param ``param`` (a react-select combobox)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def pick() -> str:
        dialog = trigger_dialog(driver)
        box = dialog.find_element(By.CSS_SELECTOR, f"#element_{param} input[role=combobox]")
        box.send_keys(option)
        box.send_keys(Keys.ENTER)
        hidden = trigger_dialog(driver).find_element(
            By.CSS_SELECTOR, f"input[type=hidden][name=element_{param}]"
        )
        return str(hidden.get_attribute("value"))

    shown = _until_done(driver, pick, what=f"{param} set to {option}")
    assert shown == option, f"{param} shows {shown!r}"


def submit(driver: Any) -> None:
    """Press the open dialog's Trigger button (it must be enabled) and wait for the dialog to close."""

    def button() -> Any:
        dialog = trigger_dialog(driver)
        (found,) = [b for b in buttons(driver, "Trigger") if _inside(dialog, b)]
        assert found.is_enabled(), f"the Trigger button is disabled; invalid fields: {form_errors(driver)}"
        return found

    _until_done(driver, lambda: button().click(), what="a click on the dialog's Trigger button")
    wait_for(driver, lambda d: not _still_open(d), timeout=30, what="closed trigger dialog")


def _inside(dialog: Any, element: Any) -> bool:
    return bool(dialog.parent.execute_script("return arguments[0].contains(arguments[1]);", dialog, element))


def _still_open(driver: Any) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return any("Run Parameters" in e.text for e in driver.find_elements(By.CSS_SELECTOR, "[role=dialog]"))
    except StaleElementReferenceException:  # the dialog is being torn down
        return True
