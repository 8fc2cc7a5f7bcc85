"""The claim: every statement that picks runnable executions and marks them running.

Claiming is one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... LIMIT n)) RETURNING``
statement (``id IN (SELECT ...)`` on SQLite): on PostgreSQL the inner select takes
``FOR UPDATE SKIP LOCKED`` so concurrent workers on any number of machines never claim
the same row and never wait for each other; on SQLite a single statement holds the
database write lock, which makes it safe for several worker processes on one machine.
MySQL/MariaDB have no ``UPDATE ... RETURNING``: there a claim is a ``SELECT ... FOR
UPDATE SKIP LOCKED`` and an ``UPDATE`` by id in one transaction. Every claim takes a
new fencing token (``lease = lease + 1``).

The functions take the connection and the executions' table and return raw rows
(``CLAIMED_COLUMNS``); ``state.execution`` turns them into ``Claimed``.
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from ..definitions.registry import KeyRule
from .claim_function import FUNCTION_TABLE, NO_LIMIT, claim_by_function
from .prepared import execute_prepared
from .vendor import dialect

#: What a claim returns of each claimed row, in this order.
CLAIMED_COLUMNS = (
    "id, task_name, queue, payload, attempts, max_attempts, priority,"
    " CASE WHEN started_at = locked_at THEN 1 ELSE 0 END, event_name, schedule_name,"
    " parent_id, lease, flow_key"
)

#: MySQL: what a claim picks of each row (``FOR UPDATE``), from which ``_update_picked``
#: derives ``CLAIMED_COLUMNS`` after its ``UPDATE`` (``run_at`` last: the sort key).
PICKED_COLUMNS = (
    "id, task_name, queue, payload, attempts, max_attempts, priority, started_at IS NULL,"
    " event_name, schedule_name, parent_id, lease, resume, run_at, flow_key"
)

def runnable_sql(
    connection: Any, now_param: Any, queues: Sequence[str] | None, skip: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """The WHERE clause (unqualified columns) of rows runnable now in ``queues``.

    ``skip``: task names left out; ``exclude``: execution ids left out.
    """
    sql = f"{dialect(connection).runnable} AND run_at <= %s"
    params: list[Any] = [now_param]
    if queues:
        sql += f" AND queue IN ({', '.join(['%s'] * len(queues))})"
        params.extend(queues)
    if skip:
        sql += f" AND task_name NOT IN ({', '.join(['%s'] * len(skip))})"
        params.extend(skip)
    if exclude:
        fragment, values = dialect(connection).not_among(connection, exclude)
        sql += f" AND {fragment}"
        params.extend(values)
    return sql, params


def claim(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str] = (), exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``limit`` runnable rows (no task limits apply), best first."""
    vendor = dialect(connection)
    now_param = vendor.dt_param(connection, now)
    where, params = runnable_sql(connection, now_param, queues, skip=skip, exclude=exclude)
    inner = (
        f"SELECT id FROM {vendor.claim_source(table, queues)} WHERE {where}"
        " ORDER BY priority DESC, run_at ASC LIMIT %s" + vendor.skip_locked
    )
    return lock_rows(connection, table, worker_id, inner, [*params, limit], now)


def lock_rows(
    connection: Any, table: str, worker_id: uuid.UUID, inner: str, params: list[Any],
    now: datetime,
) -> list[tuple]:
    """Mark the rows selected by ``inner`` (a ``SELECT id ...``) running for ``worker_id``."""
    vendor = dialect(connection)
    update, head = _mark_running(connection, table, worker_id, now)
    if not vendor.update_returning:
        assert inner.startswith("SELECT id FROM ")
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            # locks the picked rows until the commit
            cursor.execute(f"SELECT {PICKED_COLUMNS}{inner[len('SELECT id'):]}", params)
            return _update_picked(cursor, table, update, head, list(cursor.fetchall()))
    sql = f"{update} WHERE {vendor.picked(inner)} RETURNING {CLAIMED_COLUMNS}"
    return list(execute_prepared(connection, sql, head + params, fetch=True))


