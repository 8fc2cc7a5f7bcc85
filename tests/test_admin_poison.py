"""No admin URL answers 500 for unstorable text or bad JSON (issue 23), on SQLite and
PostgreSQL (where such text in a query is a ``DataError``)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

import conductor_django as conductor
from conductor_django.models import Execution, Schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("query", [
    "task_name=a%00b", "queue=%00", "q=%00", "q=a%00b", "status=%00", "status__exact=%00",
    "created_at__gte=%00", "task_name=%ED%A0%80", "a%00b=1", "q=%ED%A0%80",
])
@pytest.mark.parametrize("model", ["execution", "schedule", "worker"])
def test_list_urls_with_unstorable_text_do_not_answer_500(client, model, query):
    conductor.invoke("echo")
    url = reverse(f"admin:conductor_django_{model}_changelist")
    response = client.get(f"{url}?{query}", follow=True)
    assert response.status_code == 200, response.content[:500]
    assert Execution.objects.count() == 1  # the database still answers


@pytest.mark.parametrize("object_id", ["%00", "a%00b", "%ED%A0%80"])
def test_object_urls_with_unstorable_text_do_not_answer_500(client, object_id):
    for model in ("execution", "schedule", "worker"):
        url = reverse(f"admin:conductor_django_{model}_changelist")
        response = client.get(f"{url}{object_id}/change/", follow=True)
        assert response.status_code in (200, 404)


def test_cancel_reason_with_nul_cancels_with_a_storable_reason(client):
    eid = conductor.invoke("echo")
    url = reverse("admin:conductor_django_execution_cancel", args=[eid])
    response = client.post(url, {"reason": "stop\x00now"}, follow=True)
    assert response.status_code == 200
    row = conductor.get(eid)
    assert (row.status, row.last_error) == ("failed", "stop now")


def test_cancel_action_with_nul_reason(client):
    eid = conductor.invoke("echo")
    response = client.post(reverse("admin:conductor_django_execution_changelist"), {
        "action": "cancel_selected", "_selected_action": [eid], "confirm": "yes",
        "reason": "\x00\x00"}, follow=True)
    assert response.status_code == 200
    assert conductor.get(eid).last_error == "Cancelled by user"


@pytest.mark.parametrize(("payload", "message"), [
    ("NaN", "not JSON-serializable"),
    ('{"x": Infinity}', "not JSON-serializable"),
    ("[" * 10_000 + "]" * 10_000, "nests deeper than 31"),
    ("[" * 32 + "]" * 32, "nests deeper than 31"),
    ('"a\\u0000b"', "contains a NUL"),
    ('{"k": "\\ud800"}', "contains a lone surrogate"),
])
def test_schedule_form_refuses_payloads_that_cannot_be_stored(client, payload, message):
    response = client.post(reverse("admin:conductor_django_schedule_add"), {
        "task_name": "echo", "name": "s", "cron": "* * * * *", "payload": payload,
        "timezone": "", "enabled": "on"})
    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert not Schedule.objects.exists()


def test_schedule_form_refuses_nul_in_names(client):
    response = client.post(reverse("admin:conductor_django_schedule_add"), {
        "task_name": "echo", "name": "s\x00", "cron": "* * * * *\x00", "payload": "null",
        "timezone": "UTC\x00", "enabled": "on"})
    assert response.status_code == 200
    assert "Null characters are not allowed" in response.content.decode()
    assert not Schedule.objects.exists()


def test_schedule_form_warns_about_a_seconds_first_cron_and_refuses_seven_fields(client):
    response = client.post(reverse("admin:conductor_django_schedule_add"), {
        "task_name": "echo", "name": "quartz", "cron": "0 */5 * * * *", "payload": "null",
        "timezone": "", "enabled": "on"}, follow=True)
    assert Schedule.objects.filter(name="quartz").exists()  # saved, with a warning
    warned = [str(m) for m in response.context["messages"] if m.level_tag == "warning"]
    assert any("fires every second of each minute" in m for m in warned), warned
    response = client.post(reverse("admin:conductor_django_schedule_add"), {
        "task_name": "echo", "name": "year", "cron": "0 0 12 * * 1 2030", "payload": "null",
        "timezone": "", "enabled": "on"})
    assert response.status_code == 200 and "it has 7 fields" in response.content.decode()
    assert not Schedule.objects.filter(name="year").exists()
