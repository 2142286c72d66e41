"""The operator console in Debian's chromium (Selenium, chromium-driver) at 1280 px, against the
gateway, publisher and ticker as processes: sign in with a token, watch a publish reach
SUCCESS live and open its timeline, revoke a scheduled task, pause and resume a schedule,
replay a dead letter, and a screenshot of each view (in the test's tmp dir, and in
$ADFLUX_SCREENSHOTS_DIR when set: `make screenshots` writes docs/screenshots/)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from infra.ports import free_port
from infra.processes import ServiceProcess
from infra.waiting import wait_for
from tests.conftest import Sandbox
from tests.support.campaigns import publish_new

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TOKEN = "test-token"
VIEWS = ("overview", "workers", "queues", "tasks", "dead", "schedules", "campaigns")


@pytest.fixture
def console(
    service_env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> Iterator[tuple[str, httpx.Client]]:
    """Gateway, publisher and ticker (one schedule firing every minute); the gateway's URL and
    an API client."""
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "schedules:\n  refresh-metrics:\n    task: metrics.refresh\n    cron: '* * * * *'\n"
    )
    port = free_port()
    env = {**service_env, **sandbox.env(), "ADFLUX_SCHEDULES_FILE": str(schedules)}
    processes = [
        ServiceProcess("gateway", {**env, "ADFLUX_HTTP_PORT": str(port)}, tmp_path),
        ServiceProcess("publisher", env, tmp_path),
        ServiceProcess("ticker", env, tmp_path),
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        for process in processes:
            process.start()
        processes[0].wait_http_ok(f"{url}/readyz")
        with httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client:
            yield url, client
    finally:
        for process in processes:
            process.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.fail("chromedriver is missing: run infra/chromium.sh (make test does)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


Find = Callable[[WebDriver], WebElement | None]


def until(driver: WebDriver, find: Find, what: str, timeout: float = 60) -> WebElement:
    """Wait until `find(driver)` returns an element (stale ones retried), or fail naming `what`."""

    def found(d: WebDriver) -> WebElement | Literal[False]:
        try:
            return find(d) or False
        except StaleElementReferenceException:
            return False

    return WebDriverWait(driver, timeout, 0.2).until(found, f"waited for {what}")


def click(driver: WebDriver, path: str, what: str) -> None:
    """Click the element at `path` once it is there; a table re-rendered under the click (live
    updates replace rows) is retried."""

    def clicked(d: WebDriver) -> bool:
        try:
            d.find_element(By.XPATH, path).click()
        except (StaleElementReferenceException, NoSuchElementException):
            return False
        return True

    WebDriverWait(driver, 60, 0.2).until(clicked, f"waited to click {what}")


def texts(driver: WebDriver, path: str) -> list[str]:
    """The texts of the elements at `path`, read again if the page re-renders meanwhile."""

    def read(d: WebDriver) -> list[str] | Literal[False]:
        try:
            return [e.text for e in d.find_elements(By.XPATH, path)] or False
        except StaleElementReferenceException:
            return False

    result: list[str] = WebDriverWait(driver, 30, 0.2).until(read, f"waited to read {path}")
    return result


def xpath(path: str) -> Find:
    return lambda d: next(iter(d.find_elements(By.XPATH, path)), None)


def row_of(table: str, text: str) -> str:
    return f"//tbody[@id='{table}']/tr[.//*[normalize-space(text())='{text}']]"


def view(driver: WebDriver, name: str) -> None:
    click(driver, f"//nav/button[@data-view='{name}']", f"the {name} tab")
    until(driver, xpath(f"//section[@id='view-{name}' and not(@hidden)]"), f"the {name} view")


def shoot(driver: WebDriver, name: str, tmp_path: Path) -> None:
    shots = [tmp_path / "screenshots"]
    if os.environ.get("ADFLUX_SCREENSHOTS_DIR"):
        shots.append(Path(os.environ["ADFLUX_SCREENSHOTS_DIR"]))
    for directory in shots:
        directory.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(directory / f"console-{name}.png"))


def test_an_operator_watches_and_steers_the_system_from_the_console(
    console: tuple[str, httpx.Client], browser: WebDriver, sandbox: Sandbox, tmp_path: Path
) -> None:
    url, client = console
    # A dead letter to replay: a Meta publish failing permanently.
    sandbox.fault(platform="meta", operation="create_adset", kind="permanent", rate=1.0)
    _, failing = publish_new(client, "meta")
    wait_for(
        lambda: client.get(f"/tasks/{failing}").json()["state"] == "FAILURE", 60, 0.3, "FAILURE"
    )
    wait_for(lambda: client.get("/dead-letters").json(), 30, 0.3, "the dead letter listed")
    sandbox.clear_faults()
    eta = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    scheduled = client.post(
        "/tasks", json={"name": "metrics.refresh", "kwargs": {}, "eta": eta}
    ).json()["task_id"]

    browser.get(f"{url}/monitor")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    until(browser, xpath("//span[@id='status' and text()='live']"), "the live stream")

    # A publish reaches SUCCESS live, on the overview.
    _, task_id = publish_new(client, "google")
    until(browser, xpath(row_of("tasks", task_id) + "/td[text()='SUCCESS']"), "SUCCESS live")
    until(browser, xpath("//div[@id='graph-tasks']//*[name()='polyline']"), "the task graph")
    shoot(browser, "overview", tmp_path)

    # Its timeline.
    click(browser, row_of("tasks", task_id) + f"//button[text()='{task_id}']", "its task id")
    until(browser, xpath("//ol[@id='timeline']/li[b[text()='SUCCESS']]"), "the timeline")
    steps = texts(browser, "//ol[@id='timeline']/li/b")
    assert steps[0] == "PENDING" and steps[-1] == "SUCCESS" and "STARTED" in steps
    shoot(browser, "tasks", tmp_path)

    # Revoke the scheduled task (overview's live table).
    view(browser, "overview")
    click(browser, row_of("tasks", scheduled) + "//button[text()='revoke']", "revoke")
    wait_for(
        lambda: client.get(f"/tasks/{scheduled}").json()["state"] == "REVOKED", 30, 0.3, "REVOKED"
    )
    until(browser, xpath(row_of("tasks", scheduled) + "/td[text()='REVOKED']"), "REVOKED shown")

    # Pause and resume the schedule: the ticker applies it and announces it back.
    view(browser, "schedules")
    row = row_of("schedules", "refresh-metrics")
    click(browser, row + "//button[text()='pause']", "pause")
    until(browser, xpath(row + "/td[text()='paused']"), "the schedule paused", timeout=60)
    shoot(browser, "schedules", tmp_path)
    click(browser, row + "//button[text()='resume']", "resume")
    until(browser, xpath(row + "/td[text()='active']"), "the schedule resumed", timeout=60)

    # Replay the dead letter; its task runs again and succeeds.
    view(browser, "dead")
    click(browser, row_of("dead", failing) + "//button[text()='replay']", "replay")
    wait_for(
        lambda: client.get(f"/tasks/{failing}").json()["state"] == "SUCCESS", 60, 0.3, "replayed"
    )
    until(browser, xpath(row_of("dead", failing) + "[not(.//button[text()='replay'])]"), "replayed")
    shoot(browser, "dead", tmp_path)

    for name in ("workers", "queues", "campaigns"):
        view(browser, name)
        until(browser, xpath(f"//section[@id='view-{name}']//tbody/tr"), f"rows in {name}")
        shoot(browser, name, tmp_path)
    assert not [e for e in texts(browser, "//*[contains(@class, 'error')]") if e]
    assert {p.name for p in (tmp_path / "screenshots").iterdir()} == {
        f"console-{v}.png" for v in VIEWS
    }
