"""Raw writes of held executions: several completions in one statement, a fenced step.

Every write is fenced by ``locked_by = <this worker>``, ``lease = <the token of its
claim>`` and ``status = 'running'``: a worker whose executions were recovered cannot
write anything for them any more. The ORM writes of the state machine
(``state.execution``) follow the same rule.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from .prepared import execute_prepared
from .vendor import dialect


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def _held(table: str) -> str:
    return f"FROM {table} WHERE id = %s AND locked_by = %s AND lease = %s AND status = 'running'"


def complete_many(connection: Any, table: str, items: Sequence[tuple[str, int, Any]],
                  worker_id: uuid.UUID, now: datetime) -> int:
    """Complete many held executions in one statement; returns how many were written.

    ``items`` are ``(execution id, lease, JSON result)``; a row whose cancellation was
    requested ends ``cancelled`` (keeping the reason in ``last_error``); any other ends
    ``completed`` with an empty ``last_error``.
    """
    if not items:
        return 0
    vendor = dialect(connection)
    values: list[Any] = []
    for eid, lease, result in items:
        values += [vendor.uuid_param(connection, eid), lease,
                   None if result is None else dumps(result)]
    sql, params = vendor.update_from_values(
        table, len(items),
        f"status = CASE WHEN {table}.cancelled THEN 'cancelled' ELSE 'completed' END,"
        f" result = v.column3,"
        # A completed execution shows no error (earlier attempts' are in the history);
        # a cancelled one keeps the reason.
        f" last_error = CASE WHEN {table}.cancelled THEN {table}.last_error ELSE '' END,"
        f" finished_at = %s, locked_by = NULL, locked_at = NULL",
        [vendor.dt_param(connection, now)], values,
        f"{table}.id = v.column1 AND {table}.lease = v.column2"
        f" AND {table}.locked_by = %s AND {table}.status = 'running'",
        [vendor.uuid_param(connection, worker_id)])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def insert_step(connection: Any, table: str, step_table: str, eid: str, name: str,
                text: str | None, started_at: datetime, now: datetime,
                worker_id: uuid.UUID, lease: int) -> int:
    """``INSERT ... SELECT ... WHERE <the lease is held>``: 1 if stored, 0 if the name was
    stored already or the lease is gone. On PostgreSQL and MySQL the held row is locked
    (``FOR SHARE``, ``LOCK IN SHARE MODE``) until the step commits, so recovering the
    execution waits for the step's commit or finds it."""
    vendor = dialect(connection)
    ident = vendor.uuid_param(connection, eid)
    columns = f"{step_table} (execution_id, name, result, started_at, created_at)"
    sql = vendor.insert_step(columns, _held(table), "(execution_id, name)")
    return int(execute_prepared(connection, sql, [
        ident, name, text, vendor.dt_param(connection, started_at),
        vendor.dt_param(connection, now), ident, vendor.uuid_param(connection, worker_id),
        lease]))


def lock_held(connection: Any, table: str, eid: str, worker_id: uuid.UUID, lease: int) -> bool:
    """Whether this worker holds ``eid`` under ``lease``, kept so until the caller's
    transaction ends (PostgreSQL, MySQL: a shared row lock, which recovering the
    execution waits for; SQLite: the caller's write transaction excludes every other
    writer)."""
    vendor = dialect(connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 {_held(table)}{vendor.share_lock}", [
            vendor.uuid_param(connection, eid), vendor.uuid_param(connection, worker_id),
            lease])
        return cursor.fetchone() is not None
