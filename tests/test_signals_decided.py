"""Which signal answers a wait: the deadline wins on every path, one signal answers one
wait, a second sender is told its signal was not used, and a retried or forked wait
waits for a new decision (docs/signals.md, "Which signal answers a wait")."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution, Signal
from conductor_django.testing import drain
from tests.test_signals import page, row, signal_url, staff, waiting_execution

pytestmark = pytest.mark.django_db
S = Execution.Status


def expire(eid: str) -> None:
    """The wait's deadline passes now, before any worker has seen it."""
    spec = row(eid).waiting_for
    Execution.objects.filter(pk=eid).update(
        waiting_for={**spec, "until": timezone.now().isoformat()})


# --- the deadline wins ------------------------------------------------------------------


def test_a_signal_after_the_deadline_is_refused_before_a_worker_records_the_timeout():
    eid = waiting_execution(timeout=3600, catch=True, choices=["approve", "reject"])
    expire(eid)
    assert row(eid).status == S.SUSPENDED  # no worker has processed the timeout
    assert conductor.send_signal(eid, "decision", "approve") is False
    assert not Signal.objects.filter(execution_id=eid).exists()  # nothing stored
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())
    drain()
    assert "timed_out" in row(eid).result


def test_a_late_signal_in_the_table_does_not_answer_a_wait_past_its_deadline():
    eid = waiting_execution(timeout=3600, catch=True)
    expire(eid)
    # stored by a path that did not check (a hand-made row, a race): sent after the deadline
    Signal.objects.create(execution_id=eid, name="decision", payload="late",
                          sent_at=timezone.now())
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())
    drain()
    assert "timed_out" in row(eid).result
    assert not Signal.objects.filter(execution_id=eid, consumed_at__isnull=False).exists()


def test_a_signal_sent_in_time_wins_even_when_the_worker_resumes_after_the_deadline():
    eid = waiting_execution(timeout=3600)
    Execution.objects.filter(pk=eid).update(run_at=timezone.now() + timedelta(days=1))
    assert conductor.send_signal(eid, "decision", "approve") is True
    expire(eid)  # the deadline passes before a worker takes the signal
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())
    drain()
    assert row(eid).result == {"decision": "approve", "attempt": 1}


def test_the_admin_stops_offering_the_choices_after_the_deadline():
    eid = waiting_execution(timeout=3600, choices=["approve", "reject"])
    client, _ = staff("signal_execution")
    assert 'id="cdj-signal-form"' in client.get(page(eid)).content.decode()
    expire(eid)
    html = client.get(page(eid)).content.decode()
    assert 'id="cdj-signal-form"' not in html and "cdj-signal-choice" not in html
    assert "timed out at" in html
    response = client.post(signal_url(eid), {"name": "decision", "choice": "approve"},
                           follow=True)
    message = str(list(response.context["messages"])[0])
    assert message.startswith("Not sent: the wait for 'decision' timed out at"), message
    assert not Signal.objects.filter(execution_id=eid).exists()


# --- one signal answers one wait --------------------------------------------------------


def test_a_second_signal_for_the_same_wait_is_refused():
    eid = waiting_execution(choices=["approve", "reject"])
    assert conductor.send_signal(eid, "decision", "approve", sent_by="ann") is True
    assert conductor.send_signal(eid, "decision", "reject", sent_by="bob") is False
    drain()
    assert row(eid).result == {"decision": "approve", "attempt": 1}
    assert list(Signal.objects.filter(execution_id=eid).values_list("sent_by", flat=True)) \
        == ["ann"]
    # decided: a later signal is refused too, the execution still unfinished or not
    assert conductor.send_signal(eid, "decision", "reject") is False


