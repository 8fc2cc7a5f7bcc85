"""Pause/resume and live limits in a real browser (headless Chromium, a live server and
a real worker): a queue paused from the dashboard starts nothing until it is resumed
there; a task's limit changed on "Pauses and limits" and set back to the code's value.
With ``CONDUCTOR_SCREENSHOTS_DIR`` set, its screenshots go there (docs/img/)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

import conductor_django as conductor
from conductor_django.models import Execution
from conductor_django.state import controls
from tests.test_admin_browser import (  # noqa: F401  (browser: a fixture; skips without it)
    PASSWORD,
    By,
    browser,
    keep_screenshots,
    log_in,
    text,
    visit,
)
from tests.testapp.models import Mark

from .conftest import poll


@pytest.mark.django_db(transaction=True)
def test_pause_and_resume_from_the_dashboard_and_change_limits_live(
    live_server, start_worker, browser, tmp_path  # noqa: F811
):
    controls.forget()
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    first = conductor.invoke("ops-work", {"hold": 0})
    admin = live_server.url
    log_in(browser, admin)
    dashboard = admin + reverse("admin:conductor_django_execution_dashboard")
    visit(browser, dashboard)
    browser.find_element(
        By.CSS_SELECTOR, "tr[data-queue='ops'] form[action$='/pause/'] button").click()
    assert "Paused queue ops." in text(browser, ".messagelist li")
    assert "queue ops paused for" in text(browser, "[data-paused='queue:ops']")
    start_worker("--queue", "ops")
    later = conductor.invoke("ops-work", {"hold": 0})  # accepted while paused
    visit(browser, admin + reverse("admin:conductor_django_execution_change", args=[later]))
    assert "queue ops paused since" in text(browser, "#content-main")
    visit(browser, dashboard)
    browser.save_screenshot(str(tmp_path / "admin-paused-dashboard.png"))
    assert Mark.count("ops:start") == 0
    browser.find_element(By.CSS_SELECTOR, "[data-paused='queue:ops'] button").click()
    assert "Resumed queue ops." in text(browser, ".messagelist li")
    poll(lambda: Execution.objects.filter(pk__in=[first, later], status="completed").count()
         == 2, 60, message="both executions ran after the resume")

    visit(browser, admin + reverse("admin:conductor_django_control_changelist"))
    field = browser.find_element(By.CSS_SELECTOR, "tr[data-task='ops-limited'] "
                                 "input[name='concurrency']")
    field.send_keys("1")
    rate = browser.find_element(By.CSS_SELECTOR, "tr[data-task='ops-limited'] "
                                "input[name='rate_limit']")
    rate.send_keys("10/m")
    browser.find_element(By.CSS_SELECTOR, "tr[data-task='ops-limited'] "
                         "button[type='submit']:not([name])").click()
    assert "Limits of ops-limited changed: concurrency 1" in text(browser, ".messagelist li")
    browser.execute_script("arguments[0].scrollIntoView(); window.scrollBy(0, -200)",
                           browser.find_element(By.CSS_SELECTOR, "tr[data-task='ops-limited']"))
    row = text(browser, "tr[data-task='ops-limited']")
    assert "4, -, -" in row and "1, -, 10/60s" in row
    browser.save_screenshot(str(tmp_path / "admin-limits.png"))
    assert conductor.set_limits("ops-limited").concurrency == 1
    browser.find_element(By.CSS_SELECTOR, "tr[data-task='ops-limited'] button[name='reset']"
                         ).click()
    assert "back to the code's values" in text(browser, ".messagelist li")
    assert conductor.set_limits("ops-limited").concurrency == 4
    keep_screenshots(tmp_path, ["admin-limits.png", "admin-paused-dashboard.png"])
