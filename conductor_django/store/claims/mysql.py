"""MySQL's and MariaDB's claim: ``SELECT ... FOR UPDATE SKIP LOCKED``, then ``UPDATE`` by id.

No ``UPDATE ... RETURNING`` (MariaDB has it for ``DELETE`` and ``INSERT`` only) and no
``LIMIT`` in an ``IN (subquery)``: a claim selects the rows it takes ``FOR UPDATE SKIP
LOCKED`` in a transaction and updates them by id, without reading them back: they are
locked, so what the update writes follows from what was selected. Concurrent workers
never claim the same row and never wait for each other's rows.

The claim with task limits serializes the count and the claim per limited task by a
named lock (``GET_LOCK(name, 0)``: a try lock, as on PostgreSQL), taken before the
claim's transaction begins and released after its commit.
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import transaction

from ...definitions.registry import KeyRule
from ..vendor import EXECUTION_TABLE, dialect
from .fragments import (
    BEST_FIRST,
    NO_LIMIT,
    batch_pick,
    keyed_window,
    mark_running,
    plain_pick,
    runnable_sql,
    since_param,
    take_turns,
    task_terms,
    with_since,
)

#: Appended to every pick: the picked rows stay locked until the commit, and rows
#: another claim holds are skipped.
SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

#: What a claim picks of each row (``FOR UPDATE``), from which ``_update_picked``
#: derives ``fragments.CLAIMED_COLUMNS`` after its ``UPDATE`` (``run_at`` last: the
#: sort key).
PICKED_COLUMNS = (
    "id, task_name, queue, payload, attempts, max_attempts, priority, started_at IS NULL,"
    " event_name, schedule_name, parent_id, lease, resume, run_at, flow_key"
)

def claim_source(table: str, queues: Sequence[str] | None) -> str:
    """The ``FROM`` of a plain claim's pick: ``table``, with its claim index forced.

    InnoDB locks every row a ``FOR UPDATE`` pick reads, not the ``LIMIT`` it returns: a
    plan that sorts (a table whose statistics were taken when it was empty) locks every
    runnable row until the commit, and a concurrent claim then skips them all and finds
    nothing (a ``--drain`` worker took that for "done"). Forced, the claim index reads
    the rows in the ``ORDER BY``'s order and stops after ``LIMIT``: one queue, its range
    of ``cdj_my_claim_idx``; none or several, ``cdj_my_claim_any_idx`` filtered by queue.
    """
    if table != EXECUTION_TABLE:
        return table
    index = "cdj_my_claim_idx" if queues and len(queues) == 1 else "cdj_my_claim_any_idx"
    return f"{table} FORCE INDEX ({index})"


def lock_rows(
    connection: Any, table: str, worker_id: uuid.UUID, inner: str, params: list[Any],
    now: datetime,
) -> list[tuple]:
    """Mark the rows selected by ``inner`` (a ``SELECT id FROM ... FOR UPDATE SKIP
    LOCKED``) running for ``worker_id``: the rows are selected (``PICKED_COLUMNS``) and
    locked, then updated by id, in one transaction."""
    assert inner.startswith("SELECT id FROM ")
    update, head = mark_running(connection, table, worker_id, now)
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # locks the picked rows until the commit
        cursor.execute(f"SELECT {PICKED_COLUMNS}{inner[len('SELECT id'):]}", params)
        return _update_picked(cursor, table, update, head, list(cursor.fetchall()))


def _update_picked(cursor: Any, table: str, update: str, head: list[Any],
                   picked: list[tuple]) -> list[tuple]:
    """Mark the ``picked`` rows (``PICKED_COLUMNS``, locked ``FOR UPDATE``) running.

    No read back: the rows are locked, so what the ``UPDATE`` writes follows from what
    was picked (``fragments.mark_running`` sets exactly these columns)."""
    if not picked:
        return []
    marks = ", ".join(["%s"] * len(picked))
    cursor.execute(f"{update} WHERE id IN ({marks})", [*head, *(r[0] for r in picked)])
    return [(eid, task, queue, payload, attempts if resume else attempts + 1, most, priority,
             1 if fresh else 0, event, schedule, parent, lease + 1, key)
            for (eid, task, queue, payload, attempts, most, priority, fresh, event, schedule,
                 parent, lease, resume, _, key) in picked]


def claim(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str] = (), exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``limit`` runnable rows (no task limits apply), best first."""
    inner, params = plain_pick(connection, claim_source(table, queues), queues, limit, now,
                               skip, exclude, lock=SKIP_LOCKED)
    return lock_rows(connection, table, worker_id, inner, params, now)


