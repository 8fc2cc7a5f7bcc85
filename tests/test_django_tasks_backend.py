"""The Django Tasks backend, through Django's public tasks API only (``django.tasks`` on
Django 6, the ``django_tasks`` backport on Django 5.2)."""

from datetime import timedelta

import pytest
from django.utils import timezone

import conductor_django as conductor
from conductor_django.models import Execution
from conductor_django.testing import drain
from tests.conftest import poll
from tests.tasks_api import (
    InvalidTaskError,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
)
from tests.testapp import dtasks
from tests.testapp.models import Mark


def test_backend_features():
    assert default_task_backend.supports_defer
    assert default_task_backend.supports_priority
    assert default_task_backend.supports_get_result


@pytest.mark.django_db
def test_enqueue_then_run_then_get_result():
    result = dtasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert result.args == [2, 3] and result.kwargs == {}
    assert not result.is_finished
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018 - not finished yet

    assert drain() == 1
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.is_finished and result.errors == []
    assert result.attempts == 1 and len(result.worker_ids) == 1 and result.worker_ids[0]
    assert result.started_at <= result.last_attempted_at <= result.finished_at
    assert Mark.count("dtask:add") == 1

    again = dtasks.add.get_result(result.id)
    assert again.return_value == 5 and again.id == result.id
    # The id is the conductor execution id.
    assert conductor.get(result.id).result == 5


@pytest.mark.django_db
def test_priority_queue_and_run_after_map_to_the_execution():
    later = timezone.now() + timedelta(hours=1)
    delayed = dtasks.add.using(run_after=later, priority=-5).enqueue(1, 1)
    other = dtasks.on_other_queue.enqueue(key="q")
    ex = conductor.get(delayed.id)
    assert (ex.run_at, ex.priority, ex.queue) == (later, -5, "default")
    ex = conductor.get(other.id)
    assert (ex.priority, ex.queue) == (10, "other")
    assert ex.task_name == "tests.testapp.dtasks.on_other_queue"

    assert drain(queues=["default"]) == 0  # delayed: not runnable yet
    assert drain(queues=["other"]) == 1
    assert dtasks.on_other_queue.get_result(other.id).return_value == {"queue": "other"}
    assert dtasks.add.get_result(delayed.id).status == TaskResultStatus.READY


@pytest.mark.django_db
def test_higher_priority_runs_first():
    low = dtasks.add.using(priority=-10).enqueue(0, 0)
    high = dtasks.add.using(priority=50).enqueue(1, 1)
    drain()
    first, second = (dtasks.add.get_result(r.id) for r in (high, low))
    assert first.finished_at <= second.started_at


@pytest.mark.django_db
def test_takes_context_sees_its_own_result():
    result = dtasks.with_context.enqueue(key="ctx")
    drain()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"id": result.id, "attempt": 1, "status": "RUNNING"}


@pytest.mark.django_db
def test_exception_maps_to_failed_with_its_class_and_traceback():
    result = dtasks.explode.enqueue("kaboom")
    drain()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="failed"):
        result.return_value  # noqa: B018
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "kaboom" in error.traceback and "Traceback" in error.traceback
    assert conductor.get(result.id).attempts == 1  # Django tasks are not retried by default


@pytest.mark.django_db
def test_conductor_options_in_django_task_decorator():
    """``@task(max_attempts=3)``: the backend's task class takes conductor's option."""
    from conductor_django.backends import ConductorTask

    assert isinstance(dtasks.flaky, ConductorTask) and dtasks.flaky.max_attempts == 3
    result = dtasks.flaky.enqueue("fl")
    assert Execution.objects.get(pk=result.id).max_attempts == 3
    for _ in range(3):
        drain()
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == "third time lucky" and len(result.errors) == 2
    assert dtasks.add.enqueue(1, 1).id and Execution.objects.filter(
        max_attempts=1, task_name=dtasks.add.module_path).exists()  # the backend's default
    with pytest.raises(InvalidTaskError, match="max_attempts"):
        ConductorTask(func=dtasks.flaky.func, max_attempts=0)


@pytest.mark.django_db
def test_cancelled_before_start_maps_to_failed():
    result = dtasks.add.using(run_after=timezone.now() + timedelta(minutes=5)).enqueue(1, 2)
    assert conductor.cancel(result.id, reason="not needed")
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].traceback == "not needed"
    assert drain() == 0


@pytest.mark.django_db
def test_unknown_or_foreign_ids_do_not_exist():
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-uuid")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("00000000-0000-0000-0000-000000000000")
    plain = conductor.invoke("echo", {"a": 1})  # a conductor task, not a Django task
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(plain)


@pytest.mark.django_db
def test_bad_input_writes_nothing():
    with pytest.raises(TypeError, match="object"):
        dtasks.add.enqueue(object(), 1)
    with pytest.raises(InvalidTaskError):
        dtasks.add.using(run_after=timezone.now().replace(tzinfo=None)).enqueue(1, 1)
    with pytest.raises(InvalidTaskError):
        dtasks.add.using(queue_name="nope").enqueue(1, 1)
    with pytest.raises(InvalidTaskError):
        dtasks.add.using(priority=101).enqueue(1, 1)
    assert Execution.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_decorated_function_runs_on_conductor_worker(start_worker):
    worker = start_worker("--concurrency", "2")
    result = dtasks.add.enqueue(20, 22)
    ctx_result = dtasks.with_context.enqueue(key="sub")
    poll(lambda: dtasks.add.get_result(result.id).is_finished, 30, message=worker.output)
    poll(lambda: dtasks.with_context.get_result(ctx_result.id).is_finished, 30)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL, result.errors
    assert result.return_value == 42
    assert dtasks.with_context.get_result(ctx_result.id).return_value["id"] == ctx_result.id


@pytest.mark.django_db(transaction=True)
def test_cancel_running_django_task_maps_to_failed(start_worker):
    start_worker()
    result = dtasks.wait_for_mark.enqueue("dc")
    poll(lambda: dtasks.wait_for_mark.get_result(result.id).status == TaskResultStatus.RUNNING)
    poll(lambda: Mark.count("dc:started"))
    assert conductor.cancel(result.id, reason="stop it")
    Mark.add("dc:go")
    poll(lambda: dtasks.wait_for_mark.get_result(result.id).is_finished)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class is conductor.Cancelled
    assert result.errors[-1].traceback == "stop it"
    assert conductor.get(result.id).status == "cancelled"


def test_workers_find_django_tasks_by_module_path_only():
    from conductor_django import TaskNotFound
    from conductor_django.definitions.registry import get_task

    found = get_task("tests.testapp.dtasks.explode")
    assert found.name == "tests.testapp.dtasks.explode" and not found.invocable
    for name in ("os.path", "tests.testapp.dtasks", "no.such.module", ".", "a..b"):
        with pytest.raises(TaskNotFound):
            get_task(name)
    with pytest.raises(ValueError, match="not invocable"):
        conductor.invoke("tests.testapp.dtasks.explode", {"args": ["x"]})