def _mark_running(connection: Any, table: str, worker_id: uuid.UUID,
                  now: datetime) -> tuple[str, list[Any]]:
    """The ``UPDATE ... SET`` of a claim (no ``WHERE``) and its parameters."""
    vendor = dialect(connection)
    now_param = vendor.dt_param(connection, now)
    update = (
        f"UPDATE {table} SET status = 'running', locked_by = %s, locked_at = %s,"
        " started_at = COALESCE(started_at, %s),"
        " attempts = CASE WHEN resume THEN attempts ELSE attempts + 1 END,"
        " resume = %s, lease = lease + 1"
    )
    return update, [vendor.uuid_param(connection, worker_id), now_param, now_param,
                    vendor.bool_param(False)]


def _update_picked(cursor: Any, table: str, update: str, head: list[Any],
                   picked: list[tuple]) -> list[tuple]:
    """MySQL: mark the ``picked`` rows (``PICKED_COLUMNS``, locked ``FOR UPDATE``) running.

    No read back: the rows are locked, so what the ``UPDATE`` writes follows from what
    was picked (``lock_rows`` sets exactly these columns)."""
    if not picked:
        return []
    marks = ", ".join(["%s"] * len(picked))
    cursor.execute(f"{update} WHERE id IN ({marks})", [*head, *(r[0] for r in picked)])
    return [(eid, task, queue, payload, attempts if resume else attempts + 1, most, priority,
             1 if fresh else 0, event, schedule, parent, lease + 1, key)
            for (eid, task, queue, payload, attempts, most, priority, fresh, event, schedule,
                 parent, lease, resume, _, key) in picked]


def claim_limited(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str], limits: dict[str, int],
    exclude: Sequence[str] = (), keyed: dict[str, KeyRule] | None = None,
) -> list[tuple]:
    """The claim when some tasks have limits: one statement, several branches.

    ``limits``: tasks with ``concurrency=N`` alone; ``keyed``: tasks claimed key by key
    (``key_concurrency``, ``rate_limit``, with or without ``concurrency``), see
    ``_keyed_branch``. Every branch numbers its rows within their key (``rn``, 1 for
    the branches without keys), and the statement takes the best ``limit`` rows by
    ``rn``, then priority and ``run_at``: the first rows of every key go before the
    second rows of any key, which is the round-robin across keys.

    The statement unions the plain candidates (every task without a limit, as in the
    fast path) with, per limited task, its best runnable rows ``LIMIT N - <running
    rows of that task, in any queue>``; the best ``limit`` of those are claimed. The
    count and the claim must not interleave with another worker's claim of the same
    task, or both could see N-1 running and start one each:

    * SQLite runs the single ``UPDATE`` under the database write lock, which
      serializes it against every other writer.
    * PostgreSQL runs the whole claim as one call of a server-side function
      (``claim_function``): it first try-locks each limited task with runnable rows
      (a transaction-level advisory lock), then counts and claims in statements whose
      snapshots follow the locks. A *try* lock never waits and never deadlocks: a task
      another worker is claiming right now is simply left out of this round, like a
      row under ``SKIP LOCKED``. Tasks without a limit take no lock.

    * MySQL/MariaDB: ``claim_limited_named``, under named locks (``GET_LOCK``).

    Finishing executions only lower the count, so a stale count errs on the safe side.
    """
    keyed = keyed or {}
    vendor = dialect(connection)
    if not vendor.update_returning:
        return claim_limited_named(connection, table, worker_id, queues, limit, now, skip,
                                   limits, exclude, keyed)
    if not vendor.single_writer:  # PostgreSQL
        assert table == FUNCTION_TABLE, table
        turns = {name: _turn(connection, table, name) for name in keyed}
        rows = claim_by_function(connection, worker_id, queues, limit, now, skip, limits,
                                 exclude, keyed, turns)
        _take_turns(connection, table, keyed, rows)
        return rows
    # SQLite: the single ``UPDATE`` runs under the database write lock
    now_param = vendor.dt_param(connection, now)
    where, params = runnable_sql(connection, now_param, queues,
                                 skip=[*skip, *limits, *keyed], exclude=exclude)
    branches = [
        f"SELECT * FROM (SELECT id, priority, run_at, 1 AS rn"
        f" FROM {vendor.claim_source(table, queues)} WHERE {where}"
        f" ORDER BY priority DESC, run_at ASC LIMIT %s) AS b_plain"
    ]
    params.append(limit)
    for n, name in enumerate([*limits, *keyed]):
        if name in keyed:
            branch, branch_params = _keyed_branch(connection, table, name, keyed[name],
                                                  limit, queues, now_param, exclude)
            branches.append(f"SELECT * FROM ({branch}) AS b_{n}")
            params += branch_params
            continue
        where, branch_params = runnable_sql(connection, now_param, queues, exclude=exclude)
        branches.append(
            f"SELECT * FROM (SELECT id, priority, run_at, 1 AS rn FROM {table}"
            f" WHERE task_name = %s AND {where} ORDER BY priority DESC, run_at ASC"
            f" LIMIT {vendor.greatest}(%s - (SELECT COUNT(*) FROM {table}"
            f" WHERE task_name = %s AND status = 'running'), 0)) AS b_{n}"
        )
        params += [name, *branch_params, limits[name], name]
    inner = (
        f"SELECT id FROM ({' UNION ALL '.join(branches)}) AS candidates"
        " ORDER BY rn, priority DESC, run_at ASC LIMIT %s"
    )
    rows = lock_rows(connection, table, worker_id, inner, [*params, limit], now)
    _take_turns(connection, table, keyed, rows)
    return rows


