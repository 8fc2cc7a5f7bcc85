"""The claim/lock queries and every write the worker makes to an execution it holds.

Claiming is one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... LIMIT n)) RETURNING``
statement (``id IN (SELECT ...)`` on SQLite): on PostgreSQL the inner select takes
``FOR UPDATE SKIP LOCKED`` so concurrent workers on any number of machines never claim
the same row and never wait for each other; on SQLite a single statement holds the
database write lock, which makes it safe for several worker processes on one machine.

Every claim takes a new fencing token (``lease = lease + 1``), and every write after
the claim - steps, log lines, the outcome - is fenced by ``locked_by = <this worker>``,
``lease = <the token of this claim>`` and ``status = 'running'``: a worker whose
executions were recovered after it was presumed dead (frozen, paused, cut off) cannot
write anything for them any more, even if it claimed the same execution again since.
A row whose cancellation was requested (``cancelled``) always ends ``cancelled``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    Exists,
    F,
    Q,
    QuerySet,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from .definitions.registry import ClaimRules, claim_rules
from .exceptions import DEFAULT_REASON, LeaseLost
from .models import Execution, Step, Worker
from .prepared import execute_prepared
from .transactions import write_transaction

S = Execution.Status
TABLE = Execution._meta.db_table


@dataclass(slots=True)
class Claimed:
    """What the runner needs of a claimed execution."""

    id: str
    task_name: str
    queue: str
    payload: Any
    attempts: int
    max_attempts: int
    priority: int
    fresh: bool  # first start ever: no step can exist yet
    event_name: str
    schedule_name: str | None
    parent_id: str | None
    lease: int = 0  # the fencing token of this claim: every later write names it


def _uuid_param(connection, value: uuid.UUID | str) -> Any:
    field = Execution._meta.pk
    return field.get_db_prep_value(uuid.UUID(str(value)), connection)


def _uuid_out(value: Any) -> str | None:
    if value is None:
        return None
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def claim(
    worker_id: uuid.UUID, queues: Sequence[str] | None, limit: int, using: str,
    exclude: Sequence[str] = (),
) -> list[Claimed]:
    """Lock up to ``limit`` runnable executions for ``worker_id``, best first.

    Flow control (``claim_rules``): batch tasks and tasks whose window is closed
    are skipped here (batches are claimed by ``batch.claim_batches``), and tasks with
    ``concurrency=N`` go through ``_claim_limited``. ``exclude``: executions not to
    claim (a stale handler of this worker may still be running them).
    """
    connection = connections[using]
    now = timezone.now()
    now_param = dt_param(connection, now)
    pg = connection.vendor == "postgresql"
    rules = claim_rules(now)
    if rules.limits:
        return _claim_limited(worker_id, queues, limit, using, now, rules, exclude)
    where, params = runnable_sql(now_param, queues, skip=rules.skip, exclude=exclude,
                                 connection=connection)
    inner = (
        f"SELECT id FROM {TABLE} WHERE {where} ORDER BY priority DESC, run_at ASC LIMIT %s"
        + (" FOR UPDATE SKIP LOCKED" if pg else "")
    )
    return lock_rows(worker_id, inner, [*params, limit], using, now)


def dt_param(connection, value: datetime) -> Any:
    return Execution._meta.get_field("run_at").get_db_prep_value(value, connection)


def runnable_sql(
    now_param: Any, queues: Sequence[str] | None, skip: Sequence[str] = (),
    exclude: Sequence[str] = (), connection: Any = None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (unqualified columns) of rows runnable now in ``queues``.

    ``skip``: task names left out; ``exclude``: execution ids left out (``connection``
    adapts them).
    """
    sql = "status IN ('pending', 'suspended') AND run_at <= %s"
    params: list[Any] = [now_param]
    if queues:
        sql += f" AND queue IN ({', '.join(['%s'] * len(queues))})"
        params.extend(queues)
    if skip:
        sql += f" AND task_name NOT IN ({', '.join(['%s'] * len(skip))})"
        params.extend(skip)
    if exclude:
        sql += f" AND id NOT IN ({', '.join(['%s'] * len(exclude))})"
        params.extend(_uuid_param(connection, eid) for eid in exclude)
    return sql, params


