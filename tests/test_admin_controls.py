"""Pauses and limits in the admin: the page, the dashboard, the POSTs' permissions and
CSRF, bad values as messages, escaping, the admin log."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

import conductor_django as conductor
from conductor_django.models import Control
from conductor_django.state import controls
from tests.test_admin import make, staff

pytestmark = pytest.mark.django_db

PAGE = "admin:conductor_django_control_changelist"
PAUSE = "admin:conductor_django_control_pause"
RESUME = "admin:conductor_django_control_resume"
LIMITS = "admin:conductor_django_control_limits"
DASHBOARD = "admin:conductor_django_execution_dashboard"


@pytest.fixture(autouse=True)
def _fresh_controls():
    controls.forget()
    yield
    controls.forget()


def test_pause_and_resume_from_the_page_are_logged():
    client = staff("pause_queue")
    reply = client.post(reverse(PAUSE), {"scope": "queue", "name": "ops", "schedules": "skip"},
                        follow=True)
    assert "Paused queue ops." in reply.content.decode()
    [pause] = conductor.paused()
    assert (pause.scope, pause.name, pause.schedules) == ("queue", "ops", "skip")
    assert pause.by.startswith("u")
    page = client.get(reverse(PAGE)).content.decode()
    assert 'data-paused="queue:ops"' in page and "skipped" in page
    conductor.invoke("ops-work")  # the queue has a row on the dashboard
    conductor.invoke("ops-other")
    dashboard = client.get(reverse(DASHBOARD)).content.decode()
    assert 'data-paused="queue:ops"' in dashboard and "paused for" in dashboard
    ops_row = dashboard[dashboard.index('<tr data-queue="ops">'):]
    ops_row = ops_row[:ops_row.index("</tr>")]
    assert "cdj-paused-badge" in ops_row and "/resume/" in ops_row
    other_row = dashboard[dashboard.index('<tr data-queue="ops-other">'):]
    other_row = other_row[:other_row.index("</tr>")]
    assert "cdj-paused-badge" not in other_row and "/pause/" in other_row
    assert "/pause/" not in staff().get(reverse(DASHBOARD)).content.decode()  # no permission
    make("completed", task_name="ops-other", queue="ops-other")  # a row of the tasks table
    conductor.pause(task="ops-other")
    dashboard = client.get(reverse(DASHBOARD)).content.decode()
    task_row = dashboard[dashboard.index('<tr data-task="ops-other">'):]
    task_row = task_row[:task_row.index("</tr>")]
    assert "cdj-paused-badge" in task_row and 'value="task"' in task_row
    conductor.resume(task="ops-other")
    reply = client.post(reverse(RESUME), {"scope": "queue", "name": "ops", "next": "dashboard"})
    assert reply.status_code == 302 and reply["Location"] == reverse(DASHBOARD)
    assert conductor.paused() == []
    messages = list(LogEntry.objects.order_by("action_time").values_list("change_message",
                                                                         flat=True))
    assert messages == ["Paused queue ops (schedules: skip)", "Resumed queue ops"]


def test_staff_without_the_permission_gets_403_and_nothing_changes():
    client = staff()  # view_execution only
    assert client.get(reverse(PAGE)).status_code == 200
    page = client.get(reverse(PAGE)).content.decode()
    assert 'id="cdj-pause-form"' not in page and "Back to the code" not in page
    assert client.post(reverse(PAUSE), {"scope": "queue", "name": "ops"}).status_code == 403
    assert client.post(reverse(LIMITS), {"task": "ops-limited",
                                         "concurrency": "1"}).status_code == 403
    conductor.pause(queue="ops")
    assert client.post(reverse(RESUME), {"scope": "queue", "name": "ops"}).status_code == 403
    assert [p.name for p in conductor.paused()] == ["ops"]
    assert Control.objects.get().concurrency is None
    # pausing does not let one change limits, nor the other way round
    assert staff("pause_queue").post(reverse(LIMITS), {"task": "ops-limited",
                                                        "concurrency": "1"}).status_code == 403
    assert staff("set_limits").post(reverse(RESUME), {"scope": "queue",
                                                       "name": "ops"}).status_code == 403
    assert staff("pause_queue").get(reverse(PAUSE)).status_code == 403  # POST only


def test_posts_need_the_csrf_token():
    client = staff("pause_queue", "set_limits")
    client.handler.enforce_csrf_checks = True
    assert client.post(reverse(PAUSE), {"scope": "queue", "name": "ops"}).status_code == 403
    assert client.post(reverse(LIMITS), {"task": "ops-limited",
                                         "concurrency": "1"}).status_code == 403
    assert not Control.objects.exists()


@pytest.mark.parametrize("data, message", [
    ({"scope": "queue", "name": "<b>nope</b>"},
     "No queue named &#x27;&lt;b&gt;nope&lt;/b&gt;&#x27;"),
    ({"scope": "task", "name": "ops-wrok"}, "did you mean"),
    ({"scope": "everything", "name": "ops"}, "Choose a queue or a task"),
    ({"scope": "queue", "name": "ops", "schedules": "drop"}, "schedules must be"),
])
def test_a_bad_pause_is_a_message_and_writes_nothing(data, message):
    reply = staff("pause_queue").post(reverse(PAUSE), data, follow=True)
    assert reply.status_code == 200 and message in reply.content.decode()
    assert not Control.objects.exists()


def test_limits_change_shows_the_codes_value_beside_and_goes_back():
    client = staff("set_limits")
    reply = client.post(reverse(LIMITS), {"task": "ops-limited", "concurrency": "2",
                                          "rate_limit": "10/m"}, follow=True)
    assert "Limits of ops-limited changed: concurrency 2" in reply.content.decode()
    page = client.get(reverse(PAGE)).content.decode()
    row = page[page.index('data-task="ops-limited"'):]
    row = row[:row.index("</tr>")]
    assert "<td>4, -, -</td>" in row  # the code's
    assert "2, -, 10/60s" in row and "Back to the code" in row
    client.post(reverse(LIMITS), {"task": "ops-limited", "reset": "1"})
    assert conductor.set_limits("ops-limited").concurrency == 4
    assert LogEntry.objects.count() == 2


@pytest.mark.parametrize("value, message", [
    ("0", "from 1 to 1,000,000"), ("-1", "whole number"), ("nan", "whole number"),
    ("99999999999", "from 1 to 1,000,000"), ("<script>", "&#x27;&lt;script&gt;&#x27;"),
])
def test_bad_limits_in_the_admin_are_a_message_and_write_nothing(value, message):
    reply = staff("set_limits").post(reverse(LIMITS), {"task": "ops-limited",
                                                       "concurrency": value}, follow=True)
    body = reply.content.decode()
    assert reply.status_code == 200 and "not changed" in body and message in body
    assert "<script>" not in body
    assert not Control.objects.exists()


def test_anonymous_is_sent_to_the_login():
    reply = Client().post(reverse(PAUSE), {"scope": "queue", "name": "ops"})
    assert reply.status_code == 302 and "login" in reply["Location"]
    assert not Control.objects.exists()


def test_the_page_reads_every_task_limits_in_one_query(django_assert_max_num_queries):
    conductor.set_limits("ops-limited", concurrency=2)
    Control.objects.create(scope="task", name="ops-work", rate_limit="not a rate")
    client = staff("set_limits")
    client.get(reverse(PAGE))  # warm: sessions, content types
    with django_assert_max_num_queries(8):
        page = client.get(reverse(PAGE))
    assert page.status_code == 200
    row = page.content.decode()
    row = row[row.index('data-task="ops-work"'):]
    assert "<td>-, -, -</td>" in row[:row.index("</tr>")]  # the unreadable row is ignored
