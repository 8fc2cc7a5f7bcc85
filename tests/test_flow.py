"""Flow control: priority, queues, concurrency limits, windows, throttle, debounce, batches.

Limits that span workers are checked with real ``conductor_worker`` subprocesses; the
test tasks live in ``tests/testapp/flow_tasks.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

import conductor_django as conductor
from conductor_django import Batch
from conductor_django.definitions.registry import build_task
from conductor_django.definitions.window import Window
from conductor_django.exceptions import ExecutionFailed
from conductor_django.models import Execution, FlowSlot, Worker
from conductor_django.testing import drain
from tests.conftest import poll
from tests.testapp.models import Gauge, Mark

S = Execution.Status


def _noop(event, ctx):
    return None


def status(eid: str) -> str:
    return Execution.objects.get(pk=eid).status


def all_finished(ids) -> bool:
    return Execution.objects.filter(pk__in=ids, status__in=Execution.FINAL).count() == len(ids)


def tz_at_local_hour(hour: int) -> str:
    """An ``Etc/GMT`` zone whose local time is now ``hour`` o'clock (and some minutes)."""
    offset = (hour - timezone.now().astimezone(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


# --- task options ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"concurrency": 0}, ValueError, "concurrency of task 'bad' must be an int >= 1"),
        ({"concurrency": "2"}, ValueError, "concurrency"),
        ({"window": "22:00-06:00"}, ValueError, "must be a pair"),
        ({"window": ("22:00", "22:00")}, ValueError, "is empty"),
        ({"window": ("25:00", "06:00")}, ValueError, "window of task 'bad' start"),
        ({"window": ("22:00", "6")}, ValueError, "window of task 'bad' end"),
        ({"batch": 10}, TypeError, "must be a Batch"),
        ({"batch": Batch(3, 1), "concurrency": 2}, ValueError, "cannot be combined"),
    ],
)
def test_bad_flow_options_fail_at_definition(options, error, match):
    with pytest.raises(error, match=match):
        build_task(_noop, name="bad", **options)


def test_batch_validates_its_fields():
    with pytest.raises(ValueError, match="Batch size"):
        Batch(size=0)
    with pytest.raises(ValueError, match="Batch timeout must not be negative"):
        Batch(size=2, timeout=-1)
    assert Batch(size=2, timeout=timedelta(seconds=3)).timeout_seconds == 3.0


# --- windows (pure logic) ----------------------------------------------------------------


def test_window_inside_one_day_and_across_midnight():
    day = Window.parse(("09:00", "17:30"))
    assert day.contains(time(9, 0)) and day.contains(time(17, 29, 59))
    assert not day.contains(time(17, 30)) and not day.contains(time(8, 59))
    night = Window.parse(["22:00", "06:00"])
    assert night.crosses_midnight
    for inside in (time(22, 0), time(23, 59), time(0, 0), time(5, 59, 59)):
        assert night.contains(inside), inside
    for outside in (time(6, 0), time(12, 0), time(21, 59, 59)):
        assert not night.contains(outside), outside


@override_settings(TIME_ZONE="Europe/Paris")
def test_window_reads_time_zone():
    night = Window.parse(("22:00", "06:00"))
    paris = ZoneInfo("Europe/Paris")
    assert night.is_open(datetime(2026, 1, 15, 21, 30, tzinfo=UTC))  # 22:30 in Paris
    assert not night.is_open(datetime(2026, 1, 15, 20, 30, tzinfo=UTC))  # 21:30 in Paris
    assert night.is_open(datetime(2026, 1, 16, 4, 59, tzinfo=UTC))  # 05:59 next morning
    noon = datetime(2026, 1, 15, 11, 0, tzinfo=UTC)
    assert night.next_open(noon) == datetime(2026, 1, 15, 22, 0, tzinfo=paris)
    inside = datetime(2026, 1, 15, 23, 0, tzinfo=UTC)
    assert night.next_open(inside) == inside
    # The start falls into the spring-forward gap: it opens when the clock jumps.
    gap = Window.parse(("02:30", "04:00"))
    opened = gap.next_open(datetime(2026, 3, 29, 0, 0, tzinfo=UTC))
    assert opened == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


# --- throttle and debounce ---------------------------------------------------------------