# --- keys: fair claims within per-key concurrency and rate limits -----------------------


#: Where the next claim of a keyed task begins its round of the task's keys,
#: per (database alias, table, task): after the last key the previous claim served.
_turns: dict[tuple[str, str, str], str] = {}


#: The order of a keyed task's groups within one round (``fk``: the key; its parameter
#: is the turn): the keys after the turn, then the executions without a key, then the
#: keys from the first up to the turn.
ROTATION = "CASE WHEN fk IS NULL THEN 1 WHEN fk > %s THEN 0 ELSE 2 END, fk"


def _turn(connection: Any, table: str, name: str) -> str:
    return _turns.get((connection.alias, table, name), "")


def _take_turns(connection: Any, table: str, keyed: dict[str, KeyRule],
                rows: list[tuple]) -> None:
    """Move each keyed task's round on past the keys this claim served (``rows``:
    ``CLAIMED_COLUMNS``). The round visits the keys after the previous one first, then
    wraps around to the first key: the last key served is the largest at or below the
    previous turn when the round wrapped, else the largest.

    The largest by Python's order (code points). PostgreSQL's claim compares keys in
    byte order, which for UTF-8 is the same; SQLite's and MySQL's may differ (a
    case-insensitive collation, say): then the new turn is still one of the keys this claim
    served, after the previous turn in the database's order, so the round still moves
    on every claim and reaches every key; it may serve a key twice in one round."""
    served: dict[str, list[str]] = {}
    for row in rows:
        if row[1] in keyed and row[12] is not None:
            served.setdefault(row[1], []).append(row[12])
    for name, keys in served.items():
        previous = _turn(connection, table, name)
        wrapped = [k for k in keys if k <= previous]
        _turns[(connection.alias, table, name)] = max(wrapped or keys)


def _caps(keyed: dict[str, KeyRule]) -> dict[str, int]:
    """The task-wide running caps of keyed tasks, for the claim locks."""
    return {name: rule.concurrency or NO_LIMIT for name, rule in keyed.items()}


def _task_terms(table: str, name: str, rule: KeyRule) -> tuple[list[str], list[Any]]:
    """What bounds a keyed task as a whole: SQL terms (each ``cap - count``) and their
    parameters, before and after the ``since`` time of the rate limit."""
    terms: list[str] = []
    params: list[Any] = []
    if rule.concurrency is not None:
        terms.append(f"%s - (SELECT COUNT(*) FROM {table} WHERE task_name = %s"
                     " AND status = 'running')")
        params += [rule.concurrency, name]
    if rule.task_starts is not None:
        terms.append(f"%s - (SELECT COUNT(*) FROM {table} WHERE task_name = %s"
                     " AND started_at >= %s)")
        params += [rule.task_starts, name, None]  # None: the ``since`` parameter
    return terms, params


