"""Pause and resume (SPEC 15.2) and limits changed live (SPEC 15.4): from code, in the
claim, in ``why_waiting``, in the scheduler and through real workers."""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

import conductor_django as conductor
from conductor_django import RateLimit, scheduler
from conductor_django.models import Control, Execution
from conductor_django.operations import PAUSE_REASON, limits
from conductor_django.state import controls
from tests.conftest import poll
from tests.testapp.models import Gauge, Mark

S = Execution.Status
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fresh_controls():
    controls.forget()
    yield
    controls.forget()


def claim(limit: int = 50, queues=None) -> list[Execution]:
    got = Execution.objects.claim(uuid.uuid4(), queues, limit, using="default")
    return list(Execution.objects.filter(pk__in=[c.id for c in got]))


# --- pause and resume from code ----------------------------------------------------------


def test_pause_and_resume_say_whether_the_state_changed():
    assert conductor.paused() == []
    assert conductor.pause(queue="ops", by="alice") is True
    assert conductor.pause(queue="ops") is False
    assert conductor.pause(task="ops-other", schedules="skip") is True
    seen = {(p.scope, p.name): p for p in conductor.paused()}
    assert set(seen) == {("queue", "ops"), ("task", "ops-other")}
    assert seen[("queue", "ops")].by == "alice"
    assert seen[("task", "ops-other")].schedules == "skip"
    assert seen[("queue", "ops")].since <= timezone.now()
    assert conductor.resume(queue="ops") is True
    assert conductor.resume(queue="ops") is False
    assert conductor.resume(task="ops-other") is True
    assert conductor.paused() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, TypeError, "exactly one of queue"),
        ({"queue": "ops", "task": "ops-work"}, TypeError, "exactly one of queue"),
        ({"queue": "no-such-queue"}, ValueError, "No queue named 'no-such-queue' is known"),
        ({"task": "ops-wrok"}, ValueError, "did you mean 'ops-work'"),
        ({"queue": ""}, ValueError, "queue must be a non-empty str"),
        ({"queue": "a\x00b"}, ValueError, "NUL"),
        ({"queue": 7}, ValueError, "queue must be"),
        ({"queue": "ops", "schedules": "drop"}, ValueError, "schedules must be 'queue'"),
        ({"queue": "ops", "cancel_running": "yes"}, TypeError, "cancel_running must be a bool"),
    ],
)
def test_bad_pause_is_refused_and_writes_nothing(kwargs, error, match):
    with pytest.raises(error, match=match):
        conductor.pause(**kwargs)
    assert not Control.objects.exists()


def test_a_queue_is_known_by_its_executions_and_a_task_by_its_executions():
    Execution.objects.create(task_name="gone-task", queue="legacy", run_at=timezone.now())
    assert conductor.pause(queue="legacy") is True
    assert conductor.pause(task="gone-task") is True


def test_paused_queue_and_task_are_not_claimed_and_invoke_still_accepts_work():
    conductor.pause(queue="ops")
    work = [conductor.invoke("ops-work", {"hold": 0}) for _ in range(3)]
    other = conductor.invoke("ops-other")
    assert [str(e.pk) for e in claim()] == [other]
    assert Execution.objects.filter(pk__in=work, status=S.PENDING).count() == 3
    assert Execution.objects.get(pk=other).status == S.RUNNING
    # a worker of the paused queue alone claims nothing
    assert claim(queues=["ops"]) == []
    conductor.pause(task="ops-other")
    again = conductor.invoke("ops-other")
    assert claim() == []
    conductor.resume(queue="ops")
    assert {str(e.pk) for e in claim()} == set(work)
    conductor.resume(task="ops-other")
    assert [str(e.pk) for e in claim()] == [again]


def test_pause_with_cancel_running_cancels_through_the_cancel_verb():
    running = conductor.invoke("ops-work")
    waiting = conductor.invoke("ops-work")
    Execution.objects.filter(pk=waiting).update(run_at=timezone.now() + timedelta(hours=1))
    assert [str(e.pk) for e in claim()] == [running]
    conductor.pause(queue="ops", cancel_running=True)
    row = Execution.objects.get(pk=running)
    assert row.cancelled and row.last_error == PAUSE_REASON
    assert Execution.objects.get(pk=waiting).status == S.PENDING  # waits, not cancelled


