"""What the three claims share: the columns they return, the runnable condition, the
``SET`` of a claim, the picks of the plain claim and of a batch, and the round across a
keyed task's keys.

Nothing here runs a statement: each database's module (``sqlite``, ``postgresql``,
``mysql``) puts these fragments together into its own claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ...definitions.registry import KeyRule
from ..vendor import dialect

#: What a claim returns of each claimed row, in this order.
CLAIMED_COLUMNS = (
    "id, task_name, queue, payload, attempts, max_attempts, priority,"
    " CASE WHEN started_at = locked_at THEN 1 ELSE 0 END, event_name, schedule_name,"
    " parent_id, lease, flow_key"
)

#: A limit that never binds (the int4 maximum), where a task has none.
NO_LIMIT = 2**31 - 1

#: The order of every claim's pick: best priority first, then the oldest.
BEST_FIRST = " ORDER BY priority DESC, run_at ASC"


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


def mark_running(connection: Any, table: str, worker_id: uuid.UUID,
                 now: datetime) -> tuple[str, list[Any]]:
    """The ``UPDATE ... SET`` of a claim (no ``WHERE``) and its parameters: the row runs
    for ``worker_id`` under a new fencing token (``lease + 1``); a resumed attempt is
    not counted again."""
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


def plain_pick(
    connection: Any, source: str, queues: Sequence[str] | None, limit: int, now: datetime,
    skip: Sequence[str], exclude: Sequence[str], lock: str,
) -> tuple[str, list[Any]]:
    """``SELECT id FROM source ...``: the best ``limit`` runnable rows (``lock``: the
    locking clause appended)."""
    now_param = dialect(connection).dt_param(connection, now)
    where, params = runnable_sql(connection, now_param, queues, skip=skip, exclude=exclude)
    sql = f"SELECT id FROM {source} WHERE {where}{BEST_FIRST} LIMIT %s{lock}"
    return sql, [*params, limit]


def batch_pick(
    connection: Any, table: str, queues: Sequence[str] | None, name: str, size: int,
    timeout_seconds: float, now: datetime, fill: bool, exclude: Sequence[str], lock: str,
) -> tuple[str, list[Any]]:
    """``SELECT id ...``: up to ``size`` runnable rows of the batch task ``name``; with
    ``fill``, only when the batch is ready: ``size`` rows are runnable, or the oldest
    has waited ``timeout_seconds`` (``lock``: the locking clause appended)."""
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
    sql += f"{BEST_FIRST} LIMIT %s{lock}"
    return sql, [*params, size]


# --- keys: fair claims within per-key concurrency and rate limits -----------------------


#: Where the next claim of a keyed task begins its round of the task's keys,
#: per (database alias, table, task): after the last key the previous claim served.
_turns: dict[tuple[str, str, str], str] = {}


#: The order of a keyed task's groups within one round (``fk``: the key; its parameter
#: is the turn): the keys after the turn, then the executions without a key, then the
#: keys from the first up to the turn.
ROTATION = "CASE WHEN fk IS NULL THEN 1 WHEN fk > %s THEN 0 ELSE 2 END, fk"


def turn(connection: Any, table: str, name: str) -> str:
    """The key after which the next claim of the keyed task ``name`` begins its round."""
    return _turns.get((connection.alias, table, name), "")


def take_turns(connection: Any, table: str, keyed: dict[str, KeyRule],
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
        previous = turn(connection, table, name)
        wrapped = [k for k in keys if k <= previous]
        _turns[(connection.alias, table, name)] = max(wrapped or keys)


def task_terms(table: str, name: str, rule: KeyRule) -> tuple[list[str], list[Any]]:
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


def key_terms(table: str, name: str, rule: KeyRule, ref: str) -> tuple[list[str], list[Any]]:
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


def since_param(connection: Any, rule: KeyRule) -> Any:
    """The parameter of a rate limit's ``since`` time (``None`` without a rate limit)."""
    vendor = dialect(connection)
    return vendor.dt_param(connection, rule.since) if rule.since is not None else None


def with_since(params: list[Any], since: Any) -> list[Any]:
    """``params`` with the ``since`` placeholders (``None``) filled in."""
    return [since if p is None else p for p in params]


def keyed_window(
    connection: Any, table: str, name: str, rule: KeyRule, limit: int,
    queues: Sequence[str] | None, now_param: Any, exclude: Sequence[str], room: str,
) -> tuple[str, list[Any]]:
    """The candidates of one keyed task without ``LATERAL`` (SQLite, MySQL): the task's
    runnable rows numbered per key (``rn``), kept while the number is within the key's
    limits, in the round's order; ``room``: the SQL of the ``LIMIT`` (its parameters
    follow the returned ones). Executions without a key are one more group, bound by
    the task's limits only."""
    where, wp = runnable_sql(connection, now_param, queues, exclude=exclude)
    terms, params = key_terms(table, name, rule, "w.flow_key")
    within = " AND ".join(f"w.rn <= {term}" for term in terms)
    sql = (
        "SELECT id, priority, run_at, rn FROM (SELECT id, priority, run_at, flow_key,"
        " ROW_NUMBER() OVER (PARTITION BY flow_key ORDER BY priority DESC, run_at ASC)"
        f" AS rn FROM {table} WHERE task_name = %s AND {where}) AS w WHERE w.rn <= %s"
        + (f" AND (w.flow_key IS NULL OR ({within}))" if within else "")
        + f" ORDER BY rn, {ROTATION.replace('fk', 'flow_key')}, priority DESC, run_at ASC"
        f" LIMIT {room}"
    )
    return sql, [name, *wp, limit, *with_since(params, since_param(connection, rule)),
                 turn(connection, table, name)]