def _key_terms(table: str, name: str, rule: KeyRule, ref: str) -> tuple[list[str], list[Any]]:
    """What bounds one key of a keyed task (``ref``: the SQL of the key): SQL terms,
    each ``cap - count``, and their parameters (``None`` for ``since``)."""
    terms: list[str] = []
    params: list[Any] = []
    if rule.key_concurrency is not None:
        terms.append(f"%s - (SELECT COUNT(*) FROM {table} AS r WHERE r.task_name = %s"
                     f" AND r.flow_key = {ref} AND r.status = 'running')")
        params += [rule.key_concurrency, name]
    if rule.key_starts is not None:
        terms.append(f"%s - (SELECT COUNT(*) FROM {table} AS r WHERE r.task_name = %s"
                     f" AND r.flow_key = {ref} AND r.started_at >= %s)")
        params += [rule.key_starts, name, None]
    return terms, params


def _since(params: list[Any], since: Any) -> list[Any]:
    return [since if p is None else p for p in params]


def _room(least: str, greatest: str, terms: list[str]) -> str:
    """``GREATEST(LEAST(terms), 0)`` (a single term needs no ``LEAST``: SQLite's one
    argument ``MIN`` is the aggregate)."""
    inner = terms[0] if len(terms) == 1 else f"{least}({', '.join(terms)})"
    return f"{greatest}({inner}, 0)"


def _keyed_branch(
    connection: Any, table: str, name: str, rule: KeyRule, limit: int,
    queues: Sequence[str] | None, now_param: Any, exclude: Sequence[str],
) -> tuple[str, list[Any]]:
    """SQLite: the candidates of one keyed task, ``(id, priority, run_at, rn)``, at most
    what the task's limits allow, the first rows of every key first (``_keyed_window``;
    on PostgreSQL the claim function walks the keys through the key index instead).
    Executions without a key are one more group, bound by the task's limits only."""
    vendor = dialect(connection)
    since = vendor.dt_param(connection, rule.since) if rule.since is not None else None
    task_terms, task_params = _task_terms(table, name, rule)
    task_room = _room(vendor.least, vendor.greatest, ["%s", *task_terms])
    sql, params = _keyed_window(connection, table, name, rule, limit, queues, now_param,
                                exclude, task_room)
    return sql, [*params, limit, *_since(task_params, since)]


def _keyed_window(
    connection: Any, table: str, name: str, rule: KeyRule, limit: int,
    queues: Sequence[str] | None, now_param: Any, exclude: Sequence[str], room: str,
) -> tuple[str, list[Any]]:
    """``_keyed_branch`` without ``LATERAL`` (SQLite, MySQL): the task's runnable rows
    numbered per key, kept while the number is within the key's limits; ``room``: the
    SQL of the ``LIMIT`` (its parameters follow the returned ones)."""
    vendor = dialect(connection)
    since = vendor.dt_param(connection, rule.since) if rule.since is not None else None
    where, wp = runnable_sql(connection, now_param, queues, exclude=exclude)
    key_terms, key_params = _key_terms(table, name, rule, "w.flow_key")
    within = " AND ".join(f"w.rn <= {term}" for term in key_terms)
    sql = (
        "SELECT id, priority, run_at, rn FROM (SELECT id, priority, run_at, flow_key,"
        " ROW_NUMBER() OVER (PARTITION BY flow_key ORDER BY priority DESC, run_at ASC)"
        f" AS rn FROM {table} WHERE task_name = %s AND {where}) AS w WHERE w.rn <= %s"
        + (f" AND (w.flow_key IS NULL OR ({within}))" if within else "")
        + f" ORDER BY rn, {ROTATION.replace('fk', 'flow_key')}, priority DESC, run_at ASC"
        f" LIMIT {room}"
    )
    return sql, [name, *wp, limit, *_since(key_params, since),
                 _turn(connection, table, name)]