def test_why_waiting_says_paused_since():
    eid = conductor.invoke("ops-work")
    conductor.pause(task="ops-work")
    row = Execution.objects.get(pk=eid)
    reasons = Execution.objects.why_waiting(row)
    assert len(reasons) == 1 and reasons[0].startswith("task ops-work paused since ")
    conductor.pause(queue="ops")
    assert any(r.startswith("queue ops paused since ") for r in Execution.objects.why_waiting(row))
    conductor.resume(task="ops-work")
    conductor.resume(queue="ops")
    assert Execution.objects.why_waiting(row) == []


def _due_run(name: str) -> Execution:
    """The queued run of a fresh schedule, moved to a fire time that has just come."""
    conductor.schedule("ops-cron", name, cron="0 9 * * *", payload=name)
    run = Execution.objects.get(task_name="ops-cron", schedule_name=name,
                                status=S.PENDING)
    fire = timezone.now() - timedelta(seconds=1)
    Execution.objects.filter(pk=run.pk).update(scheduled_for=fire, run_at=fire)
    from conductor_django.models import Schedule

    Schedule.objects.filter(task_name="ops-cron", name=name).update(next_run_at=fire)
    return run


def test_schedules_skip_records_and_skips_fire_times_that_come_due():
    conductor.pause(task="ops-cron", schedules="skip")
    Control.objects.filter(name="ops-cron").update(
        paused_at=timezone.now() - timedelta(minutes=1))
    controls.forget()
    run = _due_run("daily")
    scheduler.tick()
    row = Execution.objects.get(pk=run.pk)
    assert row.status in Execution.FINAL and "Fire time skipped: task ops-cron is paused" in (
        row.last_error or "")
    assert conductor.paused()[0].skipped_fire_times == 1
    nxt = Execution.objects.get(task_name="ops-cron", schedule_name="daily", status=S.PENDING)
    assert nxt.scheduled_for > row.scheduled_for  # the next fire time is queued


def test_schedules_queue_lets_the_fire_time_wait_for_the_resume():
    conductor.pause(queue="ops-cron")  # schedules="queue"
    run = _due_run("hourly")
    scheduler.tick()
    assert Execution.objects.get(pk=run.pk).status == S.PENDING
    assert claim(queues=["ops-cron"]) == []
    conductor.resume(queue="ops-cron")
    assert [e.pk for e in claim(queues=["ops-cron"])] == [run.pk]


# --- limits changed live from code -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"concurrency": 0}, ValueError, "from 1 to 1,000,000"),
        ({"concurrency": -3}, ValueError, "from 1 to 1,000,000"),
        ({"concurrency": 10**9}, ValueError, "from 1 to 1,000,000"),
        ({"concurrency": math.nan}, TypeError, "whole number"),
        ({"concurrency": 2.5}, TypeError, "whole number"),
        ({"concurrency": True}, TypeError, "whole number"),
        ({"concurrency": "many"}, TypeError, "whole number"),
        ({"key_concurrency": 0}, ValueError, "key_concurrency"),
        ({"rate_limit": "ten per minute"}, ValueError, "is not a rate such as"),
        ({"rate_limit": "10/fortnight"}, ValueError, "is not a rate such as"),
        ({"rate_limit": "0/m"}, ValueError, "count must be an int >= 1"),
        ({"rate_limit": "10/0s"}, ValueError, "per must be a positive"),
        ({"rate_limit": "5000000/m"}, ValueError, "at most 1,000,000"),
        ({"rate_limit": "5/9999d"}, ValueError, "window must be at most"),
        ({"rate_limit": (3, 60)}, TypeError, "rate_limit must be a RateLimit"),
    ],
)
def test_bad_limits_are_refused_and_write_nothing(kwargs, error, match):
    with pytest.raises(error, match=match):
        conductor.set_limits("ops-limited", **kwargs)
    assert not Control.objects.exists()


def test_limits_of_unknown_or_batch_tasks_are_refused():
    with pytest.raises(conductor.TaskNotFound):
        conductor.set_limits("ops-limitd", concurrency=2)
    with pytest.raises(ValueError, match="is a batch task"):
        conductor.set_limits("batched", concurrency=2)
    assert not Control.objects.exists()


