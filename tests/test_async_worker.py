"""``async def`` handlers in a real ``conductor_worker``: concurrency on one event loop,
cancellation and timeouts that interrupt an ``await``."""

import signal
import time

import pytest

import conductor_django as conductor
from conductor_django.models import Execution, Step
from tests.conftest import poll
from tests.testapp.async_tasks import lines


def status_is(eid, *statuses):
    return lambda: Execution.objects.get(pk=eid).status in statuses


def started(log, line="started"):
    return lambda: any(entry.startswith(line) for entry in lines(log))


@pytest.mark.django_db(transaction=True)
def test_a_thousand_awaiting_executions_share_one_worker(start_worker):
    """Each awaits asyncio.sleep(1) in a step: run one after another they would take
    1,000 s; on one event loop they all finish well inside the poll's deadline."""
    ids = conductor.invoke_many("async-nap-step", [
        {"payload": {"n": n, "seconds": 1}} for n in range(1000)])
    worker = start_worker("--async-concurrency", "1000", "--concurrency", "2")
    done = Execution.objects.filter(pk__in=ids, status="completed")
    poll(lambda: done.count() == 1000, timeout=120, interval=0.2,
         message="1,000 async executions completed")
    assert Step.objects.filter(execution_id__in=ids, name="nap").count() == 1000
    assert sorted(Execution.objects.filter(pk__in=ids).values_list("result", flat=True)) == \
        list(range(1000))
    assert set(Execution.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
    assert worker.proc.poll() is None


@pytest.mark.django_db(transaction=True)
def test_cancel_interrupts_an_awaiting_step_and_ends_cancelled(start_worker, tmp_path):
    log = tmp_path / "cancel.log"
    eid = conductor.invoke("async-await-forever", {"log": str(log)})
    worker = start_worker()
    poll(started(log), message="handler start")
    assert conductor.cancel(eid, "Stop now") is True
    row = conductor.get(eid)
    assert row.cancelled is True and row.last_error == "Stop now"
    poll(status_is(eid, "cancelled"), timeout=10, message="status cancelled")
    row.refresh_from_db()
    assert (row.status, row.last_error, row.attempts) == ("cancelled", "Stop now", 1)
    assert row.finished_at is not None and row.locked_by is None
    entries = lines(log)
    assert entries[0] == "started 1"
    assert entries[1].startswith("interrupted ") and entries[1].endswith(" cancelled")
    assert "after-step" not in entries and "step-finished" not in entries
    assert not Step.objects.filter(execution_id=eid).exists()  # the step never finished
    assert conductor.cancel(eid) is False
    assert worker.proc.poll() is None


@pytest.mark.django_db(transaction=True)
def test_async_cancel_stops_a_loop_of_steps(start_worker):
    eid = conductor.invoke("async-loop-until-cancelled", {"key": "ar"})
    start_worker()
    poll(lambda: Step.objects.filter(execution_id=eid).count() >= 2, message="a few steps")
    assert conductor.cancel(eid, "Enough") is True
    poll(status_is(eid, "cancelled"), timeout=10)
    steps = Step.objects.filter(execution_id=eid).count()
    time.sleep(0.3)
    assert Step.objects.filter(execution_id=eid).count() == steps
    assert conductor.get(eid).last_error == "Enough"


@pytest.mark.django_db(transaction=True)
def test_async_except_exception_does_not_swallow_cancelled(start_worker, tmp_path):
    log = tmp_path / "swallow.log"
    eid = conductor.invoke("async-swallow", {"log": str(log)})
    start_worker()
    poll(started(log))
    conductor.cancel(eid)
    poll(status_is(eid, "cancelled", "completed", "failed"), timeout=10)
    assert conductor.get(eid).status == "cancelled"
    assert lines(log) == ["started"]  # not swallowed; the next step never ran
    assert not Step.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db(transaction=True)
def test_async_returning_after_cancel_stores_result_but_ends_cancelled(start_worker, tmp_path):
    log = tmp_path / "return.log"
    eid = conductor.invoke("async-return-after-cancel", {"log": str(log)})
    start_worker()
    poll(started(log))
    conductor.cancel(eid, "Customer left")
    poll(status_is(eid, "cancelled", "completed", "failed"), timeout=10)
    row = conductor.get(eid)
    assert (row.status, row.last_error) == ("cancelled", "Customer left")
    assert row.result == {"stopped": True, "reason": "cancelled"}
    assert lines(log) == ["started", "interrupted"]


@pytest.mark.django_db(transaction=True)
def test_async_timeout_interrupts_the_await_and_fails_each_attempt(start_worker, tmp_path):
    log = tmp_path / "timeout.log"
    eid = conductor.invoke("async-timeout", {"log": str(log)})
    start_worker()
    poll(status_is(eid, "failed"), timeout=20, message="failed after two attempts")
    row = conductor.get(eid)
    assert row.last_error == "Timed out after 0.5 seconds"
    assert row.attempts == 2
    assert lines(log) == ["attempt 1", "interrupted timeout", "attempt 2", "interrupted timeout"]
    assert not Step.objects.filter(execution_id=eid).exists()


# --- recovery (kill -9) and shutdown (SIGTERM) ------------------------------------


@pytest.mark.django_db(transaction=True)
def test_async_kill_9_mid_step_is_recovered_without_rerunning_finished_steps(
        start_worker, tmp_path):
    log = tmp_path / "hang.log"
    eid = conductor.invoke("async-hang-in-step", {"log": str(log)})
    fast = {"CONDUCTOR_TEST_DEAD_AFTER": "2"}
    first = start_worker(env=fast)
    poll(started(log, "b 1"), message="step b running on attempt 1")
    first.proc.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    start_worker(env=fast)
    poll(status_is(eid, "completed"), timeout=30, message="recovered and completed")
    row = conductor.get(eid)
    assert (row.result, row.attempts) == ("B", 2)
    entries = lines(log)
    assert entries.count("a 1") == 1 and not any(e.startswith("a 2") for e in entries)
    assert [e.split()[:2] for e in entries if e.startswith("b")] == [["b", "1"], ["b", "2"]]


@pytest.mark.django_db(transaction=True)
def test_async_execution_that_keeps_killing_its_worker_fails_after_max_attempts(
        start_worker, tmp_path):
    log = tmp_path / "kill.log"
    eid = conductor.invoke("async-kill-own-worker", {"log": str(log)})
    fast = {"CONDUCTOR_TEST_DEAD_AFTER": "2"}
    for _ in range(2):
        worker = start_worker(env=fast)
        assert worker.wait(timeout=30) == -signal.SIGKILL
    start_worker(env=fast)
    poll(status_is(eid, "failed"), timeout=30)
    assert "worker" in conductor.get(eid).last_error.lower()
    assert lines(log) == ["attempt 1", "attempt 2"]


@pytest.mark.django_db(transaction=True)
def test_async_sigterm_releases_at_a_step_boundary_and_resumes_elsewhere(
        start_worker, tmp_path):
    log = tmp_path / "steady.log"
    eid = conductor.invoke("async-steady-steps", {"log": str(log), "count": 6, "pause": 0.3})
    first = start_worker()
    poll(started(log, "step-1"), message="step 1 running")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    row = conductor.get(eid)
    assert row.status == "pending" and row.locked_by is None
    done_before = Step.objects.filter(execution_id=eid).count()
    assert 1 <= done_before < 6
    start_worker()
    poll(status_is(eid, "completed"), timeout=30)
    names = [line.split()[0] for line in lines(log)]
    assert names == [f"step-{n}" for n in range(6)]  # every step ran exactly once
    assert conductor.get(eid).attempts == 1  # a release is not a new attempt


@pytest.mark.django_db(transaction=True)
def test_async_shutdown_timeout_interrupts_and_releases_a_handler(start_worker, tmp_path):
    log = tmp_path / "sleepy.log"
    eid = conductor.invoke("async-sleepy", {"log": str(log), "seconds": 60})
    worker = start_worker("--shutdown-timeout", "1")
    poll(started(log))
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    row = conductor.get(eid)
    assert (row.status, row.locked_by) == ("pending", None)
    assert "done" not in lines(log)


@pytest.mark.django_db(transaction=True)
def test_async_cancel_reaches_an_execution_during_shutdown(start_worker, tmp_path):
    log = tmp_path / "forever.log"
    eid = conductor.invoke("async-await-forever", {"log": str(log)})
    worker = start_worker("--shutdown-timeout", "20")
    poll(started(log))
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert conductor.cancel(eid, "During shutdown") is True
    poll(status_is(eid, "cancelled"), timeout=10)
    assert worker.wait(timeout=20) == 0
    assert conductor.get(eid).last_error == "During shutdown"


@pytest.mark.django_db(transaction=True)
def test_async_signal_is_aborted_with_reason_and_checkpoint_raises(start_worker, tmp_path):
    log = tmp_path / "signal.log"
    eid = conductor.invoke("async-signal-checkpoint", {"log": str(log)})
    start_worker()
    poll(started(log))
    assert conductor.cancel(eid) is True
    poll(status_is(eid, "cancelled"), timeout=10)
    assert lines(log) == ["started", "aborted True:cancelled"]
    assert conductor.get(eid).last_error == "Cancelled by user"


@pytest.mark.django_db(transaction=True)
def test_async_raising_after_cancel_ends_cancelled_keeping_the_reason(start_worker, tmp_path):
    log = tmp_path / "raise.log"
    eid = conductor.invoke("async-raise-after-cancel", {"log": str(log)})
    start_worker()
    poll(started(log))
    conductor.cancel(eid, "Abort")
    poll(status_is(eid, "cancelled", "failed", "pending"), timeout=10)
    row = conductor.get(eid)
    assert (row.status, row.last_error, row.attempts) == ("cancelled", "Abort", 1)


@pytest.mark.django_db(transaction=True)
def test_async_second_cancel_returns_false_and_keeps_the_reason(start_worker, tmp_path):
    log = tmp_path / "twice.log"
    eid = conductor.invoke("async-await-forever", {"log": str(log)})
    start_worker()
    poll(started(log))
    assert conductor.cancel(eid, "first") is True
    assert conductor.cancel(eid, "second") is False
    poll(status_is(eid, "cancelled"), timeout=10)
    assert conductor.get(eid).last_error == "first"
    assert lines(log)[1].endswith(" cancelled")


@pytest.mark.django_db(transaction=True)
def test_async_cancel_reaches_an_awaiting_handler_on_postgres_without_polling(
        start_worker, tmp_path, is_postgres):
    if not is_postgres:
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    log = tmp_path / "notify.log"
    eid = conductor.invoke("async-await-forever", {"log": str(log)})
    # A cancel poll every 10 minutes: only the NOTIFY can deliver the cancel in time.
    start_worker(env={"CONDUCTOR_TEST_CANCEL_POLL": "600"})
    poll(started(log))
    conductor.cancel(eid, "By NOTIFY")
    poll(status_is(eid, "cancelled"), timeout=10, message="cancel delivered by NOTIFY")
    assert conductor.get(eid).last_error == "By NOTIFY"


@pytest.mark.django_db(transaction=True)
def test_async_sigint_releases_at_a_step_boundary(start_worker, tmp_path):
    log = tmp_path / "sigint.log"
    eid = conductor.invoke("async-steady-steps", {"log": str(log), "count": 4, "pause": 0.3})
    first = start_worker()
    poll(started(log, "step-0"))
    first.signal(signal.SIGINT)
    assert first.wait(timeout=20) == 0
    assert conductor.get(eid).status == "pending"
    start_worker()
    poll(status_is(eid, "completed"), timeout=30)
    assert [line.split()[0] for line in lines(log)] == [f"step-{n}" for n in range(4)]


@pytest.mark.django_db(transaction=True)
def test_async_handlers_survive_database_faults(start_worker, tmp_path):
    """The loop's database threads reconnect after their sessions are killed (or SQLite
    stays locked): every step is stored once and the execution completes."""
    from django.db import connection

    from tests.chaos_support import terminate_other_sessions
    from tests.test_resilience import _hold_sqlite_lock

    log = tmp_path / "faults.log"
    eid = conductor.invoke("async-steady-steps", {"log": str(log), "count": 8, "pause": 0.25})
    worker = start_worker(env={"CONDUCTOR_TEST_SQLITE_TIMEOUT": "0.2",
                               "CONDUCTOR_LOG_LEVEL": "WARNING"})
    poll(started(log, "step-2"), message="step 2 to start")
    for round_ in range(2):
        if connection.vendor != "sqlite":
            assert terminate_other_sessions() >= 2
            time.sleep(0.5)
        else:
            _hold_sqlite_lock(1.5)
        later = conductor.invoke("async-ping", {"round": round_})
        assert conductor.wait(later, timeout=30) == {"round": round_}
    assert conductor.wait(eid, timeout=60) is not None
    assert worker.proc.poll() is None
    assert Step.objects.filter(execution_id=eid).count() == 8
    assert {line.split()[0] for line in lines(log)} == {f"step-{n}" for n in range(8)}
    assert not Execution.objects.filter(status="running").exists()


@pytest.mark.django_db
def test_bad_async_concurrency_is_a_command_error():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="--async-concurrency must be at least 0"):
        call_command("conductor_worker", "--async-concurrency", "-1")