def lock_rows(
    worker_id: uuid.UUID, inner: str, params: list[Any], using: str, now: datetime
) -> list[Claimed]:
    """Mark the rows selected by ``inner`` (a ``SELECT id ...``) running for ``worker_id``."""
    connection = connections[using]
    now_param = dt_param(connection, now)
    # PostgreSQL: ``id = ANY(ARRAY(subquery))`` evaluates the pick once and then reads
    # the picked rows by primary key, whatever the planner's statistics say. (As
    # ``id IN (subquery)`` or a join, stale statistics - a table that just grew from
    # empty - could make it scan the whole table once per picked row.) SQLite runs an
    # uncorrelated ``IN (subquery)`` once.
    # The picked rows are locked (FOR UPDATE) and rechecked by the pick itself, so on
    # PostgreSQL the outer statement filters on the id alone: a status condition there
    # would tempt the planner into the partial claim index instead of the primary key.
    pg = connection.vendor == "postgresql"
    picked = (f"id = ANY(ARRAY({inner}))" if pg
              else f"id IN ({inner}) AND status IN ('pending', 'suspended')")
    sql = (
        f"UPDATE {TABLE} SET status = 'running', locked_by = %s, locked_at = %s,"
        " started_at = COALESCE(started_at, %s),"
        " attempts = CASE WHEN resume THEN attempts ELSE attempts + 1 END,"
        " resume = %s, lease = lease + 1"
        f" WHERE {picked}"
        " RETURNING id, task_name, queue, payload, attempts, max_attempts, priority,"
        " CASE WHEN started_at = locked_at THEN 1 ELSE 0 END, event_name, schedule_name,"
        " parent_id, lease"
    )
    head = [_uuid_param(connection, worker_id), now_param, now_param, False]
    rows = execute_prepared(connection, sql, head + params, fetch=True)
    payload_field = Execution._meta.get_field("payload")
    claimed = [
        Claimed(
            id=_uuid_out(r[0]),
            task_name=r[1],
            queue=r[2],
            payload=payload_field.from_db_value(r[3], None, connection),
            attempts=r[4],
            max_attempts=r[5],
            priority=r[6],
            fresh=bool(r[7]),
            event_name=r[8],
            schedule_name=r[9],
            parent_id=_uuid_out(r[10]),
            lease=r[11],
        )
        for r in rows
    ]
    claimed.sort(key=lambda c: -c.priority)
    return claimed


# --- flow control: tasks with concurrency=N ------------------------------------------

#: First key of the PostgreSQL advisory locks that serialize claims of a limited task
#: (the second key is ``hashtext(task_name)``); any int4 unlikely to clash with yours.
CLAIM_LOCK_CLASS = 0x43444A31


