"""``ctx.sleep`` and ``ctx.invoke``: in-process logic, then real worker subprocesses."""

from __future__ import annotations

import signal
import uuid
from datetime import datetime

import pytest
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution, Step
from conductor_django.testing import drain
from tests.conftest import poll
from tests.testapp.models import Mark

S = Execution.Status


def status(eid: str) -> str:
    return Execution.objects.get(pk=eid).status


def child_of(eid: str) -> Execution | None:
    return Execution.objects.filter(parent_id=eid).first()


# --- in-process (drain) -----------------------------------------------------------------


@pytest.mark.django_db
def test_invoke_runs_child_once_and_returns_its_result():
    eid = conductor.invoke("parent", {"key": "p", "child_task": "echo", "child_payload": [1]})
    drain()
    parent = Execution.objects.get(pk=eid)
    assert parent.status == S.COMPLETED, parent.last_error
    children = list(Execution.objects.filter(parent_id=eid))
    assert len(children) == 1
    assert parent.result == {"child": children[0].result, "attempt": 1}
    assert children[0].result["payload"] == [1]
    assert parent.attempts == 1
    assert Mark.count("p:before") == 1 and Mark.count("p:after") == 1
    step = Step.objects.get(execution_id=eid, name="child")
    assert step.result["child_id"] == str(children[0].pk)


@pytest.mark.django_db
def test_failed_child_fails_the_parent_at_once():
    eid = conductor.invoke("parent", {"key": "f", "child_task": "always-fails"})
    drain()
    parent = Execution.objects.get(pk=eid)
    child = child_of(eid)
    assert child.status == S.FAILED and child.attempts == 2
    assert parent.status == S.FAILED
    assert parent.last_error == "Child execution failed: ValueError: boom"
    assert parent.attempts == 1  # not retried: the memoized child would fail it again
    assert Mark.count("f:after") == 0


@pytest.mark.django_db
def test_invoke_bad_input_fails_the_parent_and_creates_nothing():
    eid = conductor.invoke("parent", {"key": "b", "child_task": "no-such-task"})
    drain()
    parent = Execution.objects.get(pk=eid)
    assert parent.status == S.FAILED
    assert "No task named 'no-such-task'" in parent.last_error
    assert not Execution.objects.filter(parent_id=eid).exists()
    assert not Step.objects.filter(execution_id=eid, name="child").exists()


@pytest.mark.django_db
def test_sleep_suspends_without_a_new_attempt():
    eid = conductor.invoke("nap", {"key": "s", "seconds": 3600})
    drain()
    row = Execution.objects.get(pk=eid)
    assert row.status == S.SUSPENDED
    assert row.locked_by is None and row.resume and row.attempts == 1
    until = datetime.fromisoformat(Step.objects.get(execution_id=eid, name="nap")
                                   .result["sleep_until"])
    assert row.run_at == until
    assert Mark.count("s:before") == 1 and Mark.count("s:after") == 0
    # Due now: resumes, skips "before", is still attempt 1.
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())
    Step.objects.filter(execution_id=eid, name="nap").update(
        result={"sleep_until": timezone.now().isoformat()})
    drain()
    row.refresh_from_db()
    assert row.status == S.COMPLETED, row.last_error
    assert row.result == {"attempt": 1} and row.attempts == 1
    assert Mark.count("s:before") == 1 and Mark.count("s:after") == 1


@pytest.mark.django_db
def test_sleep_woken_early_suspends_again():
    eid = conductor.invoke("nap", {"key": "e", "seconds": 3600})
    drain()
    until = Execution.objects.get(pk=eid).run_at
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())  # a stray wake-up
    drain()
    row = Execution.objects.get(pk=eid)
    assert row.status == S.SUSPENDED and row.run_at == until and row.attempts == 1
    assert Mark.count("e:after") == 0


