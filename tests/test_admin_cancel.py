"""The first admin: the cancel action asks for a reason and needs its permission."""

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

import conductor_django as conductor
from conductor_django.models import Execution

pytestmark = pytest.mark.django_db



def changelist():
    return reverse("admin:conductor_django_execution_changelist")


@pytest.fixture
def staff(client):
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_execution"))
    client.force_login(user)
    return user


def test_cancel_action_confirms_then_cancels_with_reason(client, staff):
    staff.user_permissions.add(Permission.objects.get(codename="cancel_execution"))
    a = conductor.invoke("echo", delay=60)
    b = conductor.invoke("echo")
    Execution.objects.filter(pk=b).update(status="completed")
    data = {"action": "cancel_selected", "_selected_action": [a, b]}
    page = client.post(changelist(), data)
    assert page.status_code == 200
    assert b"Reason" in page.content and b"Cancelled by user" in page.content
    assert conductor.get(a).status == "pending"  # nothing happens before confirming
    done = client.post(changelist(), {**data, "confirm": "yes", "reason": "Ops said so"},
                       follow=True)
    assert b"1 execution cancelled; 1 already finished." in done.content
    row = conductor.get(a)
    assert (row.status, row.last_error) == ("failed", "Ops said so")
    assert conductor.get(b).status == "completed"


def test_cancel_action_without_permission_changes_nothing(client, staff):
    a = conductor.invoke("echo", delay=60)
    response = client.post(changelist(), {"action": "cancel_selected",
                                          "_selected_action": [a], "confirm": "yes"})
    # The action is not offered to this user: Django refuses to run it.
    assert response.status_code in (200, 302, 403)
    assert conductor.get(a).status == "pending"
    page = client.get(changelist())
    assert b"cancel_selected" not in page.content


def test_payload_is_escaped_on_the_execution_page(client, staff):
    eid = conductor.invoke("echo", {"html": "<script>alert(1)</script>"})
    page = client.get(reverse("admin:conductor_django_execution_change", args=[eid]))
    assert page.status_code == 200
    assert b"<script>alert(1)</script>" not in page.content
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.content