def _claim_limited(
    worker_id: uuid.UUID,
    queues: Sequence[str] | None,
    limit: int,
    using: str,
    now: datetime,
    rules: ClaimRules,
    exclude: Sequence[str] = (),
) -> list[Claimed]:
    """The claim when some tasks have ``concurrency=N``: one statement, several branches.

    The statement unions the plain candidates (every task without a limit, as in the
    fast path) with, per limited task, its best runnable rows ``LIMIT N - <running
    rows of that task, in any queue>``; the best ``limit`` of those are claimed. The
    count and the claim must not interleave with another worker's claim of the same
    task, or both could see N-1 running and start one each:

    * SQLite runs the single ``UPDATE`` under the database write lock, which
      serializes it against every other writer.
    * PostgreSQL first takes a transaction-level advisory lock per limited task with
      runnable rows (``pg_try_advisory_xact_lock(CLAIM_LOCK_CLASS, hashtext(name))``)
      in one statement, then runs the claim as the next statement of the same
      READ COMMITTED transaction. That statement's snapshot is taken after the lock,
      so it sees every claim committed by the previous holder (a lock is released only
      after its transaction's commit is visible). A *try* lock never waits and never
      deadlocks: a task another worker is claiming right now is simply left out of this
      round, like a row under ``SKIP LOCKED``. Tasks without a limit take no lock.

    Finishing executions only lower the count, so a stale count errs on the safe side.
    """
    connection = connections[using]
    pg = connection.vendor == "postgresql"
    now_param = dt_param(connection, now)
    lock = " FOR UPDATE SKIP LOCKED" if pg else ""
    outermost = not connection.in_atomic_block
    with transaction.atomic(using=using) if pg else nullcontext():
        if pg:
            if outermost and _isolation(connection) != "read committed":
                with connection.cursor() as cursor:  # the snapshot must follow the lock
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            names = _lock_limited(connection, rules.limits, queues, now_param)
        else:
            names = list(rules.limits)
        where, params = runnable_sql(now_param, queues, skip=[*rules.skip, *rules.limits],
                                     exclude=exclude, connection=connection)
        branches = [
            f"SELECT * FROM (SELECT id, priority, run_at FROM {TABLE} WHERE {where}"
            f" ORDER BY priority DESC, run_at ASC LIMIT %s{lock}) AS b_plain"
        ]
        params.append(limit)
        greatest = "GREATEST" if pg else "MAX"
        for n, name in enumerate(names):
            where, branch_params = runnable_sql(now_param, queues, exclude=exclude,
                                                connection=connection)
            branches.append(
                f"SELECT * FROM (SELECT id, priority, run_at FROM {TABLE}"
                f" WHERE task_name = %s AND {where} ORDER BY priority DESC, run_at ASC"
                f" LIMIT {greatest}(%s - (SELECT COUNT(*) FROM {TABLE}"
                f" WHERE task_name = %s AND status = 'running'), 0){lock}) AS b_{n}"
            )
            params += [name, *branch_params, rules.limits[name], name]
        inner = (
            f"SELECT id FROM ({' UNION ALL '.join(branches)}) AS candidates"
            " ORDER BY priority DESC, run_at ASC LIMIT %s"
        )
        return lock_rows(worker_id, inner, [*params, limit], using, now)


def _isolation(connection) -> str:
    """The configured isolation level of a PostgreSQL connection, e.g. ``"read committed"``."""
    level = getattr(connection, "isolation_level", None)
    return getattr(level, "name", "READ_COMMITTED").replace("_", " ").lower()


def _lock_limited(
    connection, limits: dict[str, int], queues: Sequence[str] | None, now_param: Any
) -> list[str]:
    """PostgreSQL: try-lock the limited tasks that have runnable rows and a free slot."""
    where, params = runnable_sql(now_param, queues)
    sql = (
        "SELECT t.name FROM unnest(%s::text[], %s::int[]) AS t(name, cap) WHERE CASE"
        f" WHEN EXISTS (SELECT 1 FROM {TABLE} WHERE task_name = t.name AND {where})"
        f" AND (SELECT COUNT(*) FROM {TABLE} WHERE task_name = t.name"
        " AND status = 'running') < t.cap"
        " THEN pg_try_advisory_xact_lock(%s, hashtext(t.name)) ELSE false END"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(limits), list(limits.values()), *params, CLAIM_LOCK_CLASS])
        return [row[0] for row in cursor.fetchall()]


def _held(eid: str, worker_id: uuid.UUID, lease: int, using: str) -> QuerySet:
    """The row of ``eid`` if this worker still holds it under the lease ``lease``."""
    return Execution.objects.using(using).filter(
        pk=eid, locked_by=worker_id, lease=lease, status=S.RUNNING
    )


def holds(eid: str, worker_id: uuid.UUID, lease: int, using: str) -> bool:
    """Whether this worker still holds ``eid`` under ``lease`` (it was not recovered)."""
    return _held(eid, worker_id, lease, using).exists()


