"""Exactly once: leases that fence every write, exact cancel reasons, atomic steps,
``drain()`` parity with the worker, and SQLite writes that take the lock up front.

The multi-process fault scenarios (kill -9, SIGSTOP, cancel storms, several workers)
are in tests/test_chaos.py.
"""

import logging
import time
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections
from django.utils import timezone

import conductor_django as conductor
from conductor_django import checks
from conductor_django.exceptions import LeaseLost
from conductor_django.models import Execution, ExecutionLog, Step
from conductor_django.models import Worker as WorkerRow
from conductor_django.runtime import Runtime, logs
from conductor_django.runtime.context import Context
from conductor_django.state import Claimed
from conductor_django.store.transactions import write_transaction
from conductor_django.store.vendor import dialect
from conductor_django.testing import drain
from tests.conftest import poll
from tests.testapp.models import Mark

S = Execution.Status


def _claim(worker_id: uuid.UUID) -> Claimed:
    [claimed] = Execution.objects.claim(worker_id, None, 1, "default")
    return claimed


def _presume_dead(worker_id: uuid.UUID) -> None:
    """What other workers do to a worker whose heartbeat stopped: recover its work."""
    WorkerRow.objects.filter(pk=worker_id).update(
        last_heartbeat=timezone.now() - timezone.timedelta(seconds=120))
    assert Execution.objects.recover(30, "default") >= 1


def _running_echo() -> tuple[WorkerRow, Runtime, str, Context]:
    """An ``echo`` execution claimed by a registered worker, and its handler's ``ctx``."""
    row = _worker_row()
    runtime = Runtime(worker_id=row.pk, dead_after=30)
    eid = conductor.invoke("echo")
    claimed = _claim(row.pk)
    ctx = Context(execution_id=eid, task_name="echo", queue="default", attempt=1,
                  runtime=runtime, lease=claimed.lease)
    return row, runtime, eid, ctx


def _worker_row() -> WorkerRow:
    row = WorkerRow(id=uuid.uuid4(), hostname="test", pid=1)
    WorkerRow.objects.register(row, "default")
    return row


# --- the lease fences every write ----------------------------------------------------


@pytest.mark.django_db
def test_every_claim_takes_a_new_lease_and_only_its_holder_writes():
    eid = conductor.invoke("echo")
    a, b = _worker_row(), _worker_row()
    first = _claim(a.pk)
    _presume_dead(a.pk)
    second = _claim(b.pk)
    assert second.id == eid and second.lease > first.lease
    now = timezone.now()
    # The presumed-dead worker writes nothing more: no step, log, outcome or release.
    with pytest.raises(LeaseLost):
        Step.objects.remember(eid, "s", 1, now, "default", worker_id=a.pk, lease=first.lease)
    assert Execution.objects.complete(eid, a.pk, first.lease, "stale", "default") == 0
    assert Execution.objects.fail(eid, a.pk, first.lease, "stale", None, "default") == 0
    assert Execution.objects.release(eid, a.pk, first.lease, now, "default") == 0
    assert Execution.objects.finish_cancelled(eid, a.pk, first.lease, "stale", "default") == 0
    buffer = logs.LogBuffer(10, logging.INFO)
    buffer.add(logging.INFO, "t", "stale line")
    assert logs.store(eid, 1, buffer, 10, "default", holder=(a.pk, first.lease)) == 0
    assert not Step.objects.filter(execution_id=eid).exists()
    assert not ExecutionLog.objects.filter(execution_id=eid).exists()
    # The holder of the new lease writes.
    assert Step.objects.remember(eid, "s", 2, now, "default", worker_id=b.pk,
                             lease=second.lease) == 2
    assert Execution.objects.complete(eid, b.pk, second.lease, "fresh", "default") == 1
    row = conductor.get(eid)
    assert (row.status, row.result) == ("completed", "fresh")


