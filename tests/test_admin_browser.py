"""The admin in a real browser: headless Debian Chromium against a live server and a worker.

Needs ``chromium`` and ``chromium-driver`` (``scripts/test.sh`` installs them with apt
when missing and sets ``CONDUCTOR_REQUIRE_BROWSER=1``, which turns a missing browser
into a failure instead of a skip). With ``CONDUCTOR_SCREENSHOTS_DIR`` set, the
screenshots of the list, the execution page and the dashboard are copied there
(``make screenshots`` writes docs/img/).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import conductor_django as conductor

from .conftest import poll

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

if os.environ.get("CONDUCTOR_SKIP_BROWSER") == "1":
    # make test drives the browser in one cell of its matrix; the pages are the same
    pytest.skip("the browser test runs in the Django 5.2 / SQLite cell", allow_module_level=True)
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CONDUCTOR_REQUIRE_BROWSER") == "1":
        raise RuntimeError("chromium and chromium-driver are required (apt-get install "
                           "chromium chromium-driver)")
    pytest.skip("chromium/chromium-driver not installed", allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

PASSWORD = "browser-test-pw"


@pytest.fixture
def browser():
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--hide-scrollbars", "--lang=en-US"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, by: str, value: str):
    """The element once the page that has it is loaded (a click navigates asynchronously)."""
    return WebDriverWait(driver, 20).until(lambda d: d.find_element(by, value))


def text(driver, css: str) -> str:
    return wait_for(driver, By.CSS_SELECTOR, css).text


def row_of(driver, eid: str):
    return driver.find_element(By.XPATH, f"//input[@value='{eid}']/ancestor::tr")


@pytest.mark.django_db(transaction=True)
def test_cancel_running_executions_through_the_action_and_the_button(
    live_server, start_worker, browser, tmp_path
):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    by_action = conductor.invoke("loop-until-cancelled", {"key": "action"})
    by_button = conductor.invoke("loop-until-cancelled", {"key": "button"})
    start_worker("--concurrency", "4")
    poll(lambda: conductor.get(by_action).status == "running"
         and conductor.get(by_button).status == "running", timeout=30, message="both running")

    admin = live_server.url
    browser.get(f"{admin}{reverse('admin:login')}?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys("ops")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 20).until(lambda d: "Site administration" in d.title)

    # 1. The action: tick the row, choose "Cancel selected", confirm with a reason.
    changelist = admin + reverse("admin:conductor_django_execution_changelist")
    browser.get(changelist)
    row_of(browser, by_action).find_element(By.NAME, "_selected_action").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("cancel_selected")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    reason = wait_for(browser, By.ID, "id_reason")
    assert reason.get_attribute("value") == "Cancelled by user"
    reason.clear()
    reason.send_keys("Stopped from the list")
    browser.find_element(By.ID, "cdj-confirm").click()
    assert text(browser, ".messagelist li") == "1 execution cancelled; 0 already finished."
    poll(lambda: conductor.get(by_action).status == "cancelled", timeout=30,
         message="cancelled by the action")
    browser.get(changelist)
    cells = row_of(browser, by_action).text
    assert "Cancelled" in cells and "Stopped from the list" in cells

    # 2. The button on the execution page, with its own reason.
    page = admin + reverse("admin:conductor_django_execution_change", args=[by_button])
    browser.get(page)
    assert text(browser, "#cdj-current-status") == "Running"
    field = browser.find_element(By.ID, "id_cancel_reason")
    field.clear()
    field.send_keys("Stopped from its page")
    browser.find_element(By.ID, "cdj-cancel-button").click()
    assert text(browser, ".messagelist li") == "Execution cancelled: Stopped from its page"
    poll(lambda: conductor.get(by_button).status == "cancelled", timeout=30,
         message="cancelled by the button")
    browser.get(page)
    assert text(browser, "#cdj-current-status") == "Cancelled"
    assert text(browser, "pre.cdj-error") == "Stopped from its page"
    assert not browser.find_elements(By.ID, "cdj-cancel-button")
    assert browser.find_elements(By.ID, "cdj-retry-button")
    browser.set_window_size(1280, 1700)
    browser.save_screenshot(str(tmp_path / "admin-execution.png"))
    browser.set_window_size(1280, 900)

    # Some finished work for the list and the chart, then the dashboard.
    done = [conductor.invoke("echo", {"n": n}) for n in range(4)]
    done.append(conductor.invoke("always-fails"))
    poll(lambda: all(conductor.get(e).is_finished for e in done), timeout=30,
         message="the other executions finished")
    browser.get(changelist)
    browser.save_screenshot(str(tmp_path / "admin-executions.png"))
    browser.get(admin + reverse("admin:app_list", args=["conductor_django"]))
    browser.find_element(By.LINK_TEXT, "Dashboard").click()
    assert wait_for(browser, By.ID, "cdj-throughput").tag_name == "svg"
    counts = browser.find_element(By.ID, "cdj-counts").text
    assert "default 0 0 0 4 1 2 7" in counts  # pending .. cancelled, all
    failed_bars = browser.find_elements(By.CSS_SELECTOR, "#cdj-throughput rect.cdj-failed")
    assert len(failed_bars) == 1  # always-fails ended within the last minute or two
    browser.save_screenshot(str(tmp_path / "admin-dashboard.png"))

    shots = sorted(p.name for p in tmp_path.glob("admin-*.png"))
    assert shots == ["admin-dashboard.png", "admin-execution.png", "admin-executions.png"]
    target = os.environ.get("CONDUCTOR_SCREENSHOTS_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for name in shots:
            shutil.copy(tmp_path / name, Path(target) / name)


@pytest.mark.django_db(transaction=True)
def test_approve_a_waiting_execution_from_its_page(live_server, start_worker, browser):
    from django.contrib.auth.models import Permission

    user = User.objects.create_user("approver", password=PASSWORD, is_staff=True)
    for codename in ("view_execution", "signal_execution"):
        user.user_permissions.add(Permission.objects.get(
            codename=codename, content_type__app_label="conductor_django"))
    eid = conductor.invoke("await-decision", {"key": "browser", "timeout": 3600,
                                              "choices": ["approve", "reject"]})
    start_worker("--concurrency", "1")
    poll(lambda: conductor.get(eid).status == "suspended", timeout=30,
         message="the execution to wait for its signal")

    admin = live_server.url
    browser.get(f"{admin}{reverse('admin:login')}?next=/admin/")
    browser.find_element(By.ID, "id_username").send_keys("approver")
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 20).until(lambda d: "Site administration" in d.title)

    changelist = admin + reverse("admin:conductor_django_execution_changelist")
    browser.get(changelist + "?waiting_for_signal=yes")
    listed = wait_for(browser, By.XPATH, f"//code[@title='{eid}']/ancestor::tr")
    assert "signal decision until" in listed.text
    assert listed.find_element(By.CSS_SELECTOR, "progress.cdj-progress")
    page = admin + reverse("admin:conductor_django_execution_change", args=[eid])
    browser.get(page)
    assert text(browser, "#cdj-waiting-name") == "decision"
    assert browser.find_element(By.CSS_SELECTOR, "#cdj-progress progress")
    browser.find_element(By.CSS_SELECTOR, "button[data-choice=approve]").click()
    assert text(browser, ".messagelist li") == "Signal 'decision' sent: \"approve\""
    poll(lambda: conductor.get(eid).status == "completed", timeout=30,
         message="the approved execution to finish")
    browser.get(page)
    assert text(browser, "#cdj-current-status") == "Completed"
    assert not browser.find_elements(By.ID, "cdj-signal-form")
    assert "approver" in text(browser, "#signals-group")
    assert conductor.get(eid).result == {"decision": "approve", "attempt": 1}
