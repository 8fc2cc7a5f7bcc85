"""SQLite's claim: one ``UPDATE ... WHERE id IN (SELECT ...) RETURNING`` statement.

A single statement holds the database write lock, which serializes it against every
other writer: the pick, the counts of limited tasks and the update cannot interleave
with another worker's claim, so several worker processes on one machine never claim
the same row and never exceed a limit. No row locks (SQLite has none).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ...definitions.registry import KeyRule
from ..prepared import execute_prepared
from ..vendor import EXECUTION_TABLE, dialect
from .fragments import (
    BEST_FIRST,
    CLAIMED_COLUMNS,
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


def claim_source(table: str, queues: Sequence[str] | None) -> str:
    """The ``FROM`` of a plain claim's pick: ``table``, with the index that reads
    runnable rows in the claim's order named.

    A database nobody analysed has no statistics, and SQLite's planner then reads every
    runnable row through a status index and sorts them (25 ms a claim at 19,000
    runnable rows, under the only write lock). Named, the claim index gives the rows in
    the ``ORDER BY``'s order and the pick stops after ``LIMIT`` rows: the cost of a
    claim does not grow with the backlog. One queue: its own range of
    ``cdj_exec_claim_idx``; none or several: ``cdj_exec_claim_any_idx`` in order,
    filtered by queue.
    """
    if table != EXECUTION_TABLE:
        return table
    index = "cdj_exec_claim_idx" if queues and len(queues) == 1 else "cdj_exec_claim_any_idx"
    return f"{table} INDEXED BY {index}"


def lock_rows(
    connection: Any, table: str, worker_id: uuid.UUID, inner: str, params: list[Any],
    now: datetime,
) -> list[tuple]:
    """Mark the rows selected by ``inner`` (a ``SELECT id ...``) running for ``worker_id``.

    SQLite runs an uncorrelated ``IN (subquery)`` once; the status is checked again
    because nothing locked the picked rows between the pick and the update (the
    statement holds the database write lock, so nothing can change them either). The
    ``+`` keeps that check out of the index choice: without statistics (a new database
    is never analysed) SQLite would read every runnable row through a status index to
    find the few picked ones, instead of reading them by id.
    """
    update, head = mark_running(connection, table, worker_id, now)
    sql = (f"{update} WHERE id IN ({inner}) AND +status IN ('pending', 'suspended')"
           f" RETURNING {CLAIMED_COLUMNS}")
    return list(execute_prepared(connection, sql, head + params, fetch=True))


def claim(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str] = (), exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``limit`` runnable rows (no task limits apply), best first."""
    inner, params = plain_pick(connection, claim_source(table, queues), queues, limit, now,
                               skip, exclude, lock="")
    return lock_rows(connection, table, worker_id, inner, params, now)


def claim_limited(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str], limits: dict[str, int],
    exclude: Sequence[str] = (), keyed: dict[str, KeyRule] | None = None,
) -> list[tuple]:
    """The claim when some tasks have limits: one statement, several branches.

    The plain candidates (every task without a limit, as in ``claim``), then per
    ``concurrency=N`` task its best runnable rows ``LIMIT N - <its running rows>``, and
    per keyed task its rows numbered within their key (``_keyed_branch``). Every branch
    numbers its rows (``rn``, 1 for the branches without keys), and the statement takes
    the best ``limit`` rows by ``rn``, then priority and ``run_at``: the first rows of
    every key go before the second rows of any key, which is the round-robin across
    keys. The single ``UPDATE`` runs under the database write lock.
    """
    keyed = keyed or {}
    now_param = dialect(connection).dt_param(connection, now)
    where, params = runnable_sql(connection, now_param, queues,
                                 skip=[*skip, *limits, *keyed], exclude=exclude)
    branches = [
        f"SELECT * FROM (SELECT id, priority, run_at, 1 AS rn"
        f" FROM {claim_source(table, queues)} WHERE {where}"
        f"{BEST_FIRST} LIMIT %s) AS b_plain"
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
            f" WHERE task_name = %s AND {where}{BEST_FIRST}"
            f" LIMIT MAX(%s - (SELECT COUNT(*) FROM {table}"
            f" WHERE task_name = %s AND status = 'running'), 0)) AS b_{n}"
        )
        params += [name, *branch_params, limits[name], name]
    inner = (
        f"SELECT id FROM ({' UNION ALL '.join(branches)}) AS candidates"
        " ORDER BY rn, priority DESC, run_at ASC LIMIT %s"
    )
    rows = lock_rows(connection, table, worker_id, inner, [*params, limit], now)
    take_turns(connection, table, keyed, rows)
    return rows


def _keyed_branch(
    connection: Any, table: str, name: str, rule: KeyRule, limit: int,
    queues: Sequence[str] | None, now_param: Any, exclude: Sequence[str],
) -> tuple[str, list[Any]]:
    """The candidates of one keyed task, ``(id, priority, run_at, rn)``, at most what the
    task's limits allow (``MAX(MIN(limit, cap - count, ...), 0)``; a single term needs no
    ``MIN``: SQLite's one-argument ``MIN`` is the aggregate), the first rows of every key
    first (``fragments.keyed_window``)."""
    terms, task_params = task_terms(table, name, rule)
    inner = "%s" if not terms else f"MIN({', '.join(['%s', *terms])})"
    sql, params = keyed_window(connection, table, name, rule, limit, queues, now_param,
                               exclude, f"MAX({inner}, 0)")
    return sql, [*params, limit, *with_since(task_params, since_param(connection, rule))]


def claim_batch(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    name: str, size: int, timeout_seconds: float, now: datetime, fill: bool,
    exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``size`` runnable rows of the batch task ``name`` (``fill``: only a
    ready batch, see ``fragments.batch_pick``)."""
    inner, params = batch_pick(connection, table, queues, name, size, timeout_seconds, now,
                               fill, exclude, lock="")
    return lock_rows(connection, table, worker_id, inner, params, now)