@pytest.mark.django_db
def test_throttle_returns_the_existing_execution_within_the_period():
    first = conductor.invoke("echo", {"n": 1}, throttle=60)
    assert conductor.invoke("echo", {"n": 2}, throttle=60) == first
    assert drain() == 1
    # Finished, but the period is not over: still the same execution.
    assert conductor.invoke("echo", {"n": 3}, throttle=timedelta(minutes=1)) == first
    other_key = conductor.invoke("echo", {"n": 4}, throttle=60, dedupe_key="user-7")
    assert other_key != first
    assert conductor.invoke("echo", {"n": 5}, throttle=60, dedupe_key="user-7") == other_key
    assert Execution.objects.count() == 2
    # The period ends: the next invocation starts a new execution.
    FlowSlot.objects.filter(key="").update(until=timezone.now() - timedelta(seconds=1))
    later = conductor.invoke("echo", {"n": 6}, throttle=60)
    assert later not in (first, other_key)
    assert Execution.objects.get(pk=later).payload == {"n": 6}


@pytest.mark.django_db
def test_debounce_pushes_one_execution_and_keeps_the_last_payload():
    before = timezone.now()
    first = conductor.invoke("echo", {"n": 1}, debounce=30)
    row = Execution.objects.get(pk=first)
    assert row.run_at >= before + timedelta(seconds=30)
    pushed_from = row.run_at
    assert conductor.invoke("echo", {"n": 2}, debounce=30) == first
    assert conductor.invoke("echo", {"n": 3}, debounce=30) == first
    row.refresh_from_db()
    assert row.payload == {"n": 3}
    assert row.run_at > pushed_from
    assert Execution.objects.count() == 1
    assert drain() == 0  # not due yet
    # Once it started, a new call queues a new execution.
    Execution.objects.filter(pk=first).update(run_at=timezone.now())
    assert drain() == 1
    second = conductor.invoke("echo", {"n": 4}, debounce=30)
    assert second != first and Execution.objects.get(pk=second).payload == {"n": 4}
    # Keys are separate.
    keyed = conductor.invoke("echo", {"n": 5}, debounce=30, dedupe_key="k")
    assert keyed not in (first, second)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"throttle": 5, "debounce": 5}, "not both"),
        ({"debounce": 5, "delay": 1}, "do not pass run_at or delay"),
        ({"throttle": 0}, "throttle must be a positive"),
        ({"debounce": -1}, "debounce must not be negative"),
    ],
)
def test_bad_throttle_and_debounce_write_nothing(options, match):
    with pytest.raises(ValueError, match=match):
        conductor.invoke("echo", None, **options)
    with pytest.raises(TypeError, match="throttle must be seconds"):
        conductor.invoke("echo", None, throttle="5")
    assert Execution.objects.count() == 0 and FlowSlot.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_throttle_and_debounce_roll_back_with_the_callers_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        conductor.invoke("echo", 1, throttle=60)
        conductor.invoke("echo", 1, debounce=60)
        raise RuntimeError("rollback")
    assert Execution.objects.count() == 0 and FlowSlot.objects.count() == 0
    first = conductor.invoke("echo", 1, throttle=60)
    assert conductor.invoke("echo", 2, throttle=60) == first


@pytest.mark.django_db
def test_invoke_many_with_per_item_options_in_one_transaction():
    ids = conductor.invoke_many("echo", [
        {"payload": 1, "priority": 5, "queue": "q1"},
        {"payload": 2, "throttle": 60, "dedupe_key": "t"},
        {"payload": 3, "throttle": 60, "dedupe_key": "t"},
        {"payload": 4, "debounce": 60},
        {"payload": 5, "debounce": 60},
        {"payload": 6, "delay": 60},
    ])
    assert len(ids) == 6
    assert ids[1] == ids[2] and ids[3] == ids[4]
    assert len(set(ids)) == 4
    rows = {str(r.pk): r for r in Execution.objects.all()}
    assert (rows[ids[0]].priority, rows[ids[0]].queue) == (5, "q1")
    assert rows[ids[1]].payload == 2 and rows[ids[3]].payload == 5
    # A bad item writes none of them.
    with pytest.raises(ValueError, match="invoke_many item 1: pass throttle or debounce"):
        conductor.invoke_many("echo", [
            {"payload": 7, "throttle": 60, "dedupe_key": "new"},
            {"payload": 8, "throttle": 1, "debounce": 1},
        ])
    assert Execution.objects.count() == 4


@pytest.mark.django_db
def test_limited_task_drains_in_process():
    """The limited claim also works inside a caller's transaction (``testing.drain``)."""
    Gauge.objects.create(key="limited")
    ids = [conductor.invoke("limited", {"n": n, "hold": 0}) for n in range(3)]
    plain = conductor.invoke("echo", "plain")
    assert drain() == 4
    assert all(status(e) == S.COMPLETED for e in [*ids, plain])
    assert Gauge.peak_of("limited") == 1  # inline: one at a time


# --- batches (in process) ----------------------------------------------------------------


