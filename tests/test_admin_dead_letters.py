"""Dead letters in the admin: the executions that failed for good, per task, grouped by
their error, each group re-driven through the bulk confirmation (inline or in the
background task), from the failing step or from the start."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from django.urls import reverse

from conductor_django.admin import bulk, dead_letters
from conductor_django.models import Execution, Step
from conductor_django.testing import drain
from tests.test_admin import XSS, make, staff
from tests.test_admin_bulk import confirm

PAGE = "admin:conductor_django_control_dead_letters"


def failed(error: str | None, n: int = 1, task_name: str = "parked", **fields):
    return [make("failed", task_name=task_name, queue="parked", last_error=error, **fields)
            for _ in range(n)]


def groups_on(page) -> list[tuple[str | None, int]]:
    return [(g["error"], g["count"]) for g in page.context["groups"]]


def query_of(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@pytest.mark.django_db
def test_groups_by_error_leave_out_cancels_and_other_states():
    failed("ValueError: bad row", 3)
    failed("Timeout", 2)
    failed("Cancelled by an operator", 4, cancel_requested=True)  # not failed for good
    make("completed", task_name="parked", queue="parked")
    failed("other task", 1, task_name="elsewhere")
    page = staff().get(reverse(PAGE) + "?task=parked")
    assert page.status_code == 200
    assert groups_on(page) == [("ValueError: bad row", 3), ("Timeout", 2)]
    tasks = {t["task_name"]: t["n"] for t in page.context["tasks"]}
    assert tasks == {"parked": 5, "elsewhere": 1}


@pytest.mark.django_db
def test_long_errors_group_by_their_head_and_the_filters_select_the_same_rows():
    head = "Traceback (most recent call last):\n" + "x" * dead_letters.PREFIX
    failed(head + " line 1", 2)
    failed(head + " line 2", 1)
    failed("short", 1)
    failed("short but longer", 1)
    page = staff("retry_execution").get(reverse(PAGE) + "?task=parked")
    shown = {g["error"]: g for g in page.context["groups"]}
    assert shown[head[:dead_letters.PREFIX]]["count"] == 3
    for group in page.context["groups"]:
        rows = bulk.matching({"filters": query_of(group["retry_url"]), "search": ""})
        assert rows.count() == group["count"], group["error"]


@pytest.mark.django_db
def test_retry_a_group_from_the_failing_step_and_from_the_start():
    broken = failed("KeyError: 'sku'", 2)
    other = failed("Timeout", 1)
    for row in [*broken, *other]:
        Step.objects.create(execution=row, name="fetch", result=1)
        Step.objects.create(execution=row, name="charge", result=2)
    client = staff("retry_execution")
    page = client.get(reverse(PAGE) + "?task=parked")
    group = next(g for g in page.context["groups"] if g["error"] == "KeyError: 'sku'")
    confirmation, data = confirm(client, "retry", **query_of(group["retry_url"]))
    assert confirmation.context["legal_count"] == 2
    client.post(reverse("admin:conductor_django_execution_bulk", args=["retry"]), data)
    assert set(Execution.objects.filter(pk__in=[r.pk for r in broken])
               .values_list("status", flat=True)) == {"pending"}
    assert Step.objects.filter(execution__in=broken).count() == 4  # steps kept
    assert Execution.objects.get(pk=other[0].pk).status == "failed"  # another group
    group = next(g for g in page.context["groups"] if g["error"] == "Timeout")
    _, data = confirm(client, "retry-from-start", **query_of(group["from_start_url"]))
    client.post(reverse("admin:conductor_django_execution_bulk", args=["retry-from-start"]),
                data)
    assert Execution.objects.get(pk=other[0].pk).status == "pending"
    assert not Step.objects.filter(execution=other[0]).exists()  # from the start


@pytest.mark.django_db
def test_a_large_group_goes_to_the_background_task(monkeypatch):
    monkeypatch.setattr(bulk, "INLINE_LIMIT", 2)
    rows = failed("boom", 5)
    for row in rows:
        Step.objects.create(execution=row, name="only", result=1)
    client = staff("retry_execution")
    page = client.get(reverse(PAGE) + "?task=parked")
    query = query_of(page.context["groups"][0]["from_start_url"])
    _, data = confirm(client, "retry-from-start", **query)
    client.post(reverse("admin:conductor_django_execution_bulk", args=["retry-from-start"]),
                data)
    task_row = Execution.objects.get(task_name=bulk.BULK_TASK)
    drain(queues=["default"])
    task_row.refresh_from_db()
    assert task_row.status == "completed", task_row.last_error
    assert task_row.result == {"changed": 5, "seen": 5}
    assert set(Execution.objects.filter(pk__in=[r.pk for r in rows])
               .values_list("status", flat=True)) == {"pending"}
    assert not Step.objects.filter(execution__in=rows).exists()


@pytest.mark.django_db
def test_retry_links_need_the_permission_and_errors_are_escaped():
    failed(XSS, 1)
    page = staff().get(reverse(PAGE) + "?task=parked")
    html = page.content.decode()
    assert XSS not in html and "cdj-dead-retry" not in html
    assert staff("retry_execution").post(
        reverse("admin:conductor_django_execution_bulk", args=["retry-from-start"]),
        {}).status_code == 302  # a confirmation that cannot be read: nothing done
    no_perm = staff().get(reverse("admin:conductor_django_execution_bulk",
                                  args=["retry-from-start"]))
    assert no_perm.status_code == 403
    assert Execution.objects.get().status == "failed"


@pytest.mark.django_db
def test_the_list_does_not_offer_retry_from_the_start():
    page = staff("retry_execution").get(reverse("admin:conductor_django_execution_changelist"))
    assert "retry-from-start" not in page.content.decode()