def lock_held(eid: str, worker_id: uuid.UUID, lease: int, using: str) -> bool:
    """``holds``, and keep it so until the caller's transaction ends (PostgreSQL: a
    ``FOR SHARE`` row lock, which recovering the execution waits for; SQLite: the
    caller's write transaction already excludes every other writer)."""
    connection = connections[using]
    lock = " FOR SHARE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 {_HELD}{lock}", [
            _uuid_param(connection, eid), _uuid_param(connection, worker_id), lease])
        return cursor.fetchone() is not None


_CANCELLED = When(cancelled=True, then=Value(S.CANCELLED))


def _keep_reason(error: Any) -> Case:
    """``last_error``: the cancel reason stays on a cancelled row, else ``error``."""
    error = error if hasattr(error, "resolve_expression") else Value(error)
    return Case(When(cancelled=True, then=F("last_error")), default=error, output_field=TextField())


def _finished(when: Q, now: datetime, otherwise: datetime | None = None) -> Case:
    return Case(When(when, then=Value(now)), default=Value(otherwise), output_field=DateTimeField())


def complete(
    eid: str, worker_id: uuid.UUID, lease: int, result: Any, using: str, *,
    may_have_parent: bool = True,
) -> int:
    """The handler returned: ``completed`` (``cancelled`` if a cancel was accepted)."""
    rows = _held(eid, worker_id, lease, using)
    with _waking_parents(rows, using, may_have_parent):
        return complete_many([(eid, lease, result)], worker_id, using)


def fail(
    eid: str,
    worker_id: uuid.UUID,
    lease: int,
    error: str,
    retry_at: datetime | None,
    using: str,
    *,
    may_have_parent: bool = True,
) -> int:
    """The attempt failed: back to ``pending`` at ``retry_at``, or ``failed`` for good."""
    now = timezone.now()
    final = retry_at is None
    rows = _held(eid, worker_id, lease, using)
    with _waking_parents(rows if final else rows.filter(cancelled=True), using, may_have_parent):
        return rows.update(
            status=Case(_CANCELLED, default=Value(S.FAILED if final else S.PENDING)),
            last_error=_keep_reason(error),
            finished_at=_finished(Q(cancelled=True), now, now if final else None),
            run_at=retry_at if retry_at is not None else F("run_at"),
            resume=False,
            locked_by=None,
            locked_at=None,
        )


def finish_cancelled(
    eid: str, worker_id: uuid.UUID, lease: int, reason: str, using: str, *,
    may_have_parent: bool = True,
) -> int:
    """``Cancelled`` reached the runner: the execution ends ``cancelled``, never retried."""
    rows = _held(eid, worker_id, lease, using)
    with _waking_parents(rows, using, may_have_parent):
        return rows.update(
            status=S.CANCELLED,
            last_error=_keep_reason(reason),
            cancelled=True,
            finished_at=timezone.now(),
            locked_by=None,
            locked_at=None,
        )


def release(
    eid: str,
    worker_id: uuid.UUID,
    lease: int,
    run_at: datetime | None,
    using: str,
    status: str = S.PENDING,
    *,
    waiting_for: str | None = None,
    may_have_parent: bool = True,
) -> int:
    """Give the execution back without ending its attempt (shutdown, window, sleep).

    ``waiting_for``: the child this execution suspends for. If that child finished (or
    woke this execution) while it was still running, it becomes runnable at once
    instead of at ``run_at``, so a wake-up that came just before the suspend is not lost.
    """
    now = timezone.now()
    rows = _held(eid, worker_id, lease, using)
    when: Any = run_at
    if waiting_for is not None:
        when = Case(
            When(Q(run_at__gt=F("locked_at")) | Exists(_finished_child(waiting_for, using)),
                 then=Value(now)),
            default=Value(run_at),
            output_field=DateTimeField(),
        )
    with _waking_parents(rows.filter(cancelled=True), using, may_have_parent):
        return rows.update(
            status=Case(_CANCELLED, default=Value(status)),
            finished_at=_finished(Q(cancelled=True), now),
            run_at=when,
            resume=True,
            locked_by=None,
            locked_at=None,
        )


