"""Signals with real ``conductor_worker`` subprocesses (``--concurrency 1``): a waiting
execution holds no slot, wakes on a signal sent from the admin, times out into
``SignalTimeout`` and survives a ``kill -9`` of its worker while it waits."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution, Signal, Worker
from tests.conftest import poll
from tests.testapp.models import Mark

S = Execution.Status


def status(eid: str) -> str:
    return Execution.objects.get(pk=eid).status


def admin_client(*perms: str) -> tuple[Client, User]:
    user = User.objects.create_user(f"ops-{len(perms)}", password="pw", is_staff=True)
    for codename in ("view_execution", *perms):
        user.user_permissions.add(Permission.objects.get(
            codename=codename, content_type__app_label="conductor_django"))
    client = Client()
    client.force_login(user)
    return client, user


@pytest.mark.django_db(transaction=True)
def test_a_waiting_execution_holds_no_slot_and_wakes_on_a_signal_from_the_admin(
        start_worker, is_postgres):
    eid = conductor.invoke("await-decision", {"key": "w", "timeout": 3600,
                                              "choices": ["approve", "reject"]})
    # PostgreSQL: the worker loop polls and beats far less often than the test lasts, so
    # only the NOTIFY can wake it in time. Elsewhere: within one poll interval.
    if is_postgres:
        start_worker("--concurrency", "1", "--poll-interval", "60",
                     env={"CONDUCTOR_TEST_HEARTBEAT": "25"})
    else:
        start_worker("--concurrency", "1", "--poll-interval", "0.5")
    poll(lambda: status(eid) == S.SUSPENDED, timeout=30, message="the wait to suspend")
    assert Execution.objects.get(pk=eid).locked_by is None
    # The only slot is free while it waits: another execution runs meanwhile.
    other = conductor.invoke("echo", {"n": 1})
    assert conductor.wait(other, timeout=30)["payload"] == {"n": 1}
    assert status(eid) == S.SUSPENDED

    url = reverse("admin:conductor_django_execution_signal", args=[eid])
    viewer, _ = admin_client()
    assert viewer.post(url, {"name": "decision", "choice": "approve"}).status_code == 403
    assert not Signal.objects.exists()
    time.sleep(0.5)
    assert status(eid) == S.SUSPENDED  # nothing woke it

    ops, user = admin_client("signal_execution")
    sent = time.monotonic()
    assert ops.post(url, {"name": "decision", "choice": "approve"}).status_code == 302
    assert conductor.wait(eid, timeout=30) == {"decision": "approve", "attempt": 1}
    woke_in = time.monotonic() - sent
    assert woke_in < (3 if is_postgres else 10), woke_in
    signal = Signal.objects.get(execution_id=eid)
    assert signal.sent_by == user.username and signal.consumed_at is not None
    row = Execution.objects.get(pk=eid)
    assert row.attempts == 1 and row.progress == {"done": 2, "total": 2, "message": "decided"}
    assert Mark.count("w:before") == 1 and Mark.count("w:after") == 1


@pytest.mark.django_db(transaction=True)
def test_the_timeout_raises_signal_timeout_in_the_handler(start_worker):
    eid = conductor.invoke("await-decision", {"key": "t", "timeout": 1})
    caught = conductor.invoke("await-decision", {"key": "c", "timeout": 1, "catch": True})
    start_worker("--concurrency", "1")
    with pytest.raises(conductor.ExecutionFailed, match="^No signal 'decision' arrived by "):
        conductor.wait(eid, timeout=30)
    row = Execution.objects.get(pk=eid)
    assert row.attempts == 1 and Mark.count("t:timed-out") == 1
    deadline = datetime.fromisoformat(row.last_error.rsplit(" ", 1)[1])
    assert row.finished_at >= deadline
    result = conductor.wait(caught, timeout=30)
    assert result["timed_out"].startswith("No signal 'decision' arrived by ")
    assert conductor.get(caught).progress["message"] == "no decision"


@pytest.mark.django_db(transaction=True)
def test_a_waiting_execution_survives_kill_9_of_its_worker(start_worker):
    eid = conductor.invoke("await-decision", {"key": "k", "timeout": 3600})
    first = start_worker("--concurrency", "1")
    poll(lambda: status(eid) == S.SUSPENDED, timeout=30, message="the wait to suspend")
    until = Execution.objects.get(pk=eid).waiting_for["until"]
    first.kill()  # SIGKILL to the worker's process group
    assert first.proc.returncode == -9
    second = start_worker("--concurrency", "1")
    poll(lambda: Worker.objects.filter(pid=second.pid).exists(), timeout=30,
         message="the second worker to register")
    row = Execution.objects.get(pk=eid)
    assert row.status == S.SUSPENDED and row.waiting_for["until"] == until  # same deadline
    assert conductor.send_signal(eid, "decision", {"refund": 12}, sent_by="shell")
    assert conductor.wait(eid, timeout=30) == {"decision": {"refund": 12}, "attempt": 1}
    row = Execution.objects.get(pk=eid)
    assert row.attempts == 1  # the wait held no worker: nothing to recover
    assert Mark.count("k:before") == 1
    step = row.steps.get(name="decision").result
    assert step["payload"] == {"refund": 12} and step["sent_by"] == "shell"


@pytest.mark.django_db(transaction=True)
def test_with_a_worker_one_signal_decides_and_a_retry_waits_for_a_new_decision(start_worker):
    eid = conductor.invoke("await-decision", {"key": "r", "fail_after": True,
                                              "choices": ["approve", "reject"]})
    worker = start_worker("--concurrency", "1", "--poll-interval", "0.2")
    poll(lambda: status(eid) == S.SUSPENDED, timeout=30, message="the wait to suspend")
    assert conductor.send_signal(eid, "decision", "approve", sent_by="ann") is True
    assert conductor.send_signal(eid, "decision", "reject", sent_by="bob") is False
    poll(lambda: status(eid) == S.FAILED, timeout=30, message="the attempts to fail")
    assert [m.value for m in Mark.objects.filter(key="r:after")] == ["approve"] * 3
    assert conductor.retry(eid, from_step="decision") is True
    poll(lambda: status(eid) == S.SUSPENDED and Execution.objects.get(pk=eid).waiting_for,
         timeout=30, message="the re-run to wait for a new decision")
    assert Mark.count("r:after") == 3  # the leftover did not decide the re-run
    assert conductor.send_signal(eid, "decision", "reject", sent_by="bob") is True
    try:
        # ">=": with no backoff the re-run's attempts follow one another at once, each
        # replaying the memoized decision, so a count of exactly 4 may last no poll
        poll(lambda: Mark.count("r:after") >= 4, timeout=30, message="the new decision")
        poll(lambda: status(eid) == S.FAILED, timeout=30, message="the re-run to fail")
    except AssertionError as exc:  # what the worker did, and the row and its signals now
        row = Execution.objects.filter(pk=eid).values().first()
        signals = list(Signal.objects.filter(execution_id=eid).values())
        raise AssertionError(f"{exc}\nrow: {row}\nsignals: {signals}\n"
                             f"worker log:\n{worker.output()[-4000:]}") from None
    values = [m.value for m in Mark.objects.filter(key="r:after").order_by("id")]
    assert values[:3] == ["approve"] * 3 and set(values[3:]) == {"reject"}, values


@pytest.mark.django_db(transaction=True)
def test_with_a_worker_the_deadline_wins_before_the_timeout_is_recorded(start_worker):
    eid = conductor.invoke("await-decision", {"key": "d", "timeout": 3600, "catch": True})
    start_worker("--concurrency", "1", "--poll-interval", "0.2")
    poll(lambda: status(eid) == S.SUSPENDED, timeout=30, message="the wait to suspend")
    spec = Execution.objects.get(pk=eid).waiting_for
    Execution.objects.filter(pk=eid).update(  # the deadline passed; the worker sleeps on
        waiting_for={**spec, "until": timezone.now().isoformat()})
    assert conductor.send_signal(eid, "decision", "late") is False
    assert not Signal.objects.filter(execution_id=eid).exists()
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())  # the worker's turn
    assert "timed_out" in conductor.wait(eid, timeout=30)