@pytest.mark.django_db
@pytest.mark.parametrize("bad, error", [(-1, ValueError), ("soon", TypeError)])
def test_sleep_rejects_bad_durations(bad, error):
    from conductor_django.runtime import Runtime
    from conductor_django.runtime.context import Context

    eid = conductor.invoke("echo")
    ctx = Context(execution_id=eid, task_name="echo", queue="default", attempt=1,
                  runtime=Runtime(worker_id=uuid.uuid4(), inline=True))
    with pytest.raises(error, match="sleep duration"):
        ctx.sleep("x", bad)
    with pytest.raises(ValueError, match="non-empty str"):
        ctx.sleep("", 1)
    assert not Step.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db
def test_step_name_of_another_kind_is_refused():
    from conductor_django.runtime import Runtime
    from conductor_django.runtime.context import Context

    eid = conductor.invoke("echo")
    wid = uuid.uuid4()
    [claimed] = Execution.objects.claim(wid, None, 1, "default")  # steps are written under a lease
    ctx = Context(execution_id=eid, task_name="echo", queue="default", attempt=1,
                  runtime=Runtime(worker_id=wid, inline=True), lease=claimed.lease)
    ctx.step("same", lambda: 1)
    with pytest.raises(ValueError, match="already used"):
        ctx.sleep("same", 1)


# --- the wake-up races, on the queries themselves ----------------------------------------


def _running_parent_with_child() -> tuple[str, str, object, int]:
    wid = uuid.uuid4()
    parent_id = conductor.invoke("echo")
    claimed = Execution.objects.claim(wid, None, 1, "default")
    assert [c.id for c in claimed] == [parent_id]
    child = Execution.objects.create(task_name="echo", parent_id=parent_id,
                                     run_at=timezone.now() + timezone.timedelta(days=1))
    return parent_id, str(child.pk), wid, claimed[0].lease


@pytest.mark.django_db
def test_child_finishing_wakes_a_suspended_parent():
    parent_id, child_id, wid, lease = _running_parent_with_child()
    assert Execution.objects.release(parent_id, wid, lease, None, "default", status=S.SUSPENDED,
                           waiting_for=child_id) == 1
    row = Execution.objects.get(pk=parent_id)
    assert row.status == S.SUSPENDED and row.run_at is None
    assert conductor.cancel(child_id, "child stopped")
    row.refresh_from_db()
    assert row.status == S.SUSPENDED and row.run_at is not None
    assert row.run_at <= timezone.now()


@pytest.mark.django_db
def test_child_finishing_while_parent_still_runs_is_not_lost():
    parent_id, child_id, wid, lease = _running_parent_with_child()
    # The child ends after the parent read it as unfinished, before the parent suspends.
    assert conductor.cancel(child_id)
    Execution.objects.release(parent_id, wid, lease, None, "default", status=S.SUSPENDED,
                    waiting_for=child_id)
    row = Execution.objects.get(pk=parent_id)
    assert row.status == S.SUSPENDED
    assert row.run_at is not None and row.run_at <= timezone.now()


@pytest.mark.django_db
def test_woken_marker_alone_makes_the_suspend_runnable():
    parent_id, child_id, wid, lease = _running_parent_with_child()
    other = Execution.objects.create(task_name="echo", parent_id=parent_id)
    # An earlier child woke the running parent; the awaited child is still unfinished.
    assert Execution.objects.wake_parents(Execution.objects.filter(pk=other.pk), "default") == 1
    Execution.objects.release(parent_id, wid, lease, None, "default", status=S.SUSPENDED,
                    waiting_for=child_id)
    row = Execution.objects.get(pk=parent_id)
    assert row.run_at is not None and row.run_at <= timezone.now()


@pytest.mark.django_db
def test_unfinished_child_leaves_parent_asleep_until_deadline():
    parent_id, child_id, wid, lease = _running_parent_with_child()
    deadline = timezone.now() + timezone.timedelta(hours=1)
    Execution.objects.release(parent_id, wid, lease, deadline, "default", status=S.SUSPENDED,
                    waiting_for=child_id)
    assert Execution.objects.get(pk=parent_id).run_at == deadline


