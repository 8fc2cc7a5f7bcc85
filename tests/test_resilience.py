"""Timeouts, crash recovery, graceful shutdown and database faults, with real workers."""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest
from django.db import OperationalError, connection

import conductor_django as conductor
from conductor_django.models import Execution, Step
from conductor_django.models import Worker as WorkerRow
from conductor_django.runtime import retry
from conductor_django.state import ExecutionQuerySet
from conductor_django.testing import drain
from tests.chaos_support import other_sessions_idle, terminate_other_sessions
from tests.conftest import poll
from tests.test_chaos import _freeze_outside_sqlite_writes
from tests.testapp.models import Mark

S = Execution.Status
DEAD_AFTER = {"CONDUCTOR_TEST_DEAD_AFTER": "2"}


def row(eid: str) -> Execution:
    return Execution.objects.get(pk=eid)


def marks(key: str) -> list[str]:
    return list(Mark.objects.filter(key=key).order_by("id").values_list("value", flat=True))


# --- timeouts ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_timeout_aborts_signal_and_fails_each_attempt(start_worker):
    eid = conductor.invoke("timeout-reason", {"key": "to"})
    start_worker()
    with pytest.raises(conductor.ExecutionFailed, match="^Timed out after 0.5 seconds$"):
        conductor.wait(eid, timeout=30)
    ex = row(eid)
    assert ex.attempts == 2 and ex.status == S.FAILED and not ex.cancelled
    assert marks("to:signal") == ["True:timeout:1", "True:timeout:2"]  # retried like a failure
    assert Mark.count("to:step-ran") == 0  # the boundary raised before the step
    assert not Step.objects.filter(execution_id=eid).exists()


# --- crash recovery -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_kill_9_mid_step_is_recovered_without_rerunning_finished_steps(start_worker):
    eid = conductor.invoke("hang-in-step", {"key": "k"})
    first = start_worker(env=DEAD_AFTER)
    poll(lambda: Mark.count("k:b"), message="step b to start")
    first.proc.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert row(eid).status == S.RUNNING  # held by a dead worker
    start_worker(env=DEAD_AFTER)
    assert conductor.wait(eid, timeout=30) == "B"
    ex = row(eid)
    assert ex.attempts == 2  # the recovery counted as an attempt
    assert Mark.count("k:a") == 1  # finished step not re-run
    assert marks("k:b") == ["1", "2"]  # the interrupted step ran again
    assert not WorkerRow.objects.filter(pid=first.pid).exists()  # dead worker removed


@pytest.mark.django_db(transaction=True)
def test_execution_that_keeps_killing_its_worker_fails_after_max_attempts(start_worker):
    eid = conductor.invoke("kill-own-worker", {"key": "kk"})
    for attempt in (1, 2):
        worker = start_worker(env=DEAD_AFTER)
        poll(lambda n=attempt: Mark.count("kk:attempt") == n, message=f"attempt {attempt}")
        assert worker.wait(timeout=20) == -signal.SIGKILL
    start_worker(env=DEAD_AFTER)
    poll(lambda: row(eid).status == S.FAILED, timeout=30, message="the execution to fail")
    ex = row(eid)
    assert ex.attempts == 2 and ex.finished_at is not None and ex.locked_by is None
    assert ex.last_error == "Worker lost (no heartbeat for 2 s) during attempt 2 of 2"
    assert marks("kk:attempt") == ["1", "2"]


# --- graceful shutdown ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_releases_at_a_step_boundary_and_resumes_elsewhere(start_worker, sig):
    eid = conductor.invoke("steady-steps", {"key": "g", "count": 6, "pause": 0.3})
    first = start_worker("--shutdown-timeout", "20")
    poll(lambda: Mark.count("g:step-1"), message="step 1 to start")
    first.signal(sig)
    assert first.wait(timeout=25) == 0
    ex = row(eid)
    assert ex.status == S.PENDING and ex.locked_by is None and ex.resume
    assert ex.attempts == 1
    done = Step.objects.filter(execution_id=eid).count()
    assert 2 <= done < 6  # stopped at a boundary, after the step in progress finished
    start_worker()
    assert conductor.wait(eid, timeout=30) == {"attempt": 1}  # resumed: not a new attempt
    assert row(eid).attempts == 1
    for n in range(6):
        assert marks(f"g:step-{n}") == ["1"]  # every step ran exactly once


@pytest.mark.django_db(transaction=True)
def test_shutdown_timeout_releases_a_handler_that_does_not_stop(start_worker):
    eid = conductor.invoke("sleepy", {"key": "z", "seconds": 60})
    worker = start_worker("--shutdown-timeout", "1")
    poll(lambda: Mark.count("z:started"), message="the handler to start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    ex = row(eid)
    assert ex.status == S.PENDING and ex.locked_by is None and ex.attempts == 1
    assert "released 1 executions still running at shutdown" in worker.output()


@pytest.mark.django_db(transaction=True)
def test_cancellation_reaches_executions_during_shutdown(start_worker):
    eid = conductor.invoke("wait-for-signal", {"key": "sc", "seconds": 60})
    worker = start_worker("--shutdown-timeout", "30", env={"CONDUCTOR_LOG_LEVEL": "INFO"})
    poll(lambda: Mark.count("sc:started"), message="the handler to start")
    worker.signal(signal.SIGTERM)
    poll(lambda: "shutting down" in worker.output(), message="shutdown to begin")
    assert worker.proc.poll() is None  # still waiting for the handler
    assert conductor.cancel(eid, "stop during shutdown")
    assert worker.wait(timeout=25) == 0
    ex = row(eid)
    assert ex.status == S.CANCELLED and ex.last_error == "stop during shutdown"
    assert marks("sc:aborted") == ["True:cancelled"]
    assert Mark.count("sc:after-checkpoint") == 0


# --- database faults --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_batch_outcome_survives_a_database_fault(monkeypatch):
    """A batch's final writes are retried across a database fault, as a single
    execution's are: the handler ran, its results must not be lost."""
    ids = [conductor.invoke("batched", n) for n in range(3)]
    real = ExecutionQuerySet.complete
    faults = []

    def flaky(self, *args, **kwargs):
        if not faults:
            faults.append(args[0])
            raise OperationalError("server closed the connection unexpectedly")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ExecutionQuerySet, "complete", flaky)
    monkeypatch.setattr(retry, "PAUSES", (0.0,) * len(retry.PAUSES))
    drain()
    assert faults
    assert [Execution.objects.get(pk=eid).status for eid in ids] == [S.COMPLETED] * 3
    assert [Execution.objects.get(pk=eid).result for eid in ids] == [0, 2, 4]