@pytest.mark.django_db(transaction=True)
def test_async_handlers_with_every_engine(engine, tmp_path):
    """Steps, a timeout and a cancel of async handlers, run by a conductor_worker or, with
    the django-q2 engine, in a qcluster process (on an event loop of its own)."""
    engine.start("--concurrency", "2")
    echo = conductor.invoke("async-echo", {"n": 3})
    timed = conductor.invoke("async-timeout", {"log": str(tmp_path / "timeout.log")})
    log = tmp_path / "forever.log"
    forever = conductor.invoke("async-await-forever", {"log": str(log)})
    poll(started(log), 40, message=f"handler start ({engine.name})")
    assert conductor.cancel(forever, "stop it")
    final = ("completed", "failed", "cancelled")
    for eid in (echo, timed, forever):
        poll(status_is(eid, *final), 40, message=f"{eid} to finish ({engine.name})")
    row = conductor.get(echo)
    assert (row.status, row.result["first"]) == ("completed", {"fetched": {"n": 3}})
    row = conductor.get(timed)
    assert (row.status, row.last_error, row.attempts) == (
        "failed", "Timed out after 0.5 seconds", 2)
    row = conductor.get(forever)
    assert (row.status, row.last_error) == ("cancelled", "stop it")
    assert lines(log)[1].endswith(" cancelled")