def release_all(worker_id: uuid.UUID, using: str) -> int:
    """Release whatever this worker still holds (its handlers did not stop in time)."""
    now = timezone.now()
    rows = Execution.objects.using(using).filter(locked_by=worker_id, status=S.RUNNING)
    with _waking_parents(rows.filter(cancelled=True), using):
        return rows.update(
            status=Case(_CANCELLED, default=Value(S.PENDING)),
            finished_at=_finished(Q(cancelled=True), now),
            run_at=now,
            resume=True,
            locked_by=None,
            locked_at=None,
        )


# --- waking parents (ctx.invoke) -------------------------------------------------------
#
# A parent waiting on a child (``ctx.invoke``) is ``suspended`` with ``run_at`` at its
# deadline (or empty). Every write that can end an execution wakes its parent, in the
# same transaction and *before* touching the child, so that locks are always taken
# parent first (as ``cancellation.cancel`` does): no deadlock between a child finishing
# and its parent being cancelled. A parent that is still running (it is about to
# suspend) gets ``run_at`` just past its lock time: ``release(waiting_for=...)`` reads
# that as "woken" and makes it runnable at once. Wake-ups are hints: a woken parent
# re-reads its child and suspends again if it is not finished.

WOKEN_WHILE_RUNNING = timedelta(microseconds=1)


def wake_parents(children: QuerySet, using: str) -> int:
    """Make the parents of ``children`` (which are finishing now) runnable at once."""
    parent_ids = children.filter(parent__isnull=False).values("parent_id")
    return (
        Execution.objects.using(using)
        .filter(pk__in=parent_ids, status__in=(S.SUSPENDED, S.RUNNING))
        .update(
            run_at=Case(
                When(status=S.RUNNING, then=F("locked_at") + WOKEN_WHILE_RUNNING),
                default=Value(timezone.now()),
                output_field=DateTimeField(),
            )
        )
    )


@contextmanager
def _waking_parents(children: QuerySet, using: str, may_have_parent: bool = True) -> Iterator[None]:
    """Run the final write of ``children`` in one transaction with waking their parents."""
    if not may_have_parent:
        yield
        return
    with write_transaction(using):
        wake_parents(children, using)
        yield


def _finished_child(child_id: str, using: str) -> QuerySet:
    return Execution.objects.using(using).filter(pk=child_id, status__in=Execution.FINAL)


def load_steps(eid: str, using: str) -> dict[str, Any]:
    rows = Step.objects.using(using).filter(execution_id=eid).values_list("name", "result")
    return dict(rows)


STEP_TABLE = Step._meta.db_table


def save_step(eid: str, name: str, result: Any, started_at: datetime, using: str,
              text: str | None = None, *, worker_id: uuid.UUID, lease: int) -> Any:
    """Store a step's result, fenced by the lease; if the name was stored meanwhile by
    this holder, return the stored one. ``text`` is the result as JSON when the caller
    has it already. Raises ``LeaseLost`` (storing nothing) when the lease is gone.

    One statement: ``INSERT ... SELECT ... WHERE <the lease is held>``. On PostgreSQL
    the held row is locked ``FOR SHARE`` until the step commits, so recovering the
    execution waits for the step's commit or finds it.
    """
    connection = connections[using]
    text = None if result is None else (text or dumps(result))
    pg = connection.vendor == "postgresql"
    ident = _uuid_param(connection, eid)
    count = execute_prepared(connection, STEP_INSERT_PG if pg else STEP_INSERT, [
        ident, name, text, dt_param(connection, started_at), dt_param(connection, timezone.now()),
        ident, _uuid_param(connection, worker_id), lease])
    if count == 1:
        return result
    if not holds(eid, worker_id, lease, using):
        raise LeaseLost(eid)
    return Step.objects.using(using).get(execution_id=eid, name=name).result


