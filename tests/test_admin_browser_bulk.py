""""Cancel all matching…" in a real browser (headless Chromium, a live server and a
real worker): the confirmation page names the filters and the count, the work goes to
the background task whose execution page shows its progress. With
``CONDUCTOR_SCREENSHOTS_DIR`` set, its screenshots go there (docs/img/)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from conductor_django.admin import bulk
from conductor_django.models import Execution
from tests.test_admin import make
from tests.test_admin_browser import (  # noqa: F401  (browser: a fixture; skips without it)
    PASSWORD,
    By,
    browser,
    keep_screenshots,
    log_in,
    text,
    visit,
    wait_for,
)

from .conftest import poll


@pytest.mark.django_db(transaction=True)
def test_cancel_all_matching_in_the_background_with_its_progress(
    live_server, start_worker, browser, tmp_path  # noqa: F811
):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    many = bulk.INLINE_LIMIT + 250  # more than the request acts on
    Execution.objects.bulk_create(
        Execution(task_name="import-feed", queue="imports", payload={"n": n}, max_attempts=3)
        for n in range(many))
    make("pending", task_name="other", queue="parked")
    admin = live_server.url
    log_in(browser, admin)
    changelist = admin + reverse("admin:conductor_django_execution_changelist")
    visit(browser, changelist + "?queue=imports")
    browser.find_element(By.CSS_SELECTOR, "a.cdj-bulk-link[href*='/cancel/']").click()
    assert text(browser, "#cdj-bulk-count") == str(many)
    assert "queue = imports" in text(browser, "#cdj-bulk-filters")
    reason = wait_for(browser, By.ID, "id_reason")
    reason.clear()
    reason.send_keys("Bad feed of 7 December")
    browser.save_screenshot(str(tmp_path / "admin-bulk-all-matching.png"))
    browser.find_element(By.ID, "cdj-confirm").click()
    assert "being cancelled in the background" in text(browser, ".messagelist li")
    task_row = Execution.objects.get(task_name=bulk.BULK_TASK)
    assert browser.current_url.endswith(
        reverse("admin:conductor_django_execution_change", args=[task_row.pk]))
    start_worker("--queue", "default")
    poll(lambda: Execution.objects.get(pk=task_row.pk).status == "completed", timeout=120,
         message="the bulk task to finish")
    visit(browser, browser.current_url)
    assert text(browser, "#cdj-current-status") == "Completed"
    assert f"{many}/{many} {many} cancelled" in text(browser, "#cdj-progress")
    browser.save_screenshot(str(tmp_path / "admin-bulk-progress.png"))
    assert set(Execution.objects.filter(queue="imports")
               .values_list("status", "last_error")) == {("failed", "Bad feed of 7 December")}
    assert Execution.objects.get(task_name="other").status == "pending"
    keep_screenshots(tmp_path, ["admin-bulk-all-matching.png", "admin-bulk-progress.png"])