# --- real workers ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sleep_frees_the_slot_and_resumes_on_another_worker(start_worker):
    eid = conductor.invoke("nap", {"key": "w", "seconds": 2})
    first = start_worker("--concurrency", "1")
    poll(lambda: status(eid) == S.SUSPENDED, message="the sleep to suspend")
    row = Execution.objects.get(pk=eid)
    assert row.locked_by is None and row.attempts == 1
    # The only slot is free while it sleeps: another execution runs meanwhile.
    other = conductor.invoke("echo", {"n": 1})
    assert conductor.wait(other, timeout=20)["payload"] == {"n": 1}
    assert status(eid) == S.SUSPENDED
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    start_worker("--concurrency", "1")
    assert conductor.wait(eid, timeout=30) == {"attempt": 1}
    row.refresh_from_db()
    assert row.attempts == 1
    assert Mark.count("w:before") == 1 and Mark.count("w:after") == 1
    until = datetime.fromisoformat(Step.objects.get(execution_id=eid, name="nap")
                                   .result["sleep_until"])
    assert Mark.objects.get(key="w:after").created >= until


@pytest.mark.django_db(transaction=True)
def test_parent_suspends_until_child_finishes(start_worker):
    eid = conductor.invoke("parent", {"key": "c", "child_task": "sleepy",
                                      "child_payload": {"key": "kid", "seconds": 3}})
    start_worker("--concurrency", "2")
    poll(lambda: Mark.count("kid:started"), message="the child to start")
    # The child can start before the parent's suspend is written: wait for it, while
    # the child still runs.
    poll(lambda: Execution.objects.filter(pk=eid, status=S.SUSPENDED, locked_by=None).exists(),
         timeout=10, message="the parent to suspend, holding no worker")
    assert Mark.count("kid:done") == 0  # observed while the child was running
    result = conductor.wait(eid, timeout=30)
    assert result == {"child": "slept", "attempt": 1}
    assert Execution.objects.filter(parent_id=eid).count() == 1
    assert Mark.count("kid:started") == 1 and Mark.count("c:before") == 1
    assert Execution.objects.get(pk=eid).attempts == 1


@pytest.mark.django_db(transaction=True)
def test_failed_child_raises_child_execution_failed(start_worker):
    eid = conductor.invoke("parent", {"key": "cf", "child_task": "always-fails"})
    start_worker()
    with pytest.raises(conductor.ExecutionFailed,
                       match="^Child execution failed: ValueError: boom$"):
        conductor.wait(eid, timeout=30)
    assert child_of(eid).status == S.FAILED
    assert Mark.count("cf:after") == 0


@pytest.mark.django_db(transaction=True)
def test_invoke_timeout_raises_in_parent_while_child_keeps_running(start_worker):
    eid = conductor.invoke("parent", {"key": "t", "child_task": "sleepy", "catch": True,
                                      "timeout": 0.5,
                                      "child_payload": {"key": "slow", "seconds": 3}})
    start_worker("--concurrency", "2")
    result = conductor.wait(eid, timeout=30)
    assert "did not finish by its deadline" in result["child"]["timed_out"]
    child = child_of(eid)
    assert child.status in (S.RUNNING, S.PENDING)  # still going
    assert conductor.wait(child.pk, timeout=30) == "slept"
    assert Mark.count("slow:done") == 1


