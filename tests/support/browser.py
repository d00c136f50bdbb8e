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
    """Poll ``find(driver)`` until it returns something truthy; fail naming ``what`` and the page."""
    deadline = time.monotonic() + timeout
    while True:
        found = find(driver)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {what} on {getattr(driver, 'current_url', driver)} within {timeout:.0f}s"
            )
        time.sleep(0.25)


def buttons(driver: Any, text: str) -> list[Any]:
    """Visible buttons whose text is exactly ``text``."""
    from selenium.webdriver.common.by import By

    return [
        b for b in driver.find_elements(By.TAG_NAME, "button") if b.is_displayed() and b.text.strip() == text
    ]


def log_in(driver: Any, base_url: str, username: str, password: str) -> None:
    """Sign in on Airflow's login page, as a person would."""
    from selenium.webdriver.common.by import By

    driver.get(base_url + "/")
    wait_for(driver, lambda d: d.find_elements(By.NAME, "username"), what="login form")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    buttons(driver, "Sign in")[0].click()
    wait_for(driver, lambda d: "/auth/login" not in d.current_url, what="page after signing in")


def open_trigger_form(driver: Any, base_url: str, dag_id: str) -> Any:
    """Open the DAG's page and its Trigger dialog; returns the dialog element."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/dags/{dag_id}")
    wait_for(driver, lambda d: buttons(d, "Trigger"), what=f"Trigger button of {dag_id}")[0].click()
    return wait_for(
        driver,
        lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, "[role=dialog]") if "Run Parameters" in e.text
        ],
        what="trigger dialog with Run Parameters",
    )[0]


def form_errors(dialog: Any) -> list[str]:
    """Fields the form marks invalid (their labels), e.g. a required field left empty."""
    from selenium.webdriver.common.by import By

    invalid = dialog.find_elements(By.CSS_SELECTOR, "[aria-invalid=true], [data-invalid]")
    return [e.get_attribute("id") or e.get_attribute("name") or e.tag_name for e in invalid]


def choose(dialog: Any, param: str, option: str) -> None:
    """Pick ``option`` in the select of Param ``param`` (a react-select combobox)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = dialog.find_element(By.CSS_SELECTOR, f"#element_{param} input[role=combobox]")
    box.send_keys(option)
    box.send_keys(Keys.ENTER)
    hidden = dialog.find_element(By.CSS_SELECTOR, f"input[type=hidden][name=element_{param}]")
    assert hidden.get_attribute("value") == option, f"{param} shows {hidden.get_attribute('value')!r}"


def submit(driver: Any, dialog: Any) -> None:
    """Press the dialog's Trigger button (it must be enabled) and wait for the dialog to close."""
    (button,) = [b for b in buttons(driver, "Trigger") if _inside(dialog, b)]
    assert button.is_enabled(), f"the Trigger button is disabled; invalid fields: {form_errors(dialog)}"
    button.click()
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
