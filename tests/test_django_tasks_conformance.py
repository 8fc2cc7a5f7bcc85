"""The backend as Django's reference backends behave (``django.tasks`` signals, the
exception a task raised, async tasks, the task as enqueued); Django's own suites run in
tests/upstream_tasks/."""

import asyncio
import signal
import threading
import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from conductor_django.backends import ConductorBackend
from conductor_django.models import Execution, Worker
from conductor_django.store import wakeup
from conductor_django.testing import drain
from tests.conftest import poll
from tests.tasks_api import TaskResultDoesNotExist, TaskResultStatus, default_task_backend
from tests.testapp import dtasks

try:  # Django 6
    from django.tasks.signals import logger, task_enqueued, task_finished, task_started
except ImportError:  # Django 5.2: the backport
    from django_tasks.signals import logger, task_enqueued, task_finished, task_started

TASKS_LOGGER = logger.name  # Django's logging of tasks hangs off the signals


@pytest.fixture
def received():
    """Every ``django.tasks`` signal sent: ``(signal name, sender, status, result)``."""
    seen = []

    def receiver(name):
        def receive(sender, task_result, **kwargs):
            seen.append((name, sender, task_result.status, task_result))
        return receive

    receivers = {name: receiver(name) for name in ("enqueued", "started", "finished")}
    for name, sig in (("enqueued", task_enqueued), ("started", task_started),
                      ("finished", task_finished)):
        sig.connect(receivers[name], dispatch_uid=f"conformance-{name}", weak=False)
    yield seen
    for sig, name in ((task_enqueued, "enqueued"), (task_started, "started"),
                      (task_finished, "finished")):
        sig.disconnect(dispatch_uid=f"conformance-{name}")


@pytest.mark.django_db
def test_signals_as_the_reference_backends_send_them(received):
    result = dtasks.add.enqueue(2, 3)
    assert [(n, s, st) for n, s, st, _ in received] == [
        ("enqueued", ConductorBackend, TaskResultStatus.READY)]
    assert received[0][3].id == result.id
    drain()
    assert [(n, s, st) for n, s, st, _ in received[1:]] == [
        ("started", ConductorBackend, TaskResultStatus.RUNNING),
        ("finished", ConductorBackend, TaskResultStatus.SUCCESSFUL)]
    started, finished = received[1][3], received[2][3]
    assert started.id == finished.id == result.id and started.worker_ids
    assert finished.return_value == 5 and finished.finished_at is not None


@pytest.mark.django_db
def test_a_failed_task_is_finished_with_its_error_and_logged(received, caplog):
    result = dtasks.explode.enqueue("boom")
    with caplog.at_level("ERROR", logger=TASKS_LOGGER):
        drain()
    name, sender, status, finished = received[-1]
    assert (name, sender, status) == ("finished", ConductorBackend, TaskResultStatus.FAILED)
    assert finished.errors[-1].exception_class is ValueError
    assert any(r.name == TASKS_LOGGER and result.id in r.getMessage() and r.exc_info
               for r in caplog.records)


@pytest.mark.django_db
@pytest.mark.parametrize(("task", "exception"), [
    (dtasks.system_exit, SystemExit), (dtasks.keyboard_interrupt, KeyboardInterrupt)])
def test_system_exit_and_keyboard_interrupt_are_the_tasks_errors(task, exception):
    result = task.enqueue()
    assert drain() == 1  # once: not put back to run again
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert [e.exception_class for e in result.errors] == [exception]
    assert f"This Task failed due to {exception.__name__}" in result.errors[0].traceback
    assert Execution.objects.get(pk=result.id).status == "failed"


@pytest.mark.django_db
def test_a_return_value_json_cannot_hold_fails_with_djangos_type_error():
    result = dtasks.unserialisable_return.enqueue()
    drain()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is TypeError
    assert "Unsupported type" in result.errors[0].traceback


@pytest.mark.django_db
def test_unserialisable_arguments_get_djangos_type_error():
    with pytest.raises(TypeError, match="Unsupported type"):
        dtasks.add.enqueue(timezone.now(), 1)
    with pytest.raises(TypeError, match="Unsupported type"):
        dtasks.add.enqueue(1, b=object())
    assert Execution.objects.count() == 0


def test_async_tasks_are_supported():
    assert default_task_backend.supports_async_task


@pytest.mark.django_db(transaction=True)
def test_async_task_from_async_code():
    async def scenario():
        result = await dtasks.async_add.aenqueue(4, 5)
        assert result.status == TaskResultStatus.READY
        again = await dtasks.async_add.aget_result(result.id)
        assert again.id == result.id
        await close_connections()
        return result

    async def refreshed(result):
        await result.arefresh()
        await close_connections()  # of asgiref's thread, which outlives the loop

    close_connections = sync_to_async(connections.close_all, thread_sensitive=True)
    result = asyncio.run(scenario())
    assert drain() == 1
    asyncio.run(refreshed(result))
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 9


@pytest.mark.django_db
def test_get_result_keeps_the_task_as_enqueued():
    later = (timezone.now() + timedelta(hours=1)).replace(microsecond=123456)
    result = dtasks.add.using(priority=7, queue_name="other", run_after=later).enqueue(1, 2)
    fetched = default_task_backend.get_result(result.id)
    assert (fetched.task.priority, fetched.task.queue_name, fetched.task.run_after) == \
        (7, "other", later)
    assert fetched.task.func is dtasks.add.func and not fetched.task.takes_context
    assert dtasks.with_context.get_result(
        dtasks.with_context.enqueue(key="k").id).task.takes_context
    plain = default_task_backend.get_result(dtasks.add.enqueue(1, 1).id)
    assert (plain.task.priority, plain.task.queue_name, plain.task.run_after) == \
        (0, "default", None)


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["nope", "", "00000000-0000-0000-0000-000000000000",
                                 "\x00", 12, None])
def test_unknown_ids_do_not_exist(bad):
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(bad)


def test_an_idle_worker_stops_at_once_on_sigterm(start_worker):
    """Django's database worker stops within half a second of SIGTERM when idle; ours does
    not wait for its next poll (60 s) nor for its wake-up socket's timeout. (Measured here:
    0.1-0.5 s from the signal to the exit on an idle machine; the bound below leaves room
    for a loaded one.)"""
    worker = start_worker("--poll-interval", "60")
    poll(lambda: Worker.objects.exists(), timeout=30, message="the worker to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=5) == 0
    assert not Worker.objects.exists()


def test_the_wake_up_socket_stops_waiting_when_interrupted(tmp_path):
    """SQLite's wake-up listener: ``stop`` ends its wait at once, not after its timeout."""
    inbox = wakeup.Inbox(tmp_path, uuid.uuid4())
    got = []
    waiting = threading.Thread(target=lambda: got.append(inbox.receive(60)))
    waiting.start()
    try:
        time.sleep(0.05)  # let it block in recv (the interrupt works either way)
        inbox.interrupt()
        waiting.join(10)
        assert not waiting.is_alive() and got == [[b""]]
    finally:
        inbox.close()