@pytest.mark.django_db
def test_batch_handler_gets_a_list_and_results_map_back():
    ids = [conductor.invoke("batched", n) for n in range(5)]
    assert drain() == 5
    for n, eid in enumerate(ids):
        row = Execution.objects.get(pk=eid)
        assert (row.status, row.result) == (S.COMPLETED, n * 2)
    groups = {m.value.split("|")[1] for m in Mark.objects.filter(key="batched")}
    assert sorted(len(g.split(",")) for g in groups) == [2, 3]  # size 3, then the rest


@pytest.mark.django_db
def test_batch_with_wrong_number_of_results_fails_every_item():
    ids = [conductor.invoke("batched-wrong", n) for n in range(3)]
    drain()
    for eid in ids:
        row = Execution.objects.get(pk=eid)
        assert row.status == S.FAILED
        assert row.last_error == ("Batch task 'batched-wrong' returned 1 results for 3 events; "
                                  "it must return one result per event, in order")
    with pytest.raises(ExecutionFailed, match="returned 1 results for 3 events"):
        conductor.wait(ids[0], timeout=1)


@pytest.mark.django_db
def test_batch_item_can_fail_alone():
    good, bad = conductor.invoke("batched-mixed", "ok"), conductor.invoke("batched-mixed", "bad")
    drain()
    assert Execution.objects.get(pk=good).result == "ok"
    row = Execution.objects.get(pk=bad)
    assert (row.status, row.last_error) == (S.FAILED, "odd one out")


@pytest.mark.django_db
def test_cancelled_pending_batch_item_never_runs():
    ids = [conductor.invoke("batched", n) for n in range(3)]
    assert conductor.cancel(ids[1]) is True
    drain()
    assert [status(i) for i in ids] == [S.COMPLETED, S.FAILED, S.COMPLETED]
    assert all(ids[1] not in m.value for m in Mark.objects.filter(key="batched"))


# --- with real workers -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_priority_then_run_at_with_one_worker(start_worker):
    base = timezone.now() - timedelta(minutes=5)
    plan = [(0, 3), (10, 2), (0, 1), (10, 5), (5, 4)]  # (priority, minutes after base)
    for n, (priority, minutes) in enumerate(plan):
        conductor.invoke("ordered", {"n": n}, priority=priority,
                         run_at=base + timedelta(minutes=minutes))
    start_worker("--concurrency", "1")
    poll(lambda: Mark.count("ordered") == 5, 30, message="all ordered tasks ran")
    order = [int(m.value) for m in Mark.objects.filter(key="ordered").order_by("id")]
    assert order == [1, 3, 4, 2, 0]


@pytest.mark.django_db(transaction=True)
def test_worker_serves_only_its_queues_and_invocations_override_the_queue(start_worker):
    on_other = conductor.invoke("echo", 1, queue="other")
    on_default = conductor.invoke("echo", 2)
    moved = conductor.invoke("on-other-queue", 3, queue="default")
    start_worker("--queue", "other", "--queue", "spare")
    poll(lambda: status(on_other) == S.COMPLETED, 30, message="echo on queue other")
    assert Execution.objects.get(pk=on_other).result["queue"] == "other"
    assert status(on_default) == S.PENDING and status(moved) == S.PENDING
    start_worker("--queue", "default")
    poll(lambda: all_finished([on_default, moved]), 30, message="default queue drained")
    assert Mark.objects.filter(key="other", value="3").exists()


@pytest.mark.django_db(transaction=True)
def test_concurrency_limit_holds_across_workers_without_blocking_the_queue(start_worker):
    Gauge.objects.create(key="limited")
    ids = [conductor.invoke("limited", {"n": n, "hold": 1.0}, priority=5) for n in range(8)]
    workers = [start_worker("--concurrency", "4") for _ in range(2)]
    # While limited executions wait for a slot, others of the same queue still run.
    poll(lambda: Gauge.peak_of("limited") >= 1, 30, message="a limited execution started")
    other = conductor.invoke("echo", "not blocked")
    poll(lambda: status(other) == S.COMPLETED, 30, message="echo ran past the limited ones")
    assert Execution.objects.filter(pk__in=ids).exclude(status__in=Execution.FINAL).exists()
    poll(lambda: all_finished(ids), 60, message="all limited executions finished")
    assert Execution.objects.filter(pk__in=ids, status=S.COMPLETED).count() == 8
    assert Gauge.peak_of("limited") == 2  # reached, never exceeded
    pids = set(Execution.objects.filter(pk__in=ids).values_list("result", flat=True))
    assert pids <= {w.pid for w in workers}


@pytest.mark.django_db(transaction=True)
def test_nothing_starts_outside_the_window(start_worker):
    night = conductor.invoke("night-job", "first", priority=10)
    day = conductor.invoke("echo", "day")
    start_worker("--concurrency", "1", env={"CONDUCTOR_TEST_TIME_ZONE": tz_at_local_hour(12)})
    # The higher-priority night job would have been claimed first if it could start.
    poll(lambda: status(day) == S.COMPLETED, 30, message="the day task ran")
    assert status(night) == S.PENDING and Mark.count("night-job") == 0