def _hold_sqlite_lock(seconds: float) -> None:
    """Hold the write lock of the SQLite file far longer than the worker waits for it."""
    db = sqlite3.connect(connection.settings_dict["NAME"], timeout=30, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    time.sleep(seconds)
    db.execute("ROLLBACK")
    db.close()


@pytest.mark.django_db(transaction=True)
def test_worker_survives_database_faults(start_worker):
    first = conductor.invoke("steady-steps", {"key": "db", "count": 8, "pause": 0.25})
    # a short --shutdown-timeout: however a fault left a handler thread, SIGTERM ends it
    worker = start_worker("--concurrency", "3", "--shutdown-timeout", "5",
                          env={"CONDUCTOR_TEST_SQLITE_TIMEOUT": "0.2",
                               "CONDUCTOR_LOG_LEVEL": "INFO"})
    poll(lambda: Mark.count("db:step-2"), message="step 2 to start")
    for round_ in range(2):
        if connection.vendor != "sqlite":
            assert terminate_other_sessions() >= 2  # the main loop and the handler
            time.sleep(0.5)
        else:
            _hold_sqlite_lock(1.5)
        later = conductor.invoke("echo", {"round": round_})
        assert conductor.wait(later, timeout=30)["payload"] == {"round": round_}
    assert conductor.wait(first, timeout=60) is not None
    assert worker.proc.poll() is None  # it carried on
    assert "database error" in worker.output()
    assert Step.objects.filter(execution_id=first).count() == 8
    for n in range(8):
        assert Mark.count(f"db:step-{n}") >= 1
    assert not Execution.objects.filter(status=S.RUNNING).exists()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0


@pytest.mark.django_db(transaction=True)
def test_a_claim_whose_reply_was_lost_is_released_and_runs_once(start_worker):
    """A claim that committed while its reply never reached the worker (the connection was
    cut in between) leaves a row that says the worker runs it, with no thread running it.
    The worker is alive, so nobody recovers it: the worker itself gives it back."""
    worker = start_worker("--concurrency", "2", env={"CONDUCTOR_TEST_DEAD_AFTER": "4"})
    poll(lambda: WorkerRow.objects.exists(), message="the worker to register")
    wid = WorkerRow.objects.get().id
    # frozen for far less than WORKER_DEAD_AFTER, outside an SQLite write (it would hold
    # the file's lock), and with no statement of its own left running in the server (its
    # last poll could otherwise claim the row invoked below)
    assert _freeze_outside_sqlite_writes(worker.pid)
    try:
        poll(other_sessions_idle, message="the frozen worker's last statement to end")
        eid = conductor.invoke("record-run", {"n": "lost-reply"})
        # the claim, made for the worker here, whose reply the worker never sees
        claimed = Execution.objects.claim(wid, None, 1, "default")
        assert [c.id for c in claimed] == [eid]
        assert row(eid).status == S.RUNNING and row(eid).locked_by == wid
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert conductor.wait(eid, timeout=30) is None  # released, claimed again, run
    assert Mark.count("run:lost-reply") == 1
    assert row(eid).attempts == 1  # given back unstarted: not an attempt of its own
    assert "released 1 executions held by this worker but not running here" in worker.output()
    assert worker.proc.poll() is None


class _DeadlockDetected(Exception):
    """What psycopg raises for SQLSTATE 40P01 (Django wraps it as OperationalError)."""

    sqlstate = "40P01"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("shape", ["mysql", "postgresql"])
def test_a_transaction_rolled_back_to_break_a_deadlock_runs_again(shape):
    """InnoDB may pick even a single-row UPDATE (a cancel, say) as a deadlock's victim
    and asks the caller to run the transaction again; so does PostgreSQL's 40P01."""
    from conductor_django.store.transactions import retry_locked

    if connection.vendor == "sqlite":
        pytest.skip("SQLite has one writer: it reports busy, not deadlocks")
    calls = []

    def once_a_victim():
        calls.append(1)
        if len(calls) == 1:
            if shape == "mysql":
                raise OperationalError(1213, "Deadlock found when trying to get lock; "
                                             "try restarting transaction")
            raise OperationalError("deadlock detected") from _DeadlockDetected()
        return "done"

    assert retry_locked(once_a_victim, "default") == "done"
    assert len(calls) == 2
    with pytest.raises(OperationalError, match="Lock wait timeout"):
        retry_locked(lambda: (_ for _ in ()).throw(OperationalError(1205, "Lock wait timeout")),
                     "default")
