"""Retention per task and globally, cleanup in batches, the command and the worker."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

import conductor_django as conductor
from conductor_django import Retention
from conductor_django.models import Execution, ExecutionLog, Step
from conductor_django.retention import cleanup
from tests.conftest import poll

DAY = timedelta(days=1)


def make(task="echo", status="completed", age=None, parent=None):
    """An execution that finished ``age`` ago (unfinished when ``age`` is None)."""
    now = timezone.now()
    return Execution.objects.create(
        task_name=task, status=status, parent=parent,
        finished_at=None if age is None else now - age,
        created_at=now - (age or timedelta()) - timedelta(minutes=1),
    )


@pytest.fixture
def conductor_settings(settings):
    def change(**values):
        settings.CONDUCTOR = {**settings.CONDUCTOR, **values}

    return change


def test_retention_values():
    assert Retention(completed=60).completed == timedelta(seconds=60)
    assert Retention(failed=DAY) == Retention(failed=86400.0)
    assert Retention() == Retention(completed=None, failed=None)
    assert Retention.coerce({"completed": 5}) == Retention(completed=5)
    assert Retention.coerce(None) is None
    with pytest.raises(ValueError, match="negative"):
        Retention(completed=-1)
    with pytest.raises(TypeError, match="Retention.failed"):
        Retention(failed="30 days")
    with pytest.raises(ValueError, match="unknown retention keys"):
        Retention.coerce({"cancelled": 5})
    with pytest.raises(TypeError, match="dict"):
        Retention.coerce([5])


@pytest.mark.django_db
def test_cleanup_deletes_what_retention_says_and_nothing_else(conductor_settings):
    conductor_settings(RETENTION={"completed": DAY, "failed": 7 * DAY})
    hour = timedelta(hours=1)
    gone = [
        make("kept-an-hour", "completed", 2 * hour),  # the task's own retention: 1 h
        make("echo", "completed", 2 * DAY),  # the global one: 1 day
        make("echo", "failed", 8 * DAY),
        make("echo", "cancelled", 8 * DAY),
        make("no-longer-registered", "completed", 2 * DAY),
    ]
    finished_parent = make("echo", "completed", 3 * DAY)
    gone += [finished_parent, make("echo", "completed", 2 * DAY, parent=finished_parent)]
    waiting_parent = make("echo", "suspended")
    kept = [
        make("kept-an-hour", "completed", hour / 2),
        make("kept-an-hour", "failed", 300 * DAY),  # the task keeps failures forever
        make("echo", "completed", 2 * hour),
        make("echo", "failed", 2 * DAY),
        make("echo", "pending"),
        make("echo", "running"),
        waiting_parent,
        make("echo", "completed", 2 * DAY, parent=waiting_parent),  # its parent may read it
    ]
    for ex in (gone[1], kept[2]):
        Step.objects.create(execution=ex, name="s", result=1)
        ExecutionLog.objects.create(execution=ex, attempt=1, level=20, logger="x", message="m")

    dry = cleanup(dry_run=True)
    assert (dry.total, dry.by_kind()) == (7, {"completed": 5, "failed": 2})
    assert dry.deleted == {("kept-an-hour", "completed"): 1, ("*", "completed"): 4,
                           ("*", "failed"): 2}
    assert Execution.objects.count() == len(gone) + len(kept)

    done = cleanup()
    assert (done.total, done.finished) == (7, True)
    assert set(Execution.objects.values_list("pk", flat=True)) == {ex.pk for ex in kept}
    assert list(Step.objects.values_list("execution_id", flat=True)) == [kept[2].pk]
    assert list(ExecutionLog.objects.values_list("execution_id", flat=True)) == [kept[2].pk]
    assert cleanup().total == 0


@pytest.mark.django_db
def test_without_a_global_retention_only_task_retention_applies():
    old = make("echo", "completed", 1000 * DAY)
    make("kept-an-hour", "completed", 2 * DAY)
    assert cleanup().total == 1
    assert list(Execution.objects.values_list("pk", flat=True)) == [old.pk]


@pytest.mark.django_db
def test_cleanup_deletes_in_bounded_batches(conductor_settings):
    conductor_settings(RETENTION={"completed": 0})
    for _ in range(5):
        make("echo", "completed", DAY)
    result = cleanup(batch_size=2)
    assert (result.total, result.batches) == (5, 3)
    assert not Execution.objects.exists()
    with pytest.raises(ValueError, match="batch_size"):
        cleanup(batch_size=0)


@pytest.mark.django_db
def test_an_exhausted_time_budget_stops_early(conductor_settings):
    conductor_settings(RETENTION={"failed": 0})
    make("echo", "failed", DAY)
    result = cleanup(time_budget=0)
    assert (result.total, result.finished) == (0, False)
    assert cleanup(time_budget=30).finished
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_cleanup_command(conductor_settings):
    conductor_settings(RETENTION={"completed": DAY, "failed": DAY})
    make("echo", "completed", 2 * DAY)
    make("echo", "cancelled", 2 * DAY)
    make("kept-an-hour", "completed", DAY)
    fresh = make("echo", "completed", timedelta(hours=1))
    out = StringIO()
    call_command("conductor_cleanup", "--dry-run", "-v", "2", stdout=out)
    assert out.getvalue().splitlines() == [
        "Would delete 3 executions (2 completed, 1 failed or cancelled).",
        "  default retention: 1 completed",
        "  default retention: 1 failed",
        "  task kept-an-hour: 1 completed",
    ]
    assert Execution.objects.count() == 4
    out = StringIO()
    call_command("conductor_cleanup", "--batch-size", "1", stdout=out)
    assert out.getvalue() == "Deleted 3 executions (2 completed, 1 failed or cancelled).\n"
    assert list(Execution.objects.values_list("pk", flat=True)) == [fresh.pk]
    with pytest.raises(CommandError, match="batch-size"):
        call_command("conductor_cleanup", "--batch-size", "0")


@pytest.mark.django_db(transaction=True)
def test_worker_cleans_up_when_it_starts_and_then_at_most_hourly(start_worker):
    first = make("kept-an-hour", "completed", DAY)
    worker = start_worker("--concurrency", "1")
    poll(lambda: not Execution.objects.filter(pk=first.pk).exists(), timeout=30,
         message=f"the startup cleanup\n{worker.output()}")
    second = make("kept-an-hour", "completed", DAY)
    # the worker goes on claiming and running; its next cleanup is an hour away
    eid = conductor.invoke("echo", "after")
    assert conductor.wait(eid, timeout=30)["payload"] == "after"
    eid = conductor.invoke("echo", "again")
    assert conductor.wait(eid, timeout=30)["payload"] == "again"
    assert Execution.objects.filter(pk=second.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_worker_cleans_up_again_after_the_interval(start_worker):
    first = make("kept-an-hour", "failed", DAY)  # failures of this task are kept forever
    second = make("kept-an-hour", "completed", DAY)
    worker = start_worker(env={"CONDUCTOR_TEST_CLEANUP_INTERVAL": "0.2"})
    poll(lambda: not Execution.objects.filter(pk=second.pk).exists(), timeout=30,
         message=f"the first cleanup\n{worker.output()}")
    third = make("kept-an-hour", "completed", DAY)
    poll(lambda: not Execution.objects.filter(pk=third.pk).exists(), timeout=30,
         message=f"a later cleanup\n{worker.output()}")
    assert Execution.objects.filter(pk=first.pk).exists()