@pytest.mark.django_db
def test_a_worker_that_claims_its_lost_execution_again_fences_its_old_attempt():
    eid = conductor.invoke("echo")
    a = _worker_row()
    old = _claim(a.pk)
    _presume_dead(a.pk)
    WorkerRow.objects.register(a, "default")  # it wakes up and registers again
    new = _claim(a.pk)
    assert new.id == eid and new.lease != old.lease
    assert Execution.objects.complete(eid, a.pk, old.lease, "old attempt", "default") == 0
    assert Execution.objects.complete(eid, a.pk, new.lease, "new attempt", "default") == 1
    assert conductor.get(eid).result == "new attempt"


@pytest.mark.django_db
def test_a_heartbeat_that_finds_its_row_gone_stops_everything_in_flight():
    row, runtime, eid, ctx = _running_echo()
    runtime.inflight[eid] = ctx
    assert runtime.heartbeat(row) is True
    assert runtime.running_here() == [eid]  # never claimed again while its handler runs
    _presume_dead(row.pk)
    row.last_heartbeat -= timezone.timedelta(seconds=120)  # the instance's value is old too
    assert runtime.heartbeat(row) is False  # presumed dead: it gives up what it ran
    assert (ctx.signal.aborted, ctx.signal.reason) == (True, "lost")
    again = WorkerRow.objects.get(pk=row.pk)  # registered again, with a fresh heartbeat
    assert again.last_heartbeat > timezone.now() - timezone.timedelta(seconds=5)
    assert runtime.running_here() == [eid]  # its stale handler still runs: not claimed
    ran = []
    with pytest.raises(LeaseLost):
        ctx.step("after", lambda: ran.append(1))
    assert ran == []


@pytest.mark.django_db
def test_a_stale_heartbeat_makes_each_boundary_ask_the_database():
    row, runtime, eid, ctx = _running_echo()
    assert ctx.step("one", lambda: 1) == 1  # fresh: no question asked
    runtime.confirmed = time.monotonic() - 60  # frozen for a minute
    assert ctx.step("two", lambda: 2) == 2  # stale but still held: the database says so
    _presume_dead(row.pk)
    ran = []
    with pytest.raises(LeaseLost):
        ctx.step("three", lambda: ran.append(3))
    assert ran == [] and ctx.signal.reason == "lost"
    assert list(Step.objects.filter(execution_id=eid).values_list("name", flat=True)) == [
        "one", "two"]


@pytest.mark.django_db
def test_a_suspect_execution_is_not_claimed_again_by_its_worker():
    row = _worker_row()
    eid = conductor.invoke("echo")
    other = conductor.invoke("echo")
    assert Execution.objects.claim(row.pk, None, 5, "default", exclude=[eid])[0].id == other
    assert Execution.objects.claim(row.pk, None, 5, "default") [0].id == eid


# --- cancel reasons reach the handler exactly, on every delivery path ------------------


def test_the_handler_sees_the_exact_cancel_reason(start_worker):
    start_worker("--concurrency", "6")
    reasons = {f"r{n}": f"Customer {n} left: reason #{n} ✓" for n in range(4)}
    long_reason = "x" * 9000  # longer than a NOTIFY payload: read from the row
    reasons["long"] = long_reason
    eids = {key: conductor.invoke("report-cancel-reason", {"key": key}) for key in reasons}
    for key in reasons:
        poll(lambda key=key: Mark.count(f"{key}:started"), message=f"{key} started")
    for key, eid in eids.items():
        assert conductor.cancel(eid, reasons[key]) is True
    for key, eid in eids.items():
        poll(lambda eid=eid: conductor.get(eid).status == S.CANCELLED, message="cancelled")
        row = conductor.get(eid)
        assert row.last_error == reasons[key]
        assert row.result == {"reason": reasons[key], "signal": reasons[key]}