#: Named locks (MySQL ``GET_LOCK``) a connection still holds for a claim inside a
#: transaction of its caller's, released after that transaction ends.
_held_names: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def claim_limited_named(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str], limits: dict[str, int],
    exclude: Sequence[str] = (), keyed: dict[str, KeyRule] | None = None,
) -> list[tuple]:
    """``claim_limited`` on MySQL/MariaDB: no ``UPDATE ... RETURNING``, and ``LIMIT``
    takes no expression, so the count of a limited task's running rows is read first.

    The count and the claim are serialized per task by a named lock, taken with a
    zero timeout (``GET_LOCK(name, 0)``: a try lock, as on PostgreSQL) before the
    claim's transaction begins, and released after its commit. The transaction's reads
    therefore see every claim of the lock's previous holder, under READ COMMITTED and
    REPEATABLE READ alike (the snapshot is taken by the first read, after the lock).
    Inside a caller's transaction the locks are kept until it commits (and released
    by the next claim of the connection if it rolled back).
    """
    keyed = keyed or {}
    vendor = dialect(connection)
    now_param = vendor.dt_param(connection, now)
    outermost = not connection.in_atomic_block
    if outermost:
        _release_names(connection)
    names = _lock_names(connection, table, {**limits, **_caps(keyed)}, queues, now_param)
    try:
        update, head = _mark_running(connection, table, worker_id, now)
        order = " ORDER BY priority DESC, run_at ASC LIMIT %s" + vendor.skip_locked
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            where, params = runnable_sql(connection, now_param, queues,
                                         skip=[*skip, *limits, *keyed], exclude=exclude)
            cursor.execute(f"SELECT {PICKED_COLUMNS} FROM {vendor.claim_source(table, queues)}"
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
            _take_turns(connection, table, keyed, rows)
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
    """MySQL: the candidates of one keyed task (under its named lock), ``(rn, row)``
    with ``PICKED_COLUMNS`` rows locked ``FOR UPDATE``: the task's room is read first
    (``LIMIT`` takes no expression), then ``_keyed_window`` picks the ids."""
    vendor = dialect(connection)
    terms, params = _task_terms(table, name, rule)
    room = limit
    if terms:
        since = vendor.dt_param(connection, rule.since) if rule.since is not None else None
        cursor.execute("SELECT " + ", ".join(terms), _since(params, since))
        room = min(room, *cursor.fetchone())
    if room <= 0:
        return []
    sql, params = _keyed_window(connection, table, name, rule, limit, queues, now_param,
                                exclude, "%s")
    cursor.execute(sql, [*params, room])
    ranks = {row[0]: row[3] for row in cursor.fetchall()}
    if not ranks:
        return []
    where, where_params = runnable_sql(connection, now_param, queues, exclude=exclude)
    marks = ", ".join(["%s"] * len(ranks))
    cursor.execute(f"SELECT {PICKED_COLUMNS} FROM {table} WHERE id IN ({marks}) AND {where}"
                   + vendor.skip_locked, [*ranks, *where_params])
    return [(ranks[row[0]], row) for row in cursor.fetchall()]


def _lock_key(table: str, name: str) -> str:
    """The name of a task's claim lock (MySQL names have at most 64 characters)."""
    return "cdj:" + hashlib.sha1(f"{table}:{name}".encode()).hexdigest()


def _lock_names(connection: Any, table: str, limits: dict[str, int],
                queues: Sequence[str] | None, now_param: Any) -> list[str]:
    """Try-lock the limited tasks that have runnable rows and a free slot; the keys of
    the locks taken."""
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
    """Lock up to ``size`` runnable rows of the batch task ``name``; with ``fill``, only
    when the batch is ready: ``size`` rows are runnable, or the oldest has waited
    ``timeout_seconds``."""
    vendor = dialect(connection)
    now_param = vendor.dt_param(connection, now)
    where, where_params = runnable_sql(connection, now_param, queues, exclude=exclude)
    sql = f"SELECT id FROM {table} WHERE task_name = %s AND {where}"
    params = [name, *where_params]
    if fill:
        oldest = now - timedelta(seconds=timeout_seconds)
        sql += (
            f" AND ((SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE task_name = %s"
            f" AND {where} LIMIT %s) AS full_batch) >= %s"
            f" OR EXISTS (SELECT 1 FROM {table} WHERE task_name = %s AND {where}"
            " AND run_at <= %s))"
        )
        params += [name, *where_params, size, size,
                   name, *where_params, vendor.dt_param(connection, oldest)]
    sql += " ORDER BY priority DESC, run_at ASC LIMIT %s" + vendor.skip_locked
    return lock_rows(connection, table, worker_id, sql, [*params, size], now)
