"""The admin in a real browser: headless Debian Chromium against a live server and a worker.

Needs ``chromium`` and ``chromium-driver`` (``scripts/test.sh`` installs them with apt
when missing and sets ``CONDUCTOR_REQUIRE_BROWSER=1``, which turns a missing browser
into a failure instead of a skip). With ``CONDUCTOR_SCREENSHOTS_DIR`` set, the
screenshots of the list, the execution page and the dashboard are copied there
(``make screenshots`` writes docs/img/); the operator flows' pages too (retry and fork
from a step, the bulk "Retry from step…", a cancel that reaches descendants).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import conductor_django as conductor
from conductor_django.models import Execution
from tests.testapp import operator_tasks  # noqa: F401  (registers the tasks)
from tests.testapp.models import Mark

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
from selenium.common.exceptions import TimeoutException  # noqa: E402
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


def visit(driver, url: str, timeout: float = 120) -> None:
    """``driver.get(url)``, asked again when Chromium's renderer does not answer in time
    (it happens on a loaded machine), until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            driver.get(url)
            return
        except TimeoutException:
            if time.monotonic() >= deadline:
                raise


def wait_for(driver, by: str, value: str):
    """The element once the page that has it is loaded (a click navigates asynchronously)."""
    return WebDriverWait(driver, 20).until(lambda d: d.find_element(by, value))


def text(driver, css: str) -> str:
    return wait_for(driver, By.CSS_SELECTOR, css).text


def row_of(driver, eid: str):
    return driver.find_element(By.XPATH, f"//input[@value='{eid}']/ancestor::tr")


def log_in(driver, admin: str) -> None:
    visit(driver, f"{admin}{reverse('admin:login')}?next=/admin/")
    driver.find_element(By.ID, "id_username").send_keys("ops")
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 20).until(lambda d: "Site administration" in d.title)


def keep_screenshots(tmp_path: Path, expected: list[str]) -> None:
    """Check the screenshots taken, and copy them to ``CONDUCTOR_SCREENSHOTS_DIR``."""
    shots = sorted(p.name for p in tmp_path.glob("admin-*.png"))
    assert shots == sorted(expected)
    target = os.environ.get("CONDUCTOR_SCREENSHOTS_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for name in shots:
            shutil.copy(tmp_path / name, Path(target) / name)


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
    log_in(browser, admin)

    # 1. The action: tick the row, choose "Cancel selected", confirm with a reason.
    changelist = admin + reverse("admin:conductor_django_execution_changelist")
    visit(browser, changelist)
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
    visit(browser, changelist)
    cells = row_of(browser, by_action).text
    assert "Cancelled" in cells and "Stopped from the list" in cells

    # 2. The button on the execution page, with its own reason.
    page = admin + reverse("admin:conductor_django_execution_change", args=[by_button])
    visit(browser, page)
    assert text(browser, "#cdj-current-status") == "Running"
    field = browser.find_element(By.ID, "id_cancel_reason")
    field.clear()
    field.send_keys("Stopped from its page")
    browser.find_element(By.ID, "cdj-cancel-button").click()
    assert text(browser, ".messagelist li") == "Execution cancelled: Stopped from its page"
    poll(lambda: conductor.get(by_button).status == "cancelled", timeout=30,
         message="cancelled by the button")
    visit(browser, page)
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
    visit(browser, changelist)
    browser.save_screenshot(str(tmp_path / "admin-executions.png"))
    visit(browser, admin + reverse("admin:app_list", args=["conductor_django"]))
    browser.find_element(By.LINK_TEXT, "Dashboard").click()
    assert wait_for(browser, By.ID, "cdj-throughput").tag_name == "svg"
    counts = browser.find_element(By.ID, "cdj-counts").text
    # now: pending, scheduled, running, suspended; last 24 h: completed, failed,
    # cancelled before start, cancelled; no lag
    assert "default 0 0 0 0 4 1 0 2 -" in counts
    failed_bars = browser.find_elements(By.CSS_SELECTOR, "#cdj-throughput rect.cdj-failed")
    assert len(failed_bars) == 1  # always-fails ended within the last minute or two
    browser.save_screenshot(str(tmp_path / "admin-dashboard.png"))

    keep_screenshots(tmp_path, ["admin-dashboard.png", "admin-execution.png",
                                "admin-executions.png"])


# --- the operator's second chance (SPEC §14.5) ----------------------------------------

OPERATOR_TASKS = {"CONDUCTOR_TEST_TASK_MODULES": "tests.testapp.operator_tasks"}


def status_of(eid: str) -> str:
    return Execution.objects.get(pk=eid).status


def step_link(driver, step: str, kind: str):
    """The "Retry from here" (``retry``) or "Fork from here" (``fork``) link of a step row."""
    return wait_for(driver, By.XPATH,
                    f"//td[contains(@class, 'field-name')][normalize-space(.)='{step}']"
                    f"/ancestor::tr//a[contains(@class, 'cdj-{kind}-from')]")


def listed(driver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "ul.cdj-listed li")]