# --- atomic steps ------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_atomic_step_commits_its_writes_with_its_record_or_neither():
    eid = conductor.invoke("atomic-order", {"key": "o", "fail_after_write": True})
    drain()  # attempt 1: the write and the step roll back together; attempt 2 commits
    row = conductor.get(eid)
    assert row.status == S.COMPLETED and row.attempts == 2
    assert list(Mark.objects.filter(key="o:order").values_list("value", flat=True)) == ["2"]
    assert row.result == {"order": {"attempt": 2}, "again": {"attempt": 2}}
    assert list(Step.objects.filter(execution_id=eid).values_list("name", flat=True)) == [
        "create-order"]


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_an_atomic_step_refuses_to_write_to_another_database():
    eid = conductor.invoke("atomic-elsewhere", {"key": "e"})
    drain()
    row = conductor.get(eid)
    assert row.status == S.FAILED
    assert "ImproperlyConfigured" in row.last_error or "testapp.Mark" in row.last_error
    assert "database 'other'" in row.last_error
    assert Mark.count("e:here") == 0  # rolled back with the step
    assert not Step.objects.filter(execution_id=eid).exists()


@pytest.mark.django_db(databases=["default", "other"])
def test_only_database_names_the_model():
    from conductor_django.runtime.atomic import only_database

    with only_database("default", "atomic step 'x'"), pytest.raises(
            ImproperlyConfigured, match=r"atomic step 'x' writes to testapp\.Mark"):
        connections["other"].cursor().execute(
            'INSERT INTO "testapp_mark" ("key", "value", "created") VALUES (%s, %s, %s)',
            ["k", "v", "2026-01-01"])


def test_a_step_that_returns_after_its_cancel_is_not_memoized(start_worker):
    start_worker()
    eid = conductor.invoke("step-sees-cancel", {"key": "sc"})
    poll(lambda: Mark.count("sc:work-started"), message="the step started")
    assert conductor.cancel(eid, "stop now") is True
    poll(lambda: conductor.get(eid).status == S.CANCELLED, message="cancelled")
    assert not Step.objects.filter(execution_id=eid, name="long").exists()
    assert Mark.count("sc:after-step") == 0
    assert conductor.get(eid).last_error == "stop now"


# --- testing.drain() behaves as the worker does ------------------------------------------


@pytest.mark.django_db
def test_drain_aborts_the_signal_at_the_deadline():
    eid = conductor.invoke("timeout-wakes-wait", {"key": "t"})
    drain()
    woke, reason, seconds = Mark.objects.get(key="t:woke").value.split(":")
    assert (woke, reason) == ("True", "timeout")
    assert 0.3 <= float(seconds) < 3  # woken by the deadline, not by the 10 s wait
    assert conductor.get(eid).last_error == "Timed out after 0.4 seconds"


# --- SQLite: conductor's transactions take the write lock up front -------------------


@pytest.mark.django_db(transaction=True)
def test_sqlite_transactions_begin_immediate_whatever_the_settings():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's transaction modes")
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    connection.ensure_connection()
    mode = connection.transaction_mode
    connection.transaction_mode = None  # what startproject's settings give
    try:
        with connection.execute_wrapper(record), write_transaction("default"):
            Mark.add("immediate")
        assert statements[0] == "BEGIN IMMEDIATE"
        assert connection.transaction_mode is None  # the connection's own mode is kept
    finally:
        connection.transaction_mode = mode


def test_system_check_recommends_wal_and_immediate_on_sqlite():
    default = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}
    [warning] = checks.sqlite_advice("default", default)  # what startproject writes
    assert warning.id == "conductor_django.W001"
    assert "journal_mode=WAL" in warning.msg and "IMMEDIATE" in warning.msg
    tuned = {**default, "OPTIONS": {"transaction_mode": "IMMEDIATE",
                                    "init_command": "PRAGMA journal_mode = WAL;"}}
    assert checks.sqlite_advice("default", tuned) == []
    assert checks.sqlite_advice("default", {"ENGINE": "django.db.backends.postgresql"}) == []
    assert checks.check_sqlite_settings() == []  # the test settings follow the advice