@pytest.mark.django_db(transaction=True)
def test_window_across_midnight_runs_after_midnight(start_worker):
    night = conductor.invoke("night-job", "late")
    start_worker(env={"CONDUCTOR_TEST_TIME_ZONE": tz_at_local_hour(2)})
    assert conductor.wait(night, timeout=30) == "ran at night"


def start_in_a_window(start_worker, seconds: float):
    """A worker whose tasks' window opens now and closes ``seconds`` later, returned once
    it is up with at least half of its window left. A loaded machine can take longer
    than that to start a worker: it is then stopped and started again with a window
    twice as long. Returns the worker, the opening and the window's length."""
    for _ in range(4):
        opens = timezone.now().astimezone(UTC)
        closes = opens + timedelta(seconds=seconds)
        worker = start_worker(env={"CONDUCTOR_TEST_WINDOW": f"{opens:%H:%M:%S}-{closes:%H:%M:%S}"})
        poll(lambda w=worker: Worker.objects.filter(pid=w.pid).exists(), 60,
             message="the windowed worker is up")
        if timezone.now() + timedelta(seconds=seconds / 2) < closes:
            return worker, opens, seconds
        worker.signal(15)
        worker.wait(15)
        seconds *= 2
    raise AssertionError("no worker came up with half of its window left")


@pytest.mark.django_db(transaction=True)
def test_window_closing_releases_at_the_next_step_and_resumes_when_open(start_worker):
    worker, now, seconds = start_in_a_window(start_worker, 5)
    steps = max(300, int(2 * seconds / 0.03))  # more work than the window has time for
    eid = conductor.invoke("windowed-steps", {"key": "w", "steps": steps, "pause": 0.03})
    def released():  # one read: status and started_at of the same moment
        row = Execution.objects.get(pk=eid)
        return row if row.status == S.PENDING and row.started_at else None

    row = poll(released, seconds + 30, message="released when the window closed")
    assert row.resume is True and row.attempts == 1 and row.locked_by is None
    assert row.run_at.astimezone(UTC).strftime("%H:%M:%S") == f"{now:%H:%M:%S}"
    assert row.run_at > timezone.now()  # tomorrow's opening
    done_steps = row.steps.count()
    assert 0 < done_steps < steps
    worker.signal(15)
    worker.wait(15)
    # The window opens (this worker has none): it resumes, skipping finished steps.
    Execution.objects.filter(pk=eid).update(
        run_at=timezone.now(), payload={"key": "w", "steps": steps, "pause": 0})
    resumer = start_worker()
    poll(lambda: Worker.objects.filter(pid=resumer.pid).exists(), 60,
         message="the second worker is up")
    assert conductor.wait(eid, timeout=90) == "all steps"
    row = Execution.objects.get(pk=eid)
    assert row.attempts == 1
    marks = list(Mark.objects.filter(key="w:step").values_list("value", flat=True))
    assert len(marks) == len(set(marks)) == steps  # no step ran twice


@pytest.mark.django_db(transaction=True)
def test_batch_fills_to_size_or_timeout_with_a_worker(start_worker):
    start_worker()
    full = [conductor.invoke("batched", n) for n in range(3)]
    poll(lambda: all_finished(full), 30, message="a full batch ran")
    groups = {m.value.split("|")[1] for m in Mark.objects.filter(key="batched")}
    assert len(groups) == 1 and set(groups.pop().split(",")) == set(full)
    quick = conductor.invoke_many("batched-quick", [{"payload": n} for n in range(4)])
    assert [conductor.wait(e, timeout=30) for e in quick] == [0, 1, 2, 3]
    assert list(Mark.objects.filter(key="batched-quick").values_list("value", flat=True)) == ["4"]


@pytest.mark.django_db(transaction=True)
def test_cancelling_one_item_of_a_running_batch(start_worker):
    ids = conductor.invoke_many("batched-cancellable", [{"payload": n} for n in range(3)])
    start_worker()
    poll(lambda: Mark.count("cancellable:started") == 3, 30, message="the batch started")
    assert conductor.cancel(ids[1], reason="not this one") is True
    poll(lambda: all_finished(ids), 30, message="the batch finished")
    rows = [Execution.objects.get(pk=e) for e in ids]
    assert [r.status for r in rows] == [S.COMPLETED, S.CANCELLED, S.COMPLETED]
    assert [rows[0].result, rows[2].result] == ["done 0", "done 2"]
    assert rows[1].last_error == "not this one"
