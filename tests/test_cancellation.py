"""Cancellation, exactly as SPEC §5, with real ``conductor_worker`` subprocesses."""

import pytest

import conductor_django as conductor
from conductor_django import Cancelled
from conductor_django.models import Execution, Step
from conductor_django.testing import drain
from tests.conftest import poll
from tests.testapp.models import Mark

REASON = "Cancelled by user"


def started(key):
    return lambda: Mark.count(f"{key}:started") > 0


def status_is(eid, *statuses):
    return lambda: Execution.objects.get(pk=eid).status in statuses


# --- pending and suspended: fail at once, never run ---------------------------------


@pytest.mark.django_db
def test_cancel_pending_fails_at_once_and_never_runs():
    eid = conductor.invoke("wait-for-signal", {"key": "p"})
    assert conductor.cancel(eid) is True
    row = conductor.get(eid)
    assert row.status == "failed"
    assert row.last_error == REASON
    assert row.cancelled is False
    assert row.finished_at is not None
    assert drain() == 0
    assert Mark.count("p:started") == 0
    assert conductor.cancel(eid) is False  # already finished


@pytest.mark.django_db
def test_cancel_with_reason_and_model_method():
    a = conductor.invoke("echo", delay=60)
    assert conductor.cancel(a, reason="Not needed") is True
    assert conductor.get(a).last_error == "Not needed"
    b = Execution.objects.get(pk=conductor.invoke("echo"))
    assert b.cancel() is True
    assert (b.status, b.last_error) == ("failed", REASON)  # refreshed in place
    assert b.cancel("again") is False


@pytest.mark.django_db
def test_cancel_suspended_fails_it_and_cancels_its_waiting_child():
    parent = conductor.invoke("echo")
    child = conductor.invoke("echo")
    Execution.objects.filter(pk=parent).update(status="suspended", run_at=None, attempts=1)
    Execution.objects.filter(pk=child).update(parent_id=parent)
    assert conductor.cancel(parent, "stop all") is True
    p, c = conductor.get(parent), conductor.get(child)
    assert (p.status, p.last_error, p.cancelled) == ("failed", "stop all", False)
    assert (c.status, c.last_error) == ("failed", "stop all")


@pytest.mark.django_db
def test_cancel_finished_or_unknown_returns_false():
    eid = conductor.invoke("echo")
    drain()
    assert conductor.cancel(eid) is False
    assert conductor.get(eid).status == "completed"
    assert conductor.cancel("00000000-0000-0000-0000-000000000000") is False
    assert conductor.cancel("nonsense") is False


def test_cancelled_is_a_base_exception():
    assert issubclass(Cancelled, BaseException) and not issubclass(Cancelled, Exception)


# --- running: flag at once, signal, stop at the next boundary ------------------------


@pytest.mark.django_db(transaction=True)
def test_cancel_running_stops_at_next_step_and_ends_cancelled(start_worker):
    eid = conductor.invoke("loop-until-cancelled", {"key": "r"})
    worker = start_worker("--concurrency", "2")
    poll(started("r"), message="handler start")
    poll(lambda: Step.objects.filter(execution_id=eid).count() >= 2, message="a few steps")
    assert conductor.cancel(eid, "Stop now") is True
    row = conductor.get(eid)  # flagged at once, still running
    assert row.cancelled is True and row.last_error == "Stop now"
    poll(status_is(eid, "cancelled"), message="status cancelled")
    row.refresh_from_db()
    assert row.status == "cancelled"
    assert row.last_error == "Stop now"
    assert row.finished_at is not None and row.locked_by is None
    assert row.attempts == 1  # never retried
    steps = Step.objects.filter(execution_id=eid).count()
    assert Mark.count("r:started") == 1
    assert conductor.cancel(eid) is False
    # nothing more happens to it: no further steps, no retry
    assert Step.objects.filter(execution_id=eid).count() == steps
    assert worker.proc.poll() is None


@pytest.mark.django_db(transaction=True)
def test_signal_is_aborted_with_reason_and_checkpoint_raises(start_worker):
    eid = conductor.invoke("wait-for-signal", {"key": "s"})
    start_worker()
    poll(started("s"))
    assert conductor.cancel(eid) is True
    poll(lambda: Mark.count("s:aborted") == 1, timeout=10, message="signal seen")
    assert Mark.objects.get(key="s:aborted").value == "True:cancelled"
    poll(status_is(eid, "cancelled"))
    assert Mark.count("s:after-checkpoint") == 0
    assert conductor.get(eid).last_error == REASON


@pytest.mark.django_db(transaction=True)
def test_except_exception_does_not_swallow_cancelled(start_worker):
    eid = conductor.invoke("swallow-and-return", {"key": "w"})
    start_worker()
    poll(started("w"))
    conductor.cancel(eid)
    poll(status_is(eid, "cancelled", "completed", "failed"))
    row = conductor.get(eid)
    assert row.status == "cancelled"
    assert Mark.count("w:swallowed") == 0
    assert Mark.count("w:step-ran") == 0  # the step's function never ran
    assert not Step.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db(transaction=True)
def test_returning_after_cancel_stores_result_but_ends_cancelled(start_worker):
    eid = conductor.invoke("return-after-cancel", {"key": "ret"})
    start_worker()
    poll(started("ret"))
    conductor.cancel(eid, "Customer left")
    poll(status_is(eid, "cancelled", "completed"))
    row = conductor.get(eid)
    assert row.status == "cancelled"
    assert row.result == {"stopped": True}
    assert row.last_error == "Customer left"


@pytest.mark.django_db(transaction=True)
def test_raising_after_cancel_ends_cancelled_keeping_the_reason(start_worker):
    eid = conductor.invoke("raise-after-cancel", {"key": "raise"})
    start_worker()
    poll(started("raise"))
    conductor.cancel(eid, "Abort")
    poll(status_is(eid, "cancelled", "failed", "pending"))
    row = conductor.get(eid)
    assert (row.status, row.last_error, row.attempts) == ("cancelled", "Abort", 1)


@pytest.mark.django_db(transaction=True)
def test_second_cancel_of_running_returns_false_and_keeps_reason(start_worker):
    eid = conductor.invoke("wait-for-signal", {"key": "twice", "seconds": 30})
    start_worker("--shutdown-timeout", "5")
    poll(started("twice"))
    # Slow the handler's exit down is not needed: the flag is set atomically at once.
    assert conductor.cancel(eid, "first") is True
    assert conductor.cancel(eid, "second") is False
    assert conductor.get(eid).last_error == "first"
    poll(status_is(eid, "cancelled"))
    assert conductor.get(eid).last_error == "first"


@pytest.mark.django_db(transaction=True)
def test_cancel_a_pending_execution_while_a_worker_runs(start_worker):
    start_worker()
    later = conductor.invoke("wait-for-signal", {"key": "later"}, delay=2)
    assert conductor.cancel(later) is True
    done = conductor.invoke("echo", "ping")
    assert conductor.wait(done, timeout=20)["payload"] == "ping"
    assert conductor.get(later).status == "failed"
    assert Mark.count("later:started") == 0