@pytest.mark.django_db(transaction=True)
def test_uncaught_invoke_timeout_fails_the_parent(start_worker):
    eid = conductor.invoke("parent", {"key": "u", "child_task": "wait-for-signal",
                                      "timeout": 0.3,
                                      "child_payload": {"key": "w8", "seconds": 30}})
    start_worker("--concurrency", "2")
    with pytest.raises(conductor.ExecutionFailed, match="did not finish by its deadline"):
        conductor.wait(eid, timeout=30)
    assert Execution.objects.get(pk=eid).attempts == 2
    assert Execution.objects.filter(parent_id=eid).count() == 1  # created once
    child = child_of(eid)
    assert child.status == S.RUNNING
    assert conductor.cancel(child.pk)


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_waiting_parent_cancels_its_child(start_worker):
    eid = conductor.invoke("parent", {"key": "x", "child_task": "loop-until-cancelled",
                                      "child_payload": {"key": "loop"}})
    start_worker("--concurrency", "2")
    poll(lambda: Mark.count("loop:started"), message="the child to start")
    poll(lambda: status(eid) == S.SUSPENDED, message="the parent to suspend")
    assert conductor.cancel(eid, "stop the family")
    parent = Execution.objects.get(pk=eid)
    assert parent.status == S.FAILED and parent.last_error == "stop the family"
    child = child_of(eid)
    poll(lambda: status(child.pk) == S.CANCELLED, message="the child to end cancelled")
    child.refresh_from_db()
    assert child.last_error == "stop the family"
    assert Execution.objects.get(pk=eid).status == S.FAILED  # the child's end changed nothing


@pytest.mark.django_db(transaction=True)
def test_cancelled_child_wakes_parent_with_child_execution_failed(start_worker):
    eid = conductor.invoke("parent", {"key": "y", "child_task": "loop-until-cancelled",
                                      "child_payload": {"key": "loop2"}})
    start_worker("--concurrency", "2")
    poll(lambda: Mark.count("loop2:started"), message="the child to start")
    poll(lambda: status(eid) == S.SUSPENDED, message="the parent to suspend")
    assert conductor.cancel(child_of(eid).pk, "child not needed")
    with pytest.raises(conductor.ExecutionFailed,
                       match="^Child execution failed: child not needed$"):
        conductor.wait(eid, timeout=30)
    assert child_of(eid).status == S.CANCELLED


# --- the example project's walkthrough (README "Durable execution") ------------------------


@pytest.mark.django_db
def test_example_fulfil_order_walkthrough():
    import importlib
    import sys

    from tests.conftest import ROOT

    sys.path.insert(0, str(ROOT / "example_project"))
    try:
        importlib.import_module("shop.tasks")
    finally:
        sys.path.remove(str(ROOT / "example_project"))
    eid = conductor.invoke("fulfil-order", {"order": 7, "cooling_off": 3600})
    drain()  # parent suspends on the child, the child runs, the parent resumes and sleeps
    row = Execution.objects.get(pk=eid)
    assert row.status == S.SUSPENDED, row.last_error
    assert [s.name for s in row.steps.all()] == ["reserve-stock", "charge", "cooling-off"]
    assert child_of(eid).result == "ch_7"
    Execution.objects.filter(pk=eid).update(run_at=timezone.now())
    Step.objects.filter(execution_id=eid, name="cooling-off").update(
        result={"sleep_until": timezone.now().isoformat()})
    drain()
    row.refresh_from_db()
    assert row.status == S.COMPLETED and row.attempts == 1
    assert row.result == {"order": 7, "charge": "ch_7", "tracking": "track-7"}
    assert Execution.objects.filter(parent_id=eid).count() == 1


@pytest.mark.django_db
def test_child_ended_by_crash_recovery_wakes_its_parent():
    parent_id, child_id, wid, lease = _running_parent_with_child()
    Execution.objects.release(parent_id, wid, lease, None, "default", status=S.SUSPENDED,
                    waiting_for=child_id)
    assert Execution.objects.get(pk=parent_id).run_at is None
    # The child's worker died during its last attempt; nothing is registered for it.
    long_ago = timezone.now() - timezone.timedelta(minutes=5)
    Execution.objects.filter(pk=child_id).update(
        status=S.RUNNING, locked_by=uuid.uuid4(), locked_at=long_ago,
        attempts=3, max_attempts=3)
    assert Execution.objects.recover(30, "default") == 1
    assert Execution.objects.get(pk=child_id).status == S.FAILED
    parent = Execution.objects.get(pk=parent_id)
    assert parent.status == S.SUSPENDED and parent.run_at <= timezone.now()