# --- a busy or blocked worker loop does not make a live worker look dead -----------------


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_beats_on_its_own_thread():
    from conductor_django.runtime.housekeeper import Heartbeat

    row = _worker_row()
    WorkerRow.objects.filter(pk=row.pk).update(
        last_heartbeat=timezone.now() - timezone.timedelta(seconds=60))
    runtime = Runtime(worker_id=row.pk, dead_after=30)
    beat = Heartbeat(runtime, row, interval=0.05)
    beat.start()  # the caller's thread (the worker loop) does nothing meanwhile
    try:
        poll(lambda: WorkerRow.objects.get(pk=row.pk).last_heartbeat
             > timezone.now() - timezone.timedelta(seconds=5), message="a heartbeat")
    finally:
        beat.stop()
        beat.join(5)
    assert runtime.lease_fresh()


@pytest.mark.django_db(transaction=True)
def test_worker_sessions_end_transactions_left_idle_past_dead_after():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's idle_in_transaction_session_timeout")
    if connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS"):
        pytest.skip("a session setting: nothing is set on a transaction-pooled connection "
                    "(the pooler's idle_transaction_timeout does this there)")
    import threading

    from conductor_django.runtime.sessions import enroll

    seen: list[str] = []

    def worker_thread() -> None:
        enroll("default", 7.5)
        try:
            with connections["default"].cursor() as cursor:  # a new connection: guarded too
                cursor.execute("SHOW idle_in_transaction_session_timeout")
                seen.append(cursor.fetchone()[0])
        finally:
            connections["default"].close()

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(10)
    assert seen == ["7500ms"]
    with connection.cursor() as cursor:  # the test's own session is left alone
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone()[0] == "0"


@pytest.mark.django_db(transaction=True)
def test_recovery_skips_a_row_locked_by_a_frozen_transaction_instead_of_waiting():
    if connection.vendor == "sqlite":
        pytest.skip("row locks: SQLite has one writer")
    held, free = conductor.invoke("echo"), conductor.invoke("echo")
    dead = _worker_row()
    assert {c.id for c in Execution.objects.claim(dead.pk, None, 2, "default")} == {held, free}
    frozen = connections.create_connection("default")  # a second session, same database
    frozen.set_autocommit(False)
    try:  # a frozen worker's open transaction (e.g. storing log lines) holds the row
        sql = dialect(frozen)
        with frozen.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {Execution._meta.db_table} WHERE id = %s"
                           f"{sql.share_lock}", [sql.uuid_param(frozen, held)])
            assert cursor.fetchone() == (1,)
        WorkerRow.objects.filter(pk=dead.pk).update(
            last_heartbeat=timezone.now() - timezone.timedelta(seconds=120))
        began = time.monotonic()
        assert Execution.objects.recover(30, "default") == 1  # the free one, at once
        assert time.monotonic() - began < 5
        assert conductor.get(held).status == "running"
    finally:
        frozen.close()  # the frozen transaction ends (or its session is ended)
    # Its worker's row is gone: the execution is an orphan once its lock is old enough.
    Execution.objects.filter(pk=held).update(
        locked_at=timezone.now() - timezone.timedelta(seconds=120))
    assert Execution.objects.recover(30, "default") == 1
    assert conductor.get(held).status == "pending"


@pytest.mark.django_db
def test_a_worker_presumed_dead_hands_back_what_nobody_recovered():
    row = _worker_row()
    eid = conductor.invoke("echo")
    claimed = _claim(row.pk)
    assert Execution.objects.give_up(eid, row.pk, claimed.lease + 1, 30, "default") == 0
    assert Execution.objects.give_up(eid, row.pk, claimed.lease, 30, "default") == 1
    ex = conductor.get(eid)
    assert (ex.status, ex.locked_by, ex.resume) == ("pending", None, False)
    assert ex.last_error.startswith("Worker lost")


@pytest.mark.django_db(databases=["default", "other"])
def test_sqlite_worker_sessions_wait_for_the_write_lock_unless_the_project_says_otherwise():
    from conductor_django.store.vendor import dialect

    other = connections["other"]  # SQLite with startproject's OPTIONS: none
    dialect(other).guard_worker_session(other, 30)
    with other.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 30000
    if connection.vendor == "sqlite":  # the test settings give a timeout: it is kept
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            before = cursor.fetchone()[0]
        dialect(connection).guard_worker_session(connection, 300)
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] == before