_HELD = f"FROM {TABLE} WHERE id = %s AND locked_by = %s AND lease = %s AND status = 'running'"
STEP_INSERT = (
    f"INSERT INTO {STEP_TABLE} (execution_id, name, result, started_at, created_at)"
    f" SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 {_HELD})"
    " ON CONFLICT (execution_id, name) DO NOTHING"
)
STEP_INSERT_PG = (
    f"INSERT INTO {STEP_TABLE} (execution_id, name, result, started_at, created_at)"
    f" SELECT %s, %s, %s::jsonb, %s::timestamptz, %s::timestamptz {_HELD} FOR SHARE"
    " ON CONFLICT (execution_id, name) DO NOTHING"
)


def complete_many(items: Sequence[tuple[str, int, Any]], worker_id: uuid.UUID,
                  using: str) -> int:
    """``complete`` for many executions in one statement; returns how many were written.

    ``items`` are ``(execution id, lease, JSON result)`` of executions this worker holds.
    """
    if not items:
        return 0
    connection = connections[using]
    pg = connection.vendor == "postgresql"
    values = ", ".join(["(%s, %s, %s)"] * len(items))
    if pg:  # the first row gives the VALUES list its column types
        values = "(%s::uuid, %s::bigint, %s::jsonb)" + values[len("(%s, %s, %s)"):]
    params: list[Any] = []
    for eid, lease, result in items:
        params += [_uuid_param(connection, eid), lease, None if result is None else dumps(result)]
    now = dt_param(connection, timezone.now())
    sql = (
        f"UPDATE {TABLE} SET"
        " status = CASE WHEN cancelled THEN 'cancelled' ELSE 'completed' END,"
        " result = v.column3, finished_at = %s, locked_by = NULL, locked_at = NULL"
        f" FROM (VALUES {values}) AS v"
        f" WHERE {TABLE}.id = v.column1 AND {TABLE}.lease = v.column2"
        f" AND {TABLE}.locked_by = %s AND {TABLE}.status = 'running'"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, *params, _uuid_param(connection, worker_id)])
        return cursor.rowcount


# --- workers -------------------------------------------------------------------------


def register_worker(worker: Worker, using: str) -> None:
    worker.save(using=using, force_insert=True)


def heartbeat(worker: Worker, using: str) -> bool:
    """Refresh the heartbeat; ``False`` if the row is gone: the worker was presumed dead
    and its executions may have been recovered (the caller re-registers it)."""
    now = timezone.now()
    return bool(Worker.objects.using(using).filter(pk=worker.pk).update(last_heartbeat=now))


def unregister_worker(worker_id: uuid.UUID, using: str) -> None:
    Worker.objects.using(using).filter(pk=worker_id).delete()


def recover(dead_after: float, using: str) -> int:
    """Release executions held by dead workers; a recovery counts as an attempt.

    A worker is dead when its heartbeat is older than ``dead_after`` seconds, or when a
    running execution's lock is that old and names no registered worker.
    """
    if not Execution.objects.using(using).filter(status=S.RUNNING).exists() and not (
            Worker.objects.using(using).filter(
                last_heartbeat__lt=timezone.now() - timedelta(seconds=dead_after)).exists()):
        return 0  # the common case, in two index reads and no transaction
    with write_transaction(using):
        return _recover(dead_after, using)


