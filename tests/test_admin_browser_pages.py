"""Every admin page in headless Chromium at 1280 and 1920 px: the lists never scroll
sideways, the execution page redraws itself while the execution runs (and stops once it
is finished), the dashboard refreshes itself. With ``CONDUCTOR_SCREENSHOTS_DIR`` set the
screenshots (``admin-<page>-<width>.png``) are copied there (``make screenshots``).

Needs Chromium like ``test_admin_browser``, whose helpers it shares.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution, Schedule, Step, Worker

from .conftest import poll
from .test_admin_browser import (  # noqa: F401  (browser: a fixture)
    PASSWORD,
    By,
    browser,
    keep_screenshots,
    log_in,
    text,
    visit,
    wait_for,
)

WIDTHS = (1280, 1920)
HEIGHT = 1300


def sideways_overflow(driver) -> dict:
    """How far the page, and the list's own scrolling box, are wider than the window."""
    return driver.execute_script("""
        const doc = document.documentElement, results = document.querySelector('.results');
        return {page: doc.scrollWidth - doc.clientWidth,
                list: results ? results.scrollWidth - results.clientWidth : 0};""")


def live_text(driver, css: str) -> str:
    """The text of an element that a refresh may replace at any moment (read at once)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e ? e.textContent.trim() : null;", css)


def shoot(driver, tmp_path, name: str, width: int) -> None:
    driver.save_screenshot(str(tmp_path / f"admin-{name}-{width}.png"))


def some_history() -> tuple[str, str]:
    """Finished, failed, scheduled and cancelled-before-start executions, schedules, and
    a completed execution of 120 steps (returned with an execution that keeps running)."""
    for n in range(6):
        conductor.invoke("echo", {"n": n, "note": "a payload long enough " * 4})
    conductor.invoke("always-fails")
    conductor.invoke("echo", {"later": True}, delay=3600)  # scheduled
    unstarted = conductor.invoke("echo", {"cancelled": True}, delay=3600)
    conductor.cancel(unstarted, "not needed after all")
    conductor.schedule("echo", "every-five-minutes", cron="*/5 * * * *")
    conductor.schedule("echo", "weekdays-paris", cron="0 9 * * 1-5", timezone="Europe/Paris")
    start = timezone.now() - timedelta(minutes=2)
    big = Execution.objects.create(
        task_name="import-catalogue", status="completed", attempts=1, payload={"rows": 120},
        created_at=start, run_at=start, started_at=start,
        finished_at=start + timedelta(seconds=30), result=120)
    Step.objects.bulk_create(
        Step(execution=big, name=f"row-{n}", result={"row": n},
             started_at=start + timedelta(milliseconds=240 * n),
             created_at=start + timedelta(milliseconds=240 * n + 180))
        for n in range(1, 121))
    running = conductor.invoke("loop-until-cancelled", {"key": "live"})
    return str(big.pk), running


@pytest.mark.django_db(transaction=True)
def test_every_page_at_1280_and_1920_px_live_updates_and_no_sideways_scroll(
    live_server, start_worker, browser, tmp_path  # noqa: F811
):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    big, running = some_history()
    start_worker("--concurrency", "4")
    poll(lambda: conductor.get(running).status == "running"
         and Execution.objects.filter(task_name="always-fails", status="failed").exists(),
         timeout=60, message="the loop runs and always-fails failed")
    admin = live_server.url
    log_in(browser, admin)
    lists = {
        "executions": reverse("admin:conductor_django_execution_changelist"),
        "schedules": reverse("admin:conductor_django_schedule_changelist"),
        "workers": reverse("admin:conductor_django_worker_changelist"),
    }
    page = reverse("admin:conductor_django_execution_change", args=[big])
    dashboard = reverse("admin:conductor_django_execution_dashboard")

    for width in WIDTHS:
        browser.set_window_size(width, HEIGHT)
        for name, url in lists.items():
            visit(browser, admin + url)
            wait_for(browser, By.ID, "result_list")
            assert sideways_overflow(browser) == {"page": 0, "list": 0}, (name, width)
            shoot(browser, tmp_path, name, width)
        visit(browser, admin + lists["executions"])
        rows = browser.find_element(By.ID, "result_list").text
        assert "Scheduled" in rows and "Cancelled before start" in rows
        heights = browser.execute_script(
            "return [...document.querySelectorAll('#result_list tbody tr')]"
            ".map(r => r.getBoundingClientRect().height)")
        assert max(heights) < 2 * min(heights)  # one line per row
        errors = [e.get_attribute("title") for e in browser.find_elements(
            By.CSS_SELECTOR, "td.field-error_excerpt span.cdj-cell")]
        assert "ValueError: boom" in errors and "not needed after all" in errors  # on hover
        visit(browser, admin + lists["schedules"])
        assert "TIME_ZONE" not in browser.find_element(By.ID, "result_list").text

        visit(browser, admin + page)
        assert wait_for(browser, By.ID, "cdj-timeline").tag_name == "svg"
        assert text(browser, "#cdj-step-pages").startswith("Steps 101–120 of 120")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#cdj-timeline rect.cdj-bar-step")) \
            == 20
        assert sideways_overflow(browser)["page"] == 0
        shoot(browser, tmp_path, "execution", width)
        if width == 1920:  # the steps: started and finished to the millisecond, pages
            browser.execute_script("document.getElementById('cdj-step-pages')"
                                   ".scrollIntoView()")
            shoot(browser, tmp_path, "execution-steps", width)

        visit(browser, admin + dashboard)
        assert "always-fails" in live_text(browser, "#cdj-tasks")
        assert "boom" in live_text(browser, "#cdj-failures")
        assert sideways_overflow(browser)["page"] == 0
        shoot(browser, tmp_path, "dashboard", width)

    # The running execution's page redraws itself (no reload) as steps are recorded ...
    browser.set_window_size(1280, HEIGHT)
    visit(browser, admin + reverse("admin:conductor_django_execution_change", args=[running]))
    browser.execute_script("window.cdjSamePage = true")
    first = browser.find_element(By.ID, "cdj-timeline").get_attribute("aria-label")
    assert first and browser.find_element(By.CSS_SELECTOR, "[data-cdj-live]")
    before = live_text(browser, "#steps-group")
    poll(lambda: live_text(browser, "#steps-group") != before, timeout=30,
         message="the steps redrawn while it runs")
    # ... and after a cancel from elsewhere it shows the final status, then stops polling.
    conductor.cancel(running, "stopped while watched")
    poll(lambda: live_text(browser, "#cdj-current-status") == "Cancelled", timeout=30,
         message="the page shows the cancel by itself")
    assert browser.execute_script("return window.cdjSamePage") is True
    # the heading is redrawn too (Django 5.2: #content > h2; 6.1: inside .titles)
    heading = browser.execute_script(
        "return [...document.querySelectorAll('#content h2')]"
        ".map(h => h.textContent).find(t => t.includes('(')) || ''")
    assert "(cancelled)" in heading and "(running)" not in heading, heading
    assert not browser.find_elements(By.ID, "cdj-cancel-button")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-cdj-live]")  # polling stopped

    # The dashboard refreshes itself: a new failure appears without a reload.
    visit(browser, admin + dashboard)
    browser.execute_script("window.cdjSamePage = true")
    failing = conductor.invoke("always-fails", {"fresh": True})
    poll(lambda: Execution.objects.get(pk=failing).status == "failed", timeout=60,
         message="the new failure")
    updated = live_text(browser, "#cdj-updated")
    poll(lambda: live_text(browser, "#cdj-updated") != updated, timeout=40,
         message="the dashboard refreshed itself")
    assert browser.execute_script("return window.cdjSamePage") is True
    assert Worker.objects.exists() and Schedule.objects.count() == 2

    keep_screenshots(tmp_path, ["admin-execution-steps-1920.png",
                                *(f"admin-{name}-{width}.png" for width in WIDTHS
                                  for name in ("executions", "schedules", "workers",
                                               "execution", "dashboard"))])