def test_set_limits_overrides_and_none_gives_back_the_codes_value():
    now = conductor.set_limits("ops-limited", concurrency=1, rate_limit="10/m", by="bob")
    assert (now.concurrency, now.rate_limit) == (1, RateLimit(10, 60))
    seen = limits("ops-limited")
    assert seen.code.concurrency == 4 and seen.override.concurrency == 1
    assert seen.changed_by == "bob" and seen.changed_at is not None
    # an argument not given is kept; None is the code's value
    assert conductor.set_limits("ops-limited", key_concurrency=2).concurrency == 1
    back = conductor.set_limits("ops-limited", concurrency=None, rate_limit=None,
                                key_concurrency=None)
    assert (back.concurrency, back.key_concurrency, back.rate_limit) == (4, None, None)
    assert conductor.set_limits("ops-limited", rate_limit="5/30s per key").rate_limit == \
        RateLimit(5, 30, per_key=True)


def test_the_claim_honours_a_changed_concurrency():
    ids = [conductor.invoke("ops-limited") for _ in range(6)]
    conductor.set_limits("ops-limited", concurrency=2)
    assert len(claim()) == 2
    conductor.set_limits("ops-limited", concurrency=None)  # the code's 4
    assert len(claim()) == 2
    conductor.set_limits("ops-limited", concurrency=5)
    assert len(claim()) == 1
    assert Execution.objects.filter(pk__in=ids, status=S.RUNNING).count() == 5
    row = Execution.objects.filter(pk__in=ids, status=S.PENDING).get()
    assert Execution.objects.why_waiting(row) == ["task ops-limited at its limit 5/5"]


# --- real workers -------------------------------------------------------------------------


def _seen_by_workers() -> None:
    """Wait until every worker has re-read the controls (``refresh_seconds`` plus a claim)."""
    time.sleep(controls.refresh_seconds() + 1.0)


def test_pausing_a_queue_under_load_starts_nothing_new_and_loses_nothing(start_worker):
    ids = [conductor.invoke("ops-work", {"hold": 1.0}) for _ in range(60)]
    for _ in range(3):
        start_worker("--queue", "ops", "--queue", "ops-other", "--concurrency", "2")
    poll(lambda: Mark.count("ops:start") >= 6, 60, message="some executions started")
    conductor.pause(queue="ops")
    _seen_by_workers()
    poll(lambda: not Execution.objects.filter(pk__in=ids, status=S.RUNNING).exists(), 30,
         message="the running executions finished")
    started = Mark.count("ops:start")
    assert started < len(ids), "the pause came too late to show anything"
    other = conductor.invoke("ops-other")  # other queues go on
    poll(lambda: Execution.objects.get(pk=other).status == S.COMPLETED, 30,
         message="the other queue ran")
    assert Mark.count("ops:start") == started  # nothing new started while paused
    assert Execution.objects.filter(pk__in=ids, status=S.PENDING).count() == len(ids) - started
    conductor.resume(queue="ops")
    poll(lambda: Execution.objects.filter(pk__in=ids, status=S.COMPLETED).count() == len(ids),
         90, message="every execution completed after the resume")
    starts = Counter(Mark.objects.filter(key="ops:start").values_list("value", flat=True))
    dones = Counter(Mark.objects.filter(key="ops:done").values_list("value", flat=True))
    assert set(starts) == set(dones) == set(ids)
    assert set(starts.values()) == set(dones.values()) == {1}  # exactly once


def test_a_lowered_concurrency_is_honoured_live(start_worker):
    Gauge.objects.create(key="ops-limited")
    ids = [conductor.invoke("ops-limited", {"hold": 0.5}) for _ in range(100)]
    start_worker("--concurrency", "6")
    poll(lambda: Gauge.peak_of("ops-limited") >= 3, 60, message="the code's limit of 4 in use")
    conductor.set_limits("ops-limited", concurrency=1)
    _seen_by_workers()
    poll(lambda: Gauge.objects.get(key="ops-limited").current <= 1, 30,
         message="the earlier executions finished")
    Gauge.objects.filter(key="ops-limited").update(peak=1)
    done = Mark.count("ops-limited:done")
    poll(lambda: Mark.count("ops-limited:done") >= done + 3, 60,
         message="more executions ran under the new limit")
    assert Gauge.peak_of("ops-limited") == 1  # never more than one at once since
    conductor.set_limits("ops-limited", concurrency=None)
    poll(lambda: Execution.objects.filter(pk__in=ids, status=S.COMPLETED).count() == len(ids),
         90, message="every execution completed")