def _recover(dead_after: float, using: str) -> int:
    """``recover`` in one transaction. The dead workers' rows are locked first: a
    heartbeat racing this waits, then finds its row gone (``heartbeat`` says so), so a
    worker whose executions are taken here can never believe it still holds them."""
    now = timezone.now()
    limit = now - timedelta(seconds=dead_after)
    dead = list(
        Worker.objects.using(using).select_for_update().filter(last_heartbeat__lt=limit)
        .values_list("pk", flat=True)
    )
    live = Worker.objects.using(using).filter(last_heartbeat__gte=limit).values("pk")
    orphans = Execution.objects.using(using).filter(status=S.RUNNING).filter(
        Q(locked_by__in=dead) | (Q(locked_at__lt=limit) & ~Q(locked_by__in=live))
    )
    lost = Concat(
        Value(f"Worker lost (no heartbeat for {dead_after:g} s) during attempt "),
        Cast("attempts", CharField()),
        Value(" of "),
        Cast("max_attempts", CharField()),
        output_field=TextField(),
    )
    out_of_attempts = Q(attempts__gte=F("max_attempts"))
    with _waking_parents(orphans.filter(Q(cancelled=True) | out_of_attempts), using):
        count = orphans.update(
            status=Case(
                _CANCELLED, When(out_of_attempts, then=Value(S.FAILED)), default=Value(S.PENDING)
            ),
            last_error=_keep_reason(lost),
            finished_at=_finished(Q(cancelled=True) | out_of_attempts, now),
            run_at=now,
            resume=False,
            locked_by=None,
            locked_at=None,
        )
    if dead:
        Worker.objects.using(using).filter(pk__in=dead).delete()
    return count


def runnable_exists(queues: Sequence[str] | None, using: str) -> bool:
    qs = Execution.objects.using(using).filter(
        status__in=Execution.RUNNABLE, run_at__lte=timezone.now()
    )
    if queues:
        qs = qs.filter(queue__in=queues)
    return qs.exists()


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


# --- django_q engine: a dispatcher holds executions while their ids are in the broker ---
# (conductor_django.engines.django_q). The dispatcher claims with ``claim`` above, so
# priorities, queues and every other claim rule hold; a qcluster process then takes
# the row over with ``handover``, fenced on the holder being a dispatcher.