@pytest.mark.django_db(transaction=True)
def test_async_worker_frozen_past_dead_after_writes_nothing_more(start_worker, tmp_path):
    """Fencing: a worker frozen (SIGSTOP) inside an awaiting step past WORKER_DEAD_AFTER
    loses the execution to another worker; woken up, it runs no further step function of
    it and writes no step, result or status for it."""
    import os

    from tests.test_chaos import _freeze_outside_sqlite_writes

    log = tmp_path / "frozen.log"
    eid = conductor.invoke("async-steady-steps", {"log": str(log), "count": 6, "pause": 0.4})
    fast = {"CONDUCTOR_TEST_DEAD_AFTER": "2", "CONDUCTOR_LOG_LEVEL": "INFO"}
    first = start_worker(env=fast)
    poll(started(log, "step-1"), message="step 1 running")
    time.sleep(0.1)  # inside the step's await
    assert _freeze_outside_sqlite_writes(first.pid)
    frozen_lines = len(lines(log))
    try:
        second = start_worker(env=fast)
        try:
            poll(status_is(eid, "completed"), timeout=40, message="the other worker to finish it")
        except AssertionError as exc:  # say what the other worker was doing
            raise AssertionError(f"{exc}\n--- the other worker's log ---\n"
                                 f"{second.output()[-4000:]}") from None
        done = conductor.get(eid)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    poll(lambda: f"finish async-steady-steps {eid}" in first.output(), timeout=20,
         message="the woken worker's handler to end")
    row = conductor.get(eid)
    assert (row.status, row.result, row.attempts, row.finished_at) == (
        "completed", done.result, 2, done.finished_at)
    assert Step.objects.filter(execution_id=eid).count() == 6
    after_wake = [line for line in lines(log)[frozen_lines:] if line.endswith(f" {first.pid}")]
    assert after_wake == []  # no step function started by the woken worker
    assert "no longer holds it" in first.output()
    assert first.proc.poll() is None  # it carries on with new claims