def test_the_admin_tells_the_second_operator_that_the_signal_was_not_used():
    eid = waiting_execution(choices=["approve", "reject"])
    first, _ = staff("signal_execution")
    second, _ = staff("signal_execution")
    first.post(signal_url(eid), {"name": "decision", "choice": "approve"})
    response = second.post(signal_url(eid), {"name": "decision", "choice": "reject"},
                           follow=True)
    message = str(list(response.context["messages"])[0])
    assert message == "Not sent: a signal 'decision' sent earlier answers the wait.", message
    drain()
    response = second.post(signal_url(eid), {"name": "decision", "choice": "reject"},
                           follow=True)
    assert "Not sent: the execution has finished" in str(list(response.context["messages"])[0])


def test_a_retry_from_the_wait_waits_for_a_new_decision():
    eid = waiting_execution(fail_after=True, choices=["approve", "reject"])
    assert conductor.send_signal(eid, "decision", "approve") is True
    assert conductor.send_signal(eid, "decision", "reject") is False  # a double click
    drain()
    assert row(eid).status == S.FAILED
    assert conductor.retry(eid, from_step="decision") is True
    drain()
    assert row(eid).status == S.SUSPENDED  # nobody decided the re-run yet
    assert row(eid).waiting_for["signal"] == "decision"
    assert conductor.send_signal(eid, "decision", "reject") is True
    drain()
    decisions = list(Signal.objects.filter(execution_id=eid, consumed_at__isnull=False)
                     .order_by("sent_at").values_list("payload", flat=True))
    assert decisions == ["approve", "reject"]


def test_an_unused_signal_left_from_before_the_wait_never_answers_a_retry():
    eid = conductor.invoke("await-decision", {"key": "e", "fail_after": True,
                                              "choices": ["approve", "reject"]})
    assert conductor.send_signal(eid, "decision", "maybe") is True  # before the wait
    drain()
    assert conductor.send_signal(eid, "decision", "approve") is True
    drain()
    assert row(eid).status == S.FAILED
    assert list(Signal.objects.filter(execution_id=eid).values_list("payload", flat=True)) \
        == ["approve"]  # "maybe" was discarded when the wait was decided
    conductor.retry(eid, from_step="decision")
    drain()
    assert row(eid).status == S.SUSPENDED


def test_a_fork_from_the_wait_waits_for_a_new_decision():
    eid = waiting_execution(choices=["approve", "reject"])
    conductor.send_signal(eid, "decision", "approve")
    drain()
    forked = conductor.fork(eid, "decision")
    drain()
    assert row(forked).status == S.SUSPENDED
    assert not Signal.objects.filter(execution_id=forked).exists()
    assert conductor.send_signal(forked, "decision", "reject") is True
    drain()
    assert row(forked).result == {"decision": "reject", "attempt": 1}


def test_the_signal_form_refuses_a_payload_nested_100000_deep():
    eid = waiting_execution()
    client, _ = staff("signal_execution")
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(signal_url(eid), {"name": "decision", "payload": deep}, follow=True)
    assert response.status_code == 200
    message = str(list(response.context["messages"])[0])
    assert message.startswith("Not sent: the payload nests deeper than"), message
    assert not Signal.objects.exists()
    # 32 levels: refused on every database (MariaDB's JSON_VALID refuses them)
    response = client.post(signal_url(eid), {"name": "decision",
                                             "payload": "[" * 32 + "]" * 32}, follow=True)
    assert "nests deeper than 31 levels" in str(list(response.context["messages"])[0])
    assert not Signal.objects.exists()
    # 31 levels are stored
    client.post(signal_url(eid), {"name": "decision", "payload": "[" * 31 + "]" * 31})
    assert json.dumps(Signal.objects.get().payload) == "[" * 31 + "]" * 31


def test_the_signal_form_needs_the_view_permission_too():
    eid = waiting_execution(choices=["approve", "reject"])
    client, user = staff("signal_execution")
    user.user_permissions.remove(*user.user_permissions.filter(codename="view_execution"))
    blind = Client()
    blind.force_login(type(user).objects.get(pk=user.pk))
    assert blind.post(signal_url(eid), {"name": "decision", "choice": "approve"}
                      ).status_code == 403
    assert not Signal.objects.exists()
