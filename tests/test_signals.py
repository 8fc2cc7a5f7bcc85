"""Signals and progress in-process (``drain``): ``ctx.wait_for_signal``, ``send_signal``,
``ctx.progress``, retention, the admin pages and form. Real workers:
tests/test_signals_workers.py."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution, Signal, Step
from conductor_django.retention import cleanup
from conductor_django.runtime import Runtime
from conductor_django.runtime.context import Context
from conductor_django.testing import drain
from tests.testapp.models import Mark

S = Execution.Status


def row(eid: str) -> Execution:
    return Execution.objects.get(pk=eid)


def waiting_execution(**payload) -> str:
    eid = conductor.invoke("await-decision", {"key": "k", **payload})
    drain()
    assert row(eid).status == S.SUSPENDED, row(eid).last_error
    return eid


def running_context(task: str = "echo") -> tuple[Context, str]:
    """A claimed execution and its ctx, as a worker builds them."""
    eid = conductor.invoke(task)
    wid = uuid.uuid4()
    [claimed] = Execution.objects.claim(wid, None, 1, "default")
    ctx = Context(execution_id=eid, task_name=task, queue="default", attempt=1,
                  runtime=Runtime(worker_id=wid, inline=True), lease=claimed.lease)
    return ctx, eid


# --- waiting and waking ---------------------------------------------------------------


@pytest.mark.django_db
def test_wait_suspends_then_a_signal_resumes_it_with_the_payload():
    eid = waiting_execution(timeout=3600, choices=["approve", "reject"])
    ex = row(eid)
    assert ex.locked_by is None and ex.resume and ex.attempts == 1
    assert ex.waiting_for["signal"] == "decision"
    assert ex.waiting_for["choices"] == ["approve", "reject"]
    until = datetime.fromisoformat(ex.waiting_for["until"])
    assert ex.run_at == until  # resumes at the deadline at the latest
    assert timedelta(minutes=59) < until - timezone.now() <= timedelta(hours=1)

    assert conductor.send_signal(eid, "decision", "approve", sent_by="alice") is True
    assert row(eid).run_at <= timezone.now()  # woken
    drain()
    ex.refresh_from_db()
    assert ex.status == S.COMPLETED, ex.last_error
    assert ex.result == {"decision": "approve", "attempt": 1} and ex.attempts == 1
    assert ex.waiting_for is None
    signal = Signal.objects.get(execution_id=eid)
    assert (signal.name, signal.payload, signal.sent_by) == ("decision", "approve", "alice")
    assert signal.consumed_at is not None
    step = Step.objects.get(execution_id=eid, name="decision").result
    assert step["payload"] == "approve" and step["sent_by"] == "alice"
    assert Mark.count("k:before") == 1 and Mark.count("k:after") == 1


@pytest.mark.django_db
def test_a_resume_without_a_signal_suspends_again_keeping_the_deadline():
    eid = waiting_execution(timeout=3600)
    until = row(eid).run_at
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())  # a stray wake-up
    drain()
    ex = row(eid)
    assert ex.status == S.SUSPENDED and ex.run_at == until and ex.attempts == 1


@pytest.mark.django_db
def test_a_signal_sent_before_the_wait_is_kept_and_consumed_by_it():
    eid = conductor.invoke("await-decision", {"key": "early"})
    assert conductor.send_signal(eid, "decision", {"ok": True}) is True
    drain()
    assert row(eid).result == {"decision": {"ok": True}, "attempt": 1}
    assert Signal.objects.get(execution_id=eid).consumed_at is not None


@pytest.mark.django_db
def test_the_payload_is_memoized_across_a_retry():
    eid = waiting_execution(fail_after=True)
    conductor.send_signal(eid, "decision", "first")
    # one signal answers one wait: the second sender is told it was not used
    assert conductor.send_signal(eid, "decision", "second") is False
    drain()
    ex = row(eid)
    assert ex.status == S.FAILED and ex.attempts == 3
    assert [m.value for m in Mark.objects.filter(key="k:after")] == ["first"] * 3
    consumed = Signal.objects.filter(execution_id=eid, consumed_at__isnull=False)
    assert [s.payload for s in consumed] == ["first"]


@pytest.mark.django_db
def test_waiting_twice_under_one_name_returns_the_memoized_payload():
    eid = conductor.invoke("twice-same-signal")
    drain()
    conductor.send_signal(eid, "go", 1)
    drain()
    assert row(eid).result == [1, 1]


@pytest.mark.django_db
def test_the_timeout_raises_signal_timeout_which_is_memoized_and_not_retried():
    eid = waiting_execution(timeout=3600)
    assert Mark.count("k:timed-out") == 0
    past = (timezone.now() - timedelta(seconds=1)).isoformat()
    Execution.objects.filter(pk=eid).update(run_at=timezone.now(),
                                            waiting_for={**row(eid).waiting_for, "until": past})
    drain()
    ex = row(eid)
    assert ex.status == S.FAILED and ex.attempts == 1  # SignalTimeout is not retried
    assert ex.last_error == f"No signal 'decision' arrived by {past}"
    assert Step.objects.get(execution_id=eid, name="decision").result == {
        "signal": "decision", "timed_out": past}
    assert ex.waiting_for is None
    # A signal arriving after the timeout is stored but changes nothing.
    assert conductor.send_signal(eid, "decision", "late") is False  # finished


@pytest.mark.django_db
def test_a_caught_timeout_lets_the_handler_carry_on():
    eid = conductor.invoke("await-decision", {"key": "t", "timeout": 0, "catch": True})
    drain()
    ex = row(eid)
    assert ex.status == S.COMPLETED
    assert ex.result["timed_out"].startswith("No signal 'decision' arrived by ")
    assert isinstance(conductor.SignalTimeout("x"), TimeoutError)


@pytest.mark.django_db
def test_a_cancel_while_waiting_ends_it_at_once():
    eid = waiting_execution()
    assert conductor.cancel(eid, "no decision needed")
    ex = row(eid)
    assert ex.status == S.FAILED and ex.last_error == "no decision needed"
    assert conductor.send_signal(eid, "decision", "approve") is False
    assert not Signal.objects.exists()


@pytest.mark.django_db
def test_a_signal_sent_while_running_wakes_the_suspend_that_follows():
    ctx, eid = running_context()
    wid, lease = ctx._runtime.worker_id, ctx.lease
    assert conductor.send_signal(eid, "decision", 1)
    far = timezone.now() + timedelta(days=1)
    assert Execution.objects.release(eid, wid, lease, far, "default", status=S.SUSPENDED,
                                     wakeable=True) == 1
    assert row(eid).run_at <= timezone.now()


@pytest.mark.django_db
def test_a_suspend_without_a_wake_up_keeps_its_deadline():
    ctx, eid = running_context()
    far = timezone.now() + timedelta(days=1)
    Execution.objects.release(eid, ctx._runtime.worker_id, ctx.lease, far, "default",
                              status=S.SUSPENDED, wakeable=True)
    assert row(eid).run_at == far


# --- bad input: a clear error or False, nothing written ----------------------------------


@pytest.mark.django_db
def test_send_signal_bad_input_writes_nothing():
    eid = waiting_execution(choices=["approve", "reject"])
    before = row(eid).run_at
    assert conductor.send_signal(uuid.uuid4(), "decision") is False  # unknown
    assert conductor.send_signal("not-an-id", "decision") is False
    done = conductor.invoke("echo")
    drain()
    assert conductor.send_signal(done, "decision") is False  # finished
    for name in ("", None, 7, "x" * 201):
        with pytest.raises(ValueError, match="signal name"):
            conductor.send_signal(eid, name)
    with pytest.raises(TypeError, match="not JSON-serializable: object"):
        conductor.send_signal(eid, "decision", object())
    with pytest.raises(TypeError, match="not JSON-serializable"):
        conductor.send_signal(eid, "decision", float("nan"))
    with pytest.raises(TypeError, match="sent_by"):
        conductor.send_signal(eid, "decision", "approve", sent_by=3)
    with pytest.raises(ValueError, match=r"payload 'maybe' is not one of the choices"):
        conductor.send_signal(eid, "decision", "maybe")
    assert not Signal.objects.exists()
    assert row(eid).run_at == before  # not woken either
    assert conductor.send_signal(eid, "other-name", "maybe") is True  # no choices for it


@pytest.mark.django_db
def test_an_early_signal_outside_the_choices_is_not_consumed():
    eid = conductor.invoke("await-decision", {"key": "c", "choices": ["approve", "reject"]})
    conductor.send_signal(eid, "decision", "maybe")  # the choices are not known yet
    drain()
    assert row(eid).status == S.SUSPENDED
    conductor.send_signal(eid, "decision", "reject")
    drain()
    assert row(eid).result["decision"] == "reject"
    # One signal answers one wait: the unused one is discarded when the wait is decided.
    assert list(Signal.objects.filter(execution_id=eid).values_list("payload", flat=True)) \
        == ["reject"]


@pytest.mark.django_db
@pytest.mark.parametrize("kwargs, error, match", [
    ({"name": ""}, ValueError, "signal name"),
    ({"name": 3}, ValueError, "signal name"),
    ({"choices": "approve"}, ValueError, "non-empty list of short strings"),
    ({"choices": []}, ValueError, "non-empty list"),
    ({"choices": ["ok", 2]}, ValueError, "every choice"),
    ({"choices": ["x" * 101]}, ValueError, "every choice"),
    ({"choices": ["a", "a"]}, ValueError, "distinct"),
    ({"choices": [str(n) for n in range(21)]}, ValueError, "at most 20"),
    ({"timeout": -1}, ValueError, "timeout must not be negative"),
    ({"timeout": "soon"}, TypeError, "timeout must be seconds"),
])
def test_wait_for_signal_bad_input_writes_nothing(kwargs, error, match):
    ctx, eid = running_context()
    with pytest.raises(error, match=match):
        ctx.wait_for_signal(**{"name": "decision", **kwargs})
    assert row(eid).waiting_for is None
    assert not Step.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db
def test_a_step_name_of_another_kind_is_refused():
    ctx, _ = running_context()
    ctx.step("decision", lambda: 1)
    with pytest.raises(ValueError, match="already used"):
        ctx.wait_for_signal("decision")


@pytest.mark.django_db
def test_a_lost_lease_stops_the_wait_writing_nothing():
    ctx, eid = running_context()
    Execution.objects.filter(pk=eid).update(lease=ctx.lease + 1)  # recovered and re-claimed
    with pytest.raises(BaseException, match=eid):
        ctx.wait_for_signal("decision")
    assert ctx.signal.reason == "lost"
    assert row(eid).waiting_for is None


# --- progress ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_progress_is_throttled_and_the_last_value_kept():
    eid = conductor.invoke("count-with-progress", {"n": 200})
    with CaptureQueriesContext(connection) as queries:
        drain()
    assert row(eid).progress == {"done": 200, "total": 200, "message": "item 200"}
    writes = [q for q in queries.captured_queries
              if q["sql"].startswith("UPDATE")
              and connection.ops.quote_name("progress") in q["sql"]]
    assert 2 <= len(writes) <= 5, len(writes)  # the first, maybe one more, the last
    assert conductor.get(eid).progress["done"] == 200


@pytest.mark.django_db
def test_progress_is_kept_while_suspended_and_after_the_end():
    eid = waiting_execution()
    assert row(eid).progress == {"done": 0, "total": 2, "message": "waiting for a decision"}
    conductor.send_signal(eid, "decision", "x")
    drain()
    assert row(eid).progress == {"done": 2, "total": 2, "message": "decided"}


@pytest.mark.django_db
@pytest.mark.parametrize("args, error", [
    (("1",), TypeError), ((True,), TypeError), ((-1,), ValueError), ((float("inf"),), ValueError),
    ((1, "2"), TypeError), ((1, -2), ValueError), ((1, 2, 3), TypeError),
])
def test_progress_bad_input(args, error):
    ctx, eid = running_context()
    with pytest.raises(error, match="progress"):
        ctx.progress(*args)
    assert row(eid).progress is None


@pytest.mark.django_db
def test_progress_is_fenced_by_the_lease():
    ctx, eid = running_context()
    ctx.progress(1, 10)
    assert row(eid).progress == {"done": 1, "total": 10, "message": ""}
    Execution.objects.filter(pk=eid).update(lease=ctx.lease + 1)
    ctx._progress._last = 0  # due again
    with pytest.raises(BaseException, match=eid):
        ctx.progress(2, 10)
    assert ctx.signal.reason == "lost"
    assert row(eid).progress["done"] == 1
    ctx.flush_progress()  # at the end of the attempt: never raises


# --- retention ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_signals_go_with_their_execution(settings):
    eid = waiting_execution()
    assert conductor.send_signal(eid, "decision", "x") is True
    assert conductor.send_signal(eid, "other", "y") is True  # a signal nobody waits for
    drain()
    assert Signal.objects.filter(execution_id=eid).count() == 2
    Execution.objects.filter(pk=eid).update(finished_at=timezone.now() - timedelta(days=30))
    settings.CONDUCTOR = {**settings.CONDUCTOR, "RETENTION": {"completed": timedelta(days=7)}}
    assert cleanup().total == 1
    assert not Signal.objects.exists() and not Step.objects.exists()


# --- the admin -------------------------------------------------------------------------


def staff(*perms: str, csrf: bool = False) -> tuple[Client, User]:
    user = User.objects.create_user(f"u{uuid.uuid4().hex[:8]}", password="pw", is_staff=True)
    for codename in ("view_execution", *perms):
        user.user_permissions.add(Permission.objects.get(
            codename=codename, content_type__app_label="conductor_django"))
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client, user


def page(eid: str) -> str:
    return reverse("admin:conductor_django_execution_change", args=[eid])


def signal_url(eid: str) -> str:
    return reverse("admin:conductor_django_execution_signal", args=[eid])


@pytest.mark.django_db
def test_the_page_shows_the_wait_and_one_button_per_choice():
    eid = waiting_execution(timeout=3600, choices=["approve", "reject"])
    client, _ = staff("signal_execution")
    html = client.get(page(eid)).content.decode()
    assert 'id="cdj-waiting-name">decision</code>' in html
    assert 'id="cdj-waiting-until"' in html
    assert html.count('class="cdj-signal-choice"') == 2
    assert 'data-choice="approve"' in html and 'data-choice="reject"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert '<progress class="cdj-progress" value="0" max="2">' in html
    # Without the permission: the wait is shown, the form is not.
    viewer, _ = staff()
    html = viewer.get(page(eid)).content.decode()
    assert 'id="cdj-waiting-name">decision</code>' in html
    assert 'id="cdj-signal-form"' not in html


@pytest.mark.django_db
def test_a_choice_sent_from_the_admin_records_the_user_and_finishes_the_execution():
    eid = waiting_execution(choices=["approve", "reject"])
    client, user = staff("signal_execution")
    response = client.post(signal_url(eid), {"name": "decision", "choice": "approve"},
                           follow=True)
    assert [str(m) for m in response.context["messages"]] == ["Signal 'decision' sent: \"approve\""]
    signal = Signal.objects.get(execution_id=eid)
    assert signal.sent_by == user.username and signal.payload == "approve"
    drain()
    assert row(eid).result == {"decision": "approve", "attempt": 1}
    html = client.get(page(eid)).content.decode()
    assert "Signals received" in html and user.username in html
    assert 'id="cdj-waiting"' not in html


@pytest.mark.django_db
def test_the_json_field_sends_any_payload_and_refuses_what_is_not_json():
    eid = waiting_execution()
    client, _ = staff("signal_execution")
    html = client.get(page(eid)).content.decode()
    assert 'id="id_signal_payload"' in html and "cdj-signal-choice" not in html
    response = client.post(signal_url(eid), {"name": "decision", "payload": "{oops"},
                           follow=True)
    assert "Not sent: the payload is not JSON" in str(list(response.context["messages"])[0])
    assert not Signal.objects.exists()
    client.post(signal_url(eid), {"name": "decision", "payload": '{"amount": 12}'})
    assert Signal.objects.get().payload == {"amount": 12}


@pytest.mark.django_db
def test_sending_from_the_admin_needs_the_permission_post_and_csrf():
    eid = waiting_execution(choices=["approve", "reject"])
    viewer, _ = staff()
    assert viewer.post(signal_url(eid), {"name": "decision", "choice": "approve"}
                       ).status_code == 403
    allowed, _ = staff("signal_execution")
    assert allowed.get(signal_url(eid)).status_code == 405
    strict, _ = staff("signal_execution", csrf=True)
    assert strict.post(signal_url(eid), {"name": "decision", "choice": "approve"}
                       ).status_code == 403
    response = allowed.post(signal_url(eid), {"name": "decision", "choice": "maybe"},
                            follow=True)
    assert "is not one of the choices" in str(list(response.context["messages"])[0])
    assert allowed.post(signal_url(uuid.uuid4()), {"name": "decision"}).status_code == 404
    assert not Signal.objects.exists()
    assert row(eid).status == S.SUSPENDED


@pytest.mark.django_db
def test_the_list_filter_column_and_progress_bar():
    waiting = waiting_execution(timeout=60)
    done = conductor.invoke("count-with-progress", {"n": 4})
    drain()
    client, _ = staff()
    url = reverse("admin:conductor_django_execution_changelist")
    html = client.get(url).content.decode()
    assert "waiting for a signal" in html.lower()
    assert "signal <code>decision</code> until " in html
    assert '<progress class="cdj-progress" value="4" max="4">' in html
    filtered = client.get(url, {"waiting_for_signal": "yes"})
    shown = {str(e.pk) for e in filtered.context["cl"].result_list}
    assert shown == {waiting}
    assert done not in shown


@pytest.mark.django_db
def test_nothing_of_a_signal_or_progress_is_rendered_unescaped():
    xss = "<script>alert('x')</script>"
    eid = conductor.invoke("await-decision", {"key": "x", "choices": [xss]})
    drain()
    Execution.objects.filter(pk=eid).update(progress={"done": 1, "total": 2, "message": xss})
    conductor.send_signal(eid, "other", {"v": xss}, sent_by=xss)
    client, _ = staff("signal_execution")
    for url in (page(eid), reverse("admin:conductor_django_execution_changelist")):
        assert xss not in client.get(url).content.decode()
    assert json.dumps(xss)  # the payload itself is stored as sent


# --- the example project's approve-refund --------------------------------------------------


@pytest.fixture
def shop_tasks():
    import importlib
    import sys

    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "example_project"))
    try:
        return importlib.import_module("shop.tasks")
    finally:
        sys.path.remove(str(ROOT / "example_project"))


@pytest.mark.django_db
@pytest.mark.parametrize("decision, refunded", [("approve", True), ("reject", False)])
def test_example_approve_refund(shop_tasks, decision, refunded):
    eid = conductor.invoke("approve-refund", {"order": "A-7", "amount": "30.00"})
    drain()
    ex = row(eid)
    assert ex.status == S.SUSPENDED
    assert ex.waiting_for["choices"] == ["approve", "reject"]
    until = datetime.fromisoformat(ex.waiting_for["until"])
    assert timedelta(days=3) - timedelta(minutes=1) < until - timezone.now() <= timedelta(days=3)
    assert ex.progress["done"] == 1 and ex.progress["message"].startswith("waiting for")
    assert conductor.send_signal(eid, "approval", decision, sent_by="manager")
    drain()
    ex.refresh_from_db()
    assert ex.status == S.COMPLETED and ex.result["refunded"] is refunded
    assert ex.progress["done"] == 4
    assert ("refund" in {s.name for s in ex.steps.all()}) is refunded


@pytest.mark.django_db
def test_example_approve_refund_expires_into_a_rejection(shop_tasks):
    eid = conductor.invoke("approve-refund", {"order": "A-8", "amount": "5.00"})
    drain()
    past = (timezone.now() - timedelta(seconds=1)).isoformat()
    Execution.objects.filter(pk=eid).update(run_at=timezone.now(),
                                            waiting_for={**row(eid).waiting_for, "until": past})
    drain()
    assert row(eid).result == {"order": "A-8", "refunded": False, "decision": "expired"}
