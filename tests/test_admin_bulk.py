"""Bulk by filter in the admin (SPEC §15.3): "Cancel / Retry / Run again all matching"
act on every execution the list's filters and search select, after a confirmation page
that states how many and which filters; permission, CSRF, the admin log, a selection
that changes between the confirmation and the POST, and the background task."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from conductor_django.admin import bulk
from conductor_django.models import Execution
from conductor_django.testing import drain
from tests.conftest import poll
from tests.test_admin import CHANGELIST, XSS, make, messages_of, staff


def bulk_url(verb: str, **filters: str) -> str:
    url = reverse("admin:conductor_django_execution_bulk", args=[verb])
    return f"{url}?{urlencode(filters)}" if filters else url


def confirm(client: Client, verb: str, **filters: str):
    """GET the confirmation page; the form data its "Yes" button would POST."""
    page = client.get(bulk_url(verb, **filters))
    assert page.status_code == 200
    data = {"selection": page.context["selection"], "count": page.context["legal_count"]}
    return page, data


def parked(n: int, status: str = "pending", **fields) -> list[Execution]:
    """Executions no worker of the tests runs (queue "parked")."""
    return [make(status, task_name="parked", queue="parked", **fields) for _ in range(n)]


def statuses(rows) -> list[str]:
    return sorted(Execution.objects.filter(pk__in=[r.pk for r in rows])
                  .values_list("status", flat=True))


@pytest.mark.django_db
def test_the_list_offers_each_operation_only_with_its_permission():
    page = staff("cancel_execution").get(reverse(CHANGELIST) + "?status__exact=failed")
    html = page.content.decode()
    assert "Cancel all matching…" in html and "Retry all matching" not in html
    assert bulk_url("cancel", status__exact="failed").replace("&", "&amp;") in html
    html = staff("retry_execution", "rerun_execution").get(reverse(CHANGELIST)).content.decode()
    assert "Cancel all matching" not in html
    assert "Retry all matching…" in html and "Run again all matching…" in html


@pytest.mark.django_db
def test_cancel_all_matching_confirms_then_cancels_every_match_not_only_the_page():
    wanted = parked(60)  # more than a page of the list (50)
    running = make("running", task_name="parked", queue="parked")
    other, done = make("pending", task_name="other"), make("completed", task_name="parked")
    client = staff("cancel_execution")
    page, data = confirm(client, "cancel", task_name="parked", o="-2", p="2", _facets="True")
    html = page.content.decode()
    assert page.context["legal_count"] == 61 and page.context["matching_count"] == 62
    assert "task_name = parked" in html and 'name="reason"' in html
    assert statuses(wanted) == ["pending"] * 60  # a GET changes nothing
    late = make("pending", task_name="parked", queue="parked",
                created_at=timezone.now() + timedelta(seconds=5))  # after the confirmation
    response = client.post(bulk_url("cancel"), {**data, "reason": "bulk <b>"}, follow=True)
    assert messages_of(response) == ["61 of the matching executions cancelled."]
    assert statuses(wanted) == ["failed"] * 60
    assert Execution.objects.get(pk=wanted[0].pk).last_error == "bulk <b>"
    running.refresh_from_db()
    assert running.status == "running" and running.cancelled
    assert statuses([other, done, late]) == ["completed", "pending", "pending"]
    entry = LogEntry.objects.get()
    assert entry.user.username == response.wsgi_request.user.username
    assert "61 cancelled" in entry.change_message and "task_name = parked" in entry.change_message
    assert "all matching executions" in client.get(reverse("admin:index")).content.decode()


@pytest.mark.django_db
def test_retry_and_run_again_all_matching_follow_the_search():
    failed = parked(3, "failed", key="batch-7")
    untouched = parked(2, "failed")
    client = staff("retry_execution", "rerun_execution")
    page, data = confirm(client, "retry", q="batch-7")
    assert page.context["legal_count"] == 3 and "search: batch-7" in page.content.decode()
    response = client.post(bulk_url("retry"), data, follow=True)
    assert messages_of(response) == ["3 of the matching executions retried."]
    assert statuses(failed) == ["pending"] * 3 and statuses(untouched) == ["failed"] * 2
    _, data = confirm(client, "run-again", status__exact="failed")
    client.post(bulk_url("run-again"), data)
    assert Execution.objects.filter(task_name="parked").count() == 7


@pytest.mark.django_db
def test_a_selection_that_changed_since_the_confirmation_is_said_and_not_exceeded():
    rows = parked(4)
    client = staff("cancel_execution")
    _, data = confirm(client, "cancel", queue="parked")
    rows[0].cancel("meanwhile")
    parked(2)  # created after the confirmation page: not concerned
    response = client.post(bulk_url("cancel"), data, follow=True)
    assert messages_of(response) == [
        "3 of the matching executions cancelled. The confirmation counted 4: executions "
        "changed state since."]
    assert Execution.objects.filter(queue="parked", status="pending").count() == 2


@pytest.mark.django_db
def test_no_match_says_so_and_nothing_is_posted():
    parked(2, "completed")
    client = staff("cancel_execution")
    page, data = confirm(client, "cancel", queue="parked")
    html = page.content.decode()
    assert page.context["legal_count"] == 0 and 'id="cdj-bulk-none"' in html
    assert 'id="cdj-confirm"' not in html
    response = client.post(bulk_url("cancel"), data, follow=True)
    assert "No execution to be cancelled" in messages_of(response)[0]
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_permission_csrf_bad_confirmations_and_escaping():
    rows = parked(2)
    # Staff without the permission: 403 for the page and the POST, nothing changes.
    viewer = staff()
    assert viewer.get(bulk_url("cancel")).status_code == 403
    _, data = confirm(staff("cancel_execution"), "cancel")
    assert viewer.post(bulk_url("cancel"), data).status_code == 403
    assert staff("cancel_execution").post(bulk_url("retry"), data).status_code == 403
    # Without the CSRF token: 403.
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(LogEntry._meta.apps.get_model("auth", "User").objects.create_superuser(
        "root", password="pw"))
    assert strict.post(bulk_url("cancel"), data).status_code == 403
    assert statuses(rows) == ["pending", "pending"]
    client = staff("cancel_execution")
    assert client.get(bulk_url("nope")).status_code == 404
    # A forged or broken confirmation does nothing.
    for bad in ({"selection": "{", "count": "2"},
                {"selection": json.dumps({"filters": {"nope": "1"}, "search": "",
                                          "until": timezone.now().isoformat()}), "count": 2},
                {"selection": json.dumps({"filters": [], "search": "", "until": "x"}),
                 "count": 2},
                {"selection": json.dumps({"filters": {}, "search": "", "until": ""}),
                 "count": 2}):
        response = client.post(bulk_url("cancel"), bad, follow=True)
        assert "could not be read" in messages_of(response)[0]
    assert statuses(rows) == ["pending", "pending"]
    # An unknown filter on the list: said, nothing offered.
    response = client.get(bulk_url("cancel", nope="1"), follow=True)
    assert "is not a filter of executions" in messages_of(response)[0]
    # A lookup the list itself refuses, a value that is no date: said, nothing done.
    response = client.get(bulk_url("cancel", steps__name="s1"), follow=True)
    assert "is not a filter of the execution list" in messages_of(response)[0]
    response = client.get(bulk_url("cancel", created_at__gte="soon"), follow=True)
    assert "created_at__gte='soon'" in messages_of(response)[0]
    # Everything from the list's query is escaped.
    html = client.get(bulk_url("cancel", q=XSS, key=XSS)).content.decode()
    assert XSS not in html and "&lt;script&gt;" in html


@pytest.mark.django_db
def test_more_than_the_inline_limit_goes_to_the_bulk_task_with_progress(monkeypatch):
    monkeypatch.setattr(bulk, "INLINE_LIMIT", 3)
    monkeypatch.setattr(bulk, "TASK_CHUNK", 2)
    rows = parked(5)
    client = staff("cancel_execution")
    _, data = confirm(client, "cancel", queue="parked")
    response = client.post(bulk_url("cancel"), {**data, "reason": "drained"})
    task_row = Execution.objects.get(task_name=bulk.BULK_TASK)
    assert response.url == reverse("admin:conductor_django_execution_change",
                                   args=[task_row.pk])
    assert statuses(rows) == ["pending"] * 5  # nothing inline
    assert "handed to execution" in LogEntry.objects.get().change_message
    drain(queues=["default"])
    task_row.refresh_from_db()
    assert task_row.status == "completed", task_row.last_error
    assert task_row.result == {"changed": 5, "seen": 5}
    assert task_row.progress["done"] == 5 and task_row.progress["total"] == 5
    assert statuses(rows) == ["failed"] * 5
    assert set(Execution.objects.filter(queue="parked").values_list("last_error", flat=True)) \
        == {"drained"}


@pytest.mark.django_db(transaction=True)
def test_the_bulk_task_runs_on_a_real_worker(start_worker, monkeypatch):
    monkeypatch.setattr(bulk, "INLINE_LIMIT", 10)
    rows = parked(450, "failed")  # three chunks of the worker's 200
    client = staff("retry_execution")
    _, data = confirm(client, "retry", queue="parked", status__exact="failed")
    client.post(bulk_url("retry"), data)
    task_row = Execution.objects.get(task_name=bulk.BULK_TASK)
    start_worker("--queue", "default")
    poll(lambda: Execution.objects.get(pk=task_row.pk).status in ("completed", "failed"),
         timeout=60, message="the bulk task finishes")
    task_row.refresh_from_db()
    assert (task_row.status, task_row.result) == ("completed", {"changed": 450, "seen": 450})
    assert task_row.progress["done"] == 450
    assert statuses(rows) == ["pending"] * 450
    assert task_row.steps.count() == 3


@pytest.mark.django_db
def test_the_confirmation_counts_what_the_list_selects_with_its_own_filter_links():
    recent = parked(3)
    old = parked(2)
    Execution.objects.filter(pk__in=[o.pk for o in old]).update(
        created_at=timezone.now() - timedelta(days=30))
    make("pending", task_name="other")
    client = staff("cancel_execution")
    listing = client.get(reverse(CHANGELIST) + "?queue=parked&status__exact=pending")
    cl = listing.context["cl"]
    spec = next(s for s in cl.filter_specs if getattr(s, "field_path", "") == "created_at")
    week = next(c for c in spec.choices(cl) if c["display"] == "Past 7 days")
    shown = client.get(reverse(CHANGELIST) + week["query_string"]).context["cl"]
    assert shown.queryset.count() == 3
    url = reverse("admin:conductor_django_execution_bulk", args=["cancel"])
    page = client.get(url + week["query_string"])
    assert page.context["matching_count"] == 3
    assert "created_at__gte" in page.content.decode()
    client.post(url, {"selection": page.context["selection"], "count": 3})
    assert statuses(recent) == ["failed"] * 3 and statuses(old) == ["pending"] * 2


@pytest.mark.django_db
def test_a_retried_bulk_task_never_acts_on_a_chunk_twice(monkeypatch):
    monkeypatch.setattr(bulk, "INLINE_LIMIT", 2)
    monkeypatch.setattr(bulk, "TASK_CHUNK", 2)
    parked(5, "completed")
    client = staff("rerun_execution")
    _, data = confirm(client, "run-again", queue="parked")
    client.post(bulk_url("run-again"), data)
    task_row = Execution.objects.get(task_name=bulk.BULK_TASK)
    drain(queues=["default"])
    assert Execution.objects.filter(queue="parked", status="pending").count() == 5
    # As if its last attempt had failed after the chunks: retried, it replays its steps.
    Execution.objects.filter(pk=task_row.pk).update(status="failed")
    assert Execution.objects.retry(task_row.pk) is True
    drain(queues=["default"])
    task_row.refresh_from_db()
    assert (task_row.status, task_row.result) == ("completed", {"changed": 5, "seen": 5})
    assert Execution.objects.filter(queue="parked", status="pending").count() == 5  # not 10