def ran(key: str) -> list[int]:
    """How many times each step of five-steps ran."""
    return [Mark.count(f"{key}:s{n}") for n in range(1, 6)]


def choose_action(driver, changelist: str, eids: list[str], action: str) -> None:
    visit(driver, changelist)
    for eid in eids:
        row_of(driver, eid).find_element(By.NAME, "_selected_action").click()
    Select(driver.find_element(By.NAME, "action")).select_by_value(action)
    driver.find_element(By.CSS_SELECTOR, "button[name=index]").click()


@pytest.mark.django_db(transaction=True)
def test_retry_and_fork_from_a_step_the_bulk_retry_and_cancelling_a_tree(
    live_server, start_worker, browser, tmp_path
):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    eid = conductor.invoke("five-steps", {"key": "page"})
    start_worker("--concurrency", "4", env=OPERATOR_TASKS)
    poll(lambda: status_of(eid) == "failed", timeout=60, message="five-steps fails at s4")
    assert ran("page") == [1, 1, 1, 1, 0]

    admin = live_server.url
    log_in(browser, admin)
    page = admin + reverse("admin:conductor_django_execution_change", args=[eid])
    changelist = admin + reverse("admin:conductor_django_execution_changelist")

    # 1. "Retry from here" on s2: the confirmation lists s2 and s3 as discarded.
    visit(browser, page)
    step_link(browser, "s2", "retry").click()
    assert text(browser, "#content h1") == "Retry from step s2"
    assert listed(browser) == ["s2", "s3"]
    browser.save_screenshot(str(tmp_path / "admin-retry-from-step.png"))
    assert status_of(eid) == "failed"  # the page changed nothing
    Mark.add("page:fixed")  # the bug fix is deployed
    browser.find_element(By.ID, "cdj-confirm").click()
    assert text(browser, ".messagelist li").startswith("Execution retried from step 's2'")
    poll(lambda: status_of(eid) == "completed", timeout=60, message="the retry completes")
    assert ran("page") == [1, 2, 2, 2, 1]  # s1 never ran again
    visit(browser, page)
    history = text(browser, "table.cdj-attempts")
    assert "retried from step 's2' by ops" in history and "step 4 is broken" in history
    browser.execute_script("arguments[0].scrollIntoView()",
                           browser.find_element(By.CSS_SELECTOR, "table.cdj-attempts"))
    browser.save_screenshot(str(tmp_path / "admin-attempt-history.png"))

    # 2. "Fork from here" on s4 of the completed execution: a new one, linked both ways.
    step_link(browser, "s4", "fork").click()
    assert text(browser, "#content h1") == "Fork from step s4"
    assert listed(browser) == ["s1", "s2", "s3"]
    browser.save_screenshot(str(tmp_path / "admin-fork-from-step.png"))
    browser.find_element(By.ID, "cdj-confirm").click()
    assert text(browser, ".messagelist li").startswith("Forked as execution ")
    fork = Execution.objects.get(forked_from_id=eid)
    assert str(fork.pk) in browser.current_url
    assert browser.find_element(By.LINK_TEXT, eid).get_attribute("href").endswith(
        reverse("admin:conductor_django_execution_change", args=[eid]))
    poll(lambda: status_of(str(fork.pk)) == "completed", timeout=60, message="the fork runs")
    assert ran("page") == [1, 2, 2, 3, 2]  # the fork ran s4 and s5 only
    visit(browser, page)
    assert browser.find_element(By.LINK_TEXT, str(fork.pk))
    assert status_of(eid) == "completed"  # the original is left as it is

    # 3. The bulk action "Retry from step…" on two failed executions and a completed one.
    failed = [conductor.invoke("five-steps", {"key": k}) for k in ("bulk-a", "bulk-b")]
    poll(lambda: all(status_of(e) == "failed" for e in failed), timeout=60,
         message="both fail at s4")
    choose_action(browser, changelist, [*failed, eid], "retry_from_step_selected")
    wait_for(browser, By.ID, "id_step").send_keys("s3")
    browser.find_element(By.ID, "cdj-show").click()
    summary = text(browser, ".cdj-summary")
    assert "Selected: 3." in summary and "will be retried from it: 2." in summary
    assert sorted(listed(browser)) == sorted(f"five-steps {e}: discards s3" for e in failed)
    browser.save_screenshot(str(tmp_path / "admin-bulk-retry-from-step.png"))
    Mark.add("bulk-a:fixed")
    Mark.add("bulk-b:fixed")
    browser.find_element(By.ID, "cdj-confirm").click()
    assert text(browser, ".messagelist li") == (
        "2 executions retried from step 's3'; 1 skipped (not failed or cancelled, "
        "or without that step).")
    poll(lambda: all(status_of(e) == "completed" for e in failed), timeout=60,
         message="the bulk retries complete")
    assert ran("bulk-a") == ran("bulk-b") == [1, 1, 2, 2, 1]

    # 4. Cancelling a grandparent: the confirmation counts its two running descendants.
    root = conductor.invoke("tree-node", {"key": "tree", "depth": 2})
    poll(lambda: Mark.count("tree:0:started"), timeout=60, message="the grandchild runs")
    tree = [root, *map(str, Execution.objects.descendants(root))]
    assert len(tree) == 3
    visit(browser, admin + reverse("admin:conductor_django_execution_change", args=[root]))
    assert text(browser, "#cdj-descendants") == "also cancels 2 unfinished descendants"
    choose_action(browser, changelist, [root], "cancel_selected")
    assert text(browser, "#cdj-descendants") == (
        "Unfinished descendants cancelled with them (same reason): 2.")
    reason = wait_for(browser, By.ID, "id_reason")
    reason.clear()
    reason.send_keys("Stopped the whole tree")
    browser.save_screenshot(str(tmp_path / "admin-cancel-descendants.png"))
    browser.find_element(By.ID, "cdj-confirm").click()
    assert text(browser, ".messagelist li") == "1 execution cancelled; 0 already finished."
    # The running grandchild ends cancelled; its waiting ancestors fail at once.
    poll(lambda: [status_of(e) for e in tree] == ["failed", "failed", "cancelled"],
         timeout=60, message="the whole tree cancelled")
    assert {Execution.objects.get(pk=e).last_error for e in tree} == {"Stopped the whole tree"}

    keep_screenshots(tmp_path, ["admin-attempt-history.png", "admin-bulk-retry-from-step.png",
                                "admin-cancel-descendants.png", "admin-fork-from-step.png",
                                "admin-retry-from-step.png"])


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
    browser.set_window_size(1920, 900)  # at 1280 px a narrow list leaves "waiting for" out
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
