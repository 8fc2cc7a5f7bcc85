"""The attempt history's one raw write: ``INSERT ... SELECT`` from the execution rows.

The attempt row is read from the execution row itself (its number, worker and claim
time) by the statement that records it, in the transaction of the final write and
*before* it (which clears the lock): the rows selected are the caller's fenced rows
(``locked_by``, ``lease``, ``status = 'running'``), so a worker that lost its lease
records nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .vendor import dialect


def record(connection: Any, table: str, attempt_table: str, ids_sql: str,
           ids_params: list[Any] | tuple[Any, ...], ended: str, error: str, now: datetime,
           *, retried_by: str = "", from_step: str = "") -> int:
    """Insert one attempt row per execution whose id ``ids_sql`` selects; a row whose
    cancellation was accepted is recorded ``cancelled`` with its reason."""
    vendor = dialect(connection)
    sql = (
        f"INSERT INTO {attempt_table} (execution_id, number, worker, started_at, finished_at,"
        " ended, error, retried_by, from_step)"
        " SELECT id, attempts, locked_by, locked_at, %s,"
        " CASE WHEN cancelled AND status = 'running' THEN 'cancelled' ELSE %s END,"
        " CASE WHEN cancelled AND status = 'running' THEN last_error ELSE %s END, %s, %s"
        f" FROM {table} WHERE id IN ({ids_sql})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [vendor.dt_param(connection, now), ended, error, retried_by,
                             from_step, *ids_params])
        return cursor.rowcount
