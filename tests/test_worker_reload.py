"""The edit loop with a real worker: a task the worker does not know is logged at WARNING
with the reason, and ``conductor_worker --reload`` picks up an edited tasks module."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from conductor_django.models import Execution
from tests.conftest import poll

VERSION_1 = '''
from conductor_django import task


@task(name="reload-a")
def a(event, ctx):
    return "v1"
'''

VERSION_2 = VERSION_1.replace('"v1"', '"v2"') + '''

@task(name="reload-b")
def b(event, ctx):
    return "b"
'''


def pending(task_name: str) -> Execution:
    return Execution.objects.create(task_name=task_name, payload={}, max_attempts=5)


def result(execution: Execution) -> object:
    execution.refresh_from_db()
    return execution.result if execution.status == "completed" else None


@pytest.mark.django_db(transaction=True)
def test_reload_restarts_the_worker_on_an_edit_and_unknown_tasks_are_loud(
        start_worker, tmp_path):
    module = f"reload_tasks_{uuid.uuid4().hex[:8]}"
    source = tmp_path / f"{module}.py"
    source.write_text(VERSION_1)
    worker = start_worker("--reload", "--poll-interval", "0.2", "--shutdown-timeout", "5",
                          env={"PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:"
                                             f"{tmp_path}:{os.getcwd()}",
                               "CONDUCTOR_TEST_TASK_MODULES": module})
    first = pending("reload-a")
    poll(lambda: result(first) == "v1", timeout=60, message="the first version ran")

    unknown = pending("reload-b")  # added to the code after the worker started
    # the test settings log conductor_django at WARNING: an INFO line would not show
    poll(lambda: "'reload-b' is not registered" in worker.output(), timeout=30,
         message="a WARNING naming the unknown task")
    line = next(x for x in worker.output().splitlines() if "'reload-b' is not registered" in x)
    assert "restart" in line and "--reload" in line, line
    poll(lambda: Execution.objects.filter(pk=unknown.pk, status="pending", attempts=1).exists(),
         timeout=30, message="the unknown task's execution waiting for a retry")

    source.write_text(VERSION_2)

    def reloaded() -> bool:
        if "changed: stopping the worker" in worker.output():
            return True
        later = time.time() + 2  # the reloader may have looked before the write: touch
        os.utime(source, (later, later))
        return False

    poll(reloaded, timeout=30, interval=1.0, message="the reloader saw the edit")
    again = pending("reload-a")
    poll(lambda: result(again) == "v2", timeout=60, message="the new code ran")
    Execution.objects.filter(pk=unknown.pk).update(run_at=unknown.created_at)  # retry now
    poll(lambda: result(unknown) == "b", timeout=60, message="the added task ran")

    os.killpg(worker.pid, signal.SIGTERM)  # the reloader and its child, as Ctrl-C does
    assert worker.wait(30) == 0
    assert not Execution.objects.filter(status="running").exists()


@pytest.mark.django_db
def test_reload_is_refused_with_drain():
    with pytest.raises(CommandError, match="--reload is for development"):
        call_command("conductor_worker", "--reload", "--drain")