#: Named locks a connection still holds for a claim inside a transaction of its
#: caller's, released after that transaction ends.
_held_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def claim_limited(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str], limits: dict[str, int],
    exclude: Sequence[str] = (), keyed: dict[str, KeyRule] | None = None,
) -> list[tuple]:
    """The claim when some tasks have limits (``limits``: tasks with ``concurrency=N``
    alone; ``keyed``: tasks claimed key by key). ``LIMIT`` takes no expression, so the
    count of a limited task's running rows is read first.

    The limited tasks with runnable rows and a free slot are try-locked by name before
    the claim's transaction begins, and released after its commit. The transaction's
    reads therefore see every claim of the lock's previous holder, under READ COMMITTED
    and REPEATABLE READ alike (the snapshot is taken by the first read, after the lock).
    Inside a caller's transaction the locks are kept until it commits (and released by
    the next claim of the connection if it rolled back). The candidates of every branch
    are ranked as in one statement elsewhere: by ``rn`` (a key's first row before any
    key's second), then priority and ``run_at``.
    """
    keyed = keyed or {}
    now_param = dialect(connection).dt_param(connection, now)
    outermost = not connection.in_atomic_block
    if outermost:
        _release_names(connection)
    caps = {name: rule.concurrency or NO_LIMIT for name, rule in keyed.items()}
    names = _lock_names(connection, table, {**limits, **caps}, queues, now_param)
    try:
        update, head = mark_running(connection, table, worker_id, now)
        order = f"{BEST_FIRST} LIMIT %s{SKIP_LOCKED}"
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            where, params = runnable_sql(connection, now_param, queues,
                                         skip=[*skip, *limits, *keyed], exclude=exclude)
            cursor.execute(f"SELECT {PICKED_COLUMNS} FROM {claim_source(table, queues)}"
                           f" WHERE {where}{order}", [*params, limit])
            ranked = [(1, row) for row in cursor.fetchall()]
            for name in names:
                if name in keyed:
                    ranked += _keyed_picks(connection, cursor, table, name, keyed[name],
                                           limit, queues, now_param, exclude)
                    continue
                cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE task_name = %s"
                               " AND status = 'running'", [name])
                free = min(limits[name] - cursor.fetchone()[0], limit)
                if free <= 0:
                    continue
                where, params = runnable_sql(connection, now_param, queues, exclude=exclude)
                cursor.execute(f"SELECT {PICKED_COLUMNS} FROM {table}"
                               f" WHERE task_name = %s AND {where}{order}",
                               [name, *params, free])
                ranked += [(1, row) for row in cursor.fetchall()]
            ranked.sort(key=lambda r: (r[0], -r[1][6], r[1][13]))  # rn, priority DESC, run_at
            rows = _update_picked(cursor, table, update, head, [r for _, r in ranked[:limit]])
            take_turns(connection, table, keyed, rows)
            return rows
    finally:
        if outermost:
            _release(connection, table, names)
        else:
            _held_names.setdefault(connection, {}).setdefault(table, []).extend(names)
            transaction.on_commit(lambda: _release_names(connection), using=connection.alias)


def _keyed_picks(
    connection: Any, cursor: Any, table: str, name: str, rule: KeyRule, limit: int,
    queues: Sequence[str] | None, now_param: Any, exclude: Sequence[str],
) -> list[tuple[int, tuple]]:
    """The candidates of one keyed task (under its named lock), ``(rn, row)`` with
    ``PICKED_COLUMNS`` rows locked ``FOR UPDATE``: the task's room is read first
    (``LIMIT`` takes no expression), then ``fragments.keyed_window`` picks the ids."""
    terms, params = task_terms(table, name, rule)
    room = limit
    if terms:
        cursor.execute("SELECT " + ", ".join(terms),
                       with_since(params, since_param(connection, rule)))
        room = min(room, *cursor.fetchone())
    if room <= 0:
        return []
    sql, params = keyed_window(connection, table, name, rule, limit, queues, now_param,
                               exclude, "%s")
    cursor.execute(sql, [*params, room])
    ranks = {row[0]: row[3] for row in cursor.fetchall()}
    if not ranks:
        return []
    where, where_params = runnable_sql(connection, now_param, queues, exclude=exclude)
    marks = ", ".join(["%s"] * len(ranks))
    cursor.execute(f"SELECT {PICKED_COLUMNS} FROM {table} WHERE id IN ({marks}) AND {where}"
                   + SKIP_LOCKED, [*ranks, *where_params])
    return [(ranks[row[0]], row) for row in cursor.fetchall()]


def _lock_key(table: str, name: str) -> str:
    """The name of a task's claim lock (MySQL names have at most 64 characters)."""
    return "cdj:" + hashlib.sha1(f"{table}:{name}".encode()).hexdigest()


def _lock_names(connection: Any, table: str, limits: dict[str, int],
                queues: Sequence[str] | None, now_param: Any) -> list[str]:
    """Try-lock the limited tasks that have runnable rows and a free slot; the names of
    the tasks locked."""
    where, params = runnable_sql(connection, now_param, queues)
    tasks = " UNION ALL ".join(["SELECT %s AS name, %s AS cap, %s AS k"] * len(limits))
    sql = (
        f"SELECT t.name, t.k, GET_LOCK(t.k, 0) FROM ({tasks}) AS t"
        f" WHERE EXISTS (SELECT 1 FROM {table} WHERE task_name = t.name AND {where})"
        f" AND (SELECT COUNT(*) FROM {table} WHERE task_name = t.name"
        " AND status = 'running') < t.cap"
    )
    rows = [v for name, cap in limits.items() for v in (name, cap, _lock_key(table, name))]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*rows, *params])
        return [name for name, _, locked in cursor.fetchall() if locked == 1]


def _release(connection: Any, table: str, names: Sequence[str]) -> None:
    if names:
        keys = [_lock_key(table, name) for name in names]
        with connection.cursor() as cursor:
            cursor.execute("SELECT " + ", ".join(["RELEASE_LOCK(%s)"] * len(keys)), keys)


def _release_names(connection: Any) -> None:
    """Release the locks a claim inside a finished transaction of the caller's kept."""
    for table, names in _held_names.pop(connection, {}).items():
        _release(connection, table, names)


def claim_batch(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    name: str, size: int, timeout_seconds: float, now: datetime, fill: bool,
    exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``size`` runnable rows of the batch task ``name`` (``fill``: only a
    ready batch, see ``fragments.batch_pick``)."""
    inner, params = batch_pick(connection, table, queues, name, size, timeout_seconds, now,
                               fill, exclude, lock=SKIP_LOCKED)
    return lock_rows(connection, table, worker_id, inner, params, now)