def handover(eid: str, worker_id: uuid.UUID, using: str) -> tuple[Claimed, str | None] | None:
    """Take over ``eid`` from the dispatcher that holds it; None if no dispatcher does.

    Returns the claimed execution and, if its cancellation was requested meanwhile,
    the reason. A duplicate or stale broker message finds the row held by a runner (or
    no longer running) and changes nothing.
    """
    if _uuid_out_or_none(eid) is None:
        return None
    dispatchers = Worker.objects.using(using).filter(role=Worker.Role.DISPATCHER).values("pk")
    moved = Execution.objects.using(using).filter(
        pk=eid, status=S.RUNNING, locked_by__in=dispatchers
    ).update(locked_by=worker_id, locked_at=timezone.now(), lease=F("lease") + 1)
    if not moved:
        return None
    row = Execution.objects.using(using).filter(
        pk=eid, locked_by=worker_id, status=S.RUNNING
    ).values(
        "task_name", "queue", "payload", "attempts", "max_attempts", "priority", "event_name",
        "schedule_name", "parent_id", "cancelled", "last_error", "lease",
    ).first()
    if row is None:
        return None
    claimed = Claimed(
        id=str(uuid.UUID(str(eid))),
        task_name=row["task_name"],
        queue=row["queue"],
        payload=row["payload"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        fresh=False,
        event_name=row["event_name"],
        schedule_name=row["schedule_name"],
        parent_id=_uuid_out(row["parent_id"]),
        lease=row["lease"],
    )
    return claimed, (row["last_error"] or DEFAULT_REASON) if row["cancelled"] else None


def _uuid_out_or_none(value: Any) -> str | None:
    try:
        return _uuid_out(value)
    except (ValueError, TypeError, AttributeError):
        return None


def held_count(worker_id: uuid.UUID, using: str) -> int:
    """How many executions this dispatcher holds (sent, not yet taken over)."""
    return Execution.objects.using(using).filter(status=S.RUNNING, locked_by=worker_id).count()


def finish_cancelled_held(worker_id: uuid.UUID, using: str) -> int:
    """Held executions whose cancellation was requested end ``cancelled`` without running."""
    return Execution.objects.using(using).filter(
        status=S.RUNNING, locked_by=worker_id, cancelled=True
    ).update(status=S.CANCELLED, finished_at=timezone.now(), locked_by=None, locked_at=None)


def stale_held(worker_id: uuid.UUID, older_than: datetime, limit: int, using: str) -> list[str]:
    """Held executions sent before ``older_than`` and not taken over: to be sent again.

    Their ``locked_at`` (the time they were sent) is moved to now.
    """
    rows = Execution.objects.using(using).filter(
        status=S.RUNNING, locked_by=worker_id, locked_at__lt=older_than
    )
    ids = list(rows.order_by("-priority", "locked_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    Execution.objects.using(using).filter(
        pk__in=ids, status=S.RUNNING, locked_by=worker_id
    ).update(locked_at=timezone.now())
    return [str(i) for i in ids]


# --- inserting executions (the invoke hot path) ----------------------------------------

#: Columns an insert sets; every other column of the table takes its model default.
INSERT_COLUMNS = (
    "id", "task_name", "queue", "status", "payload", "last_error", "cancelled", "attempts",
    "max_attempts", "priority", "run_at", "created_at", "dedupe_key", "parent_id",
    "schedule_name", "event_name", "resume",
)
#: Columns a caller may set beyond the invocation's own (keywords of ``execution_row``).
EXTRA_COLUMNS = ("parent_id", "schedule_name", "event_name")
COPY_FROM = 64  # PostgreSQL: COPY from this many rows on
_COLUMNS = ", ".join(INSERT_COLUMNS)


def _insert_sql(payload_mark: str) -> str:
    marks = ", ".join(payload_mark if c == "payload" else "%s" for c in INSERT_COLUMNS)
    return f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES ({marks})"


INSERT_SQL = _insert_sql("%s")
INSERT_SQL_PG = _insert_sql("CAST(%s AS jsonb)")  # the payload arrives as JSON text
COPY_SQL = f"COPY {TABLE} ({_COLUMNS}) FROM STDIN"


def insert_rows(rows: Sequence[tuple], using: str) -> None:
    """Insert executions given as ``execution_row`` tuples: one statement for one row,
    ``COPY`` for many on PostgreSQL, ``executemany`` on SQLite. Runs in the caller's
    transaction (or autocommit), so ``transaction.atomic`` governs visibility."""
    if not rows:
        return
    connection = connections[using]
    pg = connection.vendor == "postgresql"
    sql = INSERT_SQL_PG if pg else INSERT_SQL
    if len(rows) == 1:
        execute_prepared(connection, sql, rows[0])  # invoke(): one prepared round trip
        return
    with connection.cursor() as cursor:
        if pg and len(rows) >= COPY_FROM:
            with cursor.cursor.copy(COPY_SQL) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(sql, rows)


def execution_row(
    connection,
    eid: uuid.UUID,
    task_name: str,
    queue: str,
    payload_json: str | None,
    max_attempts: int,
    priority: int,
    run_at: datetime,
    created_at: datetime,
    dedupe_key: str | None = None,
    parent_id: str | None = None,
    schedule_name: str | None = None,
    event_name: str = "conductor.invoke",
) -> tuple:
    """One row for ``insert_rows``, with values adapted for ``connection``."""
    if connection.vendor == "postgresql":
        ident, parent, at, created = eid, parent_id, run_at, created_at
        false = False
    else:
        ident = eid.hex
        parent = uuid.UUID(str(parent_id)).hex if parent_id else None
        at = connection.ops.adapt_datetimefield_value(run_at)
        created = connection.ops.adapt_datetimefield_value(created_at)
        false = 0
    return (ident, task_name, queue, S.PENDING, payload_json, "", false, 0, max_attempts,
            priority, at, created, dedupe_key, parent, schedule_name, event_name, false)
