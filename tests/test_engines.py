"""The same acceptance checks for steps and cancellation with every engine.

``engine`` (tests/conftest.py) runs each test with a plain conductor_worker, and with a
conductor_worker dispatching to a real qcluster through the ORM and the Redis broker.
"""

import pytest

import conductor_django as conductor
from conductor_django.models import Execution, Worker
from tests.conftest import poll
from tests.tasks_api import TaskResultStatus
from tests.testapp import dtasks
from tests.testapp.models import Mark


def finished(eid):
    return conductor.get(eid).status in Execution.FINAL


def wait_finished(eid, engine, timeout=40):
    poll(lambda: finished(eid), timeout, message=f"{eid} to finish ({engine.name})")
    return conductor.get(eid)


@pytest.mark.django_db(transaction=True)
def test_steps_retries_timeouts_and_django_tasks(engine):
    worker = engine.start("--concurrency", "4")
    recorded = conductor.invoke("record-run", {"n": 1})
    steps = conductor.invoke("steps-then-fail", {"key": "s"})
    timed = conductor.invoke("timeout-task", {"key": "t"})
    django_task = dtasks.add.enqueue(4, 5)

    ex = wait_finished(steps, engine)
    assert ex.status == "completed", ex.last_error
    assert ex.result == ["A", "B"] and ex.attempts == 3
    assert Mark.count("s:a") == 1  # memoized: never repeated on a retry
    assert Mark.count("s:b") == 3

    ex = wait_finished(timed, engine)
    assert (ex.status, ex.last_error, ex.attempts) == ("failed", "Timed out after 0.3 seconds", 2)

    poll(lambda: dtasks.add.get_result(django_task.id).is_finished, 40)
    django_task.refresh()
    assert django_task.status == TaskResultStatus.SUCCESSFUL, django_task.errors
    assert django_task.return_value == 9

    assert wait_finished(recorded, engine).status == "completed"
    ran_in = int(Mark.objects.get(key="run:1").value)
    if engine.is_django_q:  # a qcluster worker process ran it, not conductor_worker
        assert ran_in != worker.pid
        assert Worker.objects.filter(role=Worker.Role.QCLUSTER, pid=ran_in).exists()
    else:
        assert ran_in == worker.pid


@pytest.mark.django_db(transaction=True)
def test_cancellation_of_running_executions(engine):
    engine.start("--concurrency", "4")
    loop = conductor.invoke("loop-until-cancelled", {"key": "l"})
    waiting = conductor.invoke("wait-for-signal", {"key": "w"})
    swallow = conductor.invoke("swallow-and-return", {"key": "x"})
    for key in ("l", "w", "x"):
        poll(lambda key=key: Mark.count(f"{key}:started"), 40, message=f"{key} to start")

    assert conductor.cancel(loop, reason="stop the loop")
    assert conductor.cancel(waiting)
    assert not conductor.cancel(waiting, reason="again")  # already accepted
    assert conductor.cancel(swallow, reason="no swallowing")

    ex = wait_finished(loop, engine)
    assert (ex.status, ex.last_error, ex.cancelled) == ("cancelled", "stop the loop", True)
    assert ex.finished_at is not None and ex.attempts == 1

    ex = wait_finished(waiting, engine)
    assert (ex.status, ex.last_error) == ("cancelled", "Cancelled by user")
    assert Mark.objects.get(key="w:aborted").value == "True:cancelled"
    assert Mark.count("w:after-checkpoint") == 0

    ex = wait_finished(swallow, engine)
    assert (ex.status, ex.last_error) == ("cancelled", "no swallowing")
    assert Mark.count("x:step-ran") == 0 and Mark.count("x:swallowed") == 0

    if engine.is_django_q:  # the executions ran in qcluster processes
        runners = set(Execution.objects.values_list("locked_by", flat=True))
        assert runners == {None}
        assert Worker.objects.filter(role=Worker.Role.QCLUSTER).exists()
        assert Worker.objects.filter(role=Worker.Role.DISPATCHER).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ["django_q-orm"], indirect=True)
def test_cancel_while_in_the_broker_never_runs(engine):
    engine.start(qcluster=False)  # the dispatcher only: the id waits in the broker
    eid = conductor.invoke("record-run", {"n": 1})
    poll(lambda: conductor.get(eid).status == "running")
    assert conductor.get(eid).locked_by is not None
    assert conductor.cancel(eid, reason="too late")
    ex = wait_finished(eid, engine)
    assert (ex.status, ex.last_error) == ("cancelled", "too late")

    # A qcluster started now gets the stale message and leaves the row alone; a new
    # execution still runs.
    engine.start_qcluster()
    other = conductor.invoke("record-run", {"n": 2})
    assert wait_finished(other, engine).status == "completed"
    assert Mark.count("run:1") == 0 and Mark.count("run:2") == 1
    assert conductor.get(eid).status == "cancelled"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ["django_q-orm"], indirect=True)
def test_django_q_timeout_is_a_hard_time_limit(engine):
    engine.start(env={"CONDUCTOR_TEST_Q_TIMEOUT": "2"})
    eid = conductor.invoke("sleepy", {"key": "h", "seconds": 60})
    ex = wait_finished(eid, engine, timeout=40)
    assert ex.status == "failed"
    assert ex.last_error.startswith("Hard time limit exceeded: django-q2 stopped the attempt")
    assert "2 seconds" in ex.last_error
    assert Mark.count("h:started") == 1 and Mark.count("h:done") == 0
    # The next execution runs in the worker process django-q2 started instead.
    assert wait_finished(conductor.invoke("echo", {"x": 1}), engine).status == "completed"


def test_django_q_engine_needs_django_q_installed(settings):
    from conductor_django.checks import check_settings

    settings.CONDUCTOR = {"ENGINE": "django_q"}
    assert check_settings() == []
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "django_q"]
    [error] = check_settings()
    assert error.id == "conductor_django.E009"
    assert "INSTALLED_APPS" in error.msg


def test_django_q_engine_without_the_package_says_what_to_install(settings, monkeypatch):
    import importlib.util

    from conductor_django.checks import check_settings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "django_q" else real(name, *a))
    settings.CONDUCTOR = {"ENGINE": "django_q"}
    [error] = check_settings()
    assert error.id == "conductor_django.E009"
    assert 'pip install "conductor-django[django_q]"' in error.hint


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("engine", ["django_q-orm"], indirect=True)
def test_stopped_dispatcher_gives_back_what_it_held(engine):
    import signal

    dispatcher = engine.start(qcluster=False, env={"CONDUCTOR_LOG_LEVEL": "INFO"})
    eid = conductor.invoke("record-run", {"n": 3})
    poll(lambda: conductor.get(eid).status == "running")
    dispatcher.signal(signal.SIGTERM)
    assert dispatcher.wait(timeout=20) == 0
    # it ran nothing itself: its last line counts what it sent, not "0 executions"
    assert "stopped after sending 1 executions to django-q2" in dispatcher.output()
    assert "stopped after 0 executions" not in dispatcher.output()
    ex = conductor.get(eid)
    assert (ex.status, ex.locked_by, ex.attempts) == ("pending", None, 1)

    engine.start()  # a new dispatcher and a qcluster; the old message is stale
    ex = wait_finished(eid, engine)
    assert (ex.status, ex.attempts) == ("completed", 1)  # the release was no new attempt
    assert Mark.count("run:3") == 1
