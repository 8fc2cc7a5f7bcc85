"""Inserting executions (the invoke hot path): one prepared statement for one row,
``COPY`` for many on PostgreSQL, ``executemany`` elsewhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from .prepared import execute_prepared
from .vendor import dialect

#: Columns an insert sets; every other column of the table takes its model default.
INSERT_COLUMNS = (
    "id", "task_name", "queue", "status", "payload", "last_error", "cancelled", "attempts",
    "max_attempts", "priority", "run_at", "created_at", "dedupe_key", "parent_id",
    "schedule_name", "event_name", "resume", "trace_context", "flow_key",
)
#: JSON columns (typed by the dialect's ``json_mark``).
JSON_COLUMNS = ("payload", "trace_context")
#: Columns a caller may set beyond the invocation's own (keywords of ``execution_rows``).
EXTRA_COLUMNS = ("parent_id", "schedule_name", "event_name")
COPY_FROM = 64  # PostgreSQL: COPY from this many rows on
_COLUMNS = ", ".join(INSERT_COLUMNS)


def insert_sql(table: str, json_mark: str = "%s") -> str:
    marks = ", ".join(json_mark if c in JSON_COLUMNS else "%s" for c in INSERT_COLUMNS)
    return f"INSERT INTO {table} ({_COLUMNS}) VALUES ({marks})"


def insert_rows(connection: Any, table: str, rows: Sequence[tuple]) -> None:
    """Insert executions given as ``execution_rows`` tuples. Runs in the caller's
    transaction (or autocommit), so ``transaction.atomic`` governs visibility."""
    if not rows:
        return
    vendor = dialect(connection)
    sql = insert_sql(table, vendor.json_mark)  # the payload arrives as JSON text
    if len(rows) == 1:
        execute_prepared(connection, sql, rows[0])  # invoke(): one prepared round trip
        return
    with connection.cursor() as cursor:
        vendor.insert_many(cursor, sql, f"COPY {table} ({_COLUMNS}) FROM STDIN", rows,
                           COPY_FROM)


#: One invocation's own values for ``execution_rows``: id, task name, queue, payload as
#: JSON, max attempts, priority, run at, trace context as JSON, flow-control key.
Invocation = tuple[uuid.UUID, str, str, "str | None", int, int, datetime, "str | None",
                   "str | None"]


def execution_rows(
    connection: Any,
    created_at: datetime,
    invocations: Iterable[Invocation],
    parent_id: str | None = None,
    schedule_name: str | None = None,
    event_name: str = "conductor.invoke",
) -> list[tuple]:
    """Rows for ``insert_rows``, with values adapted for ``connection``; what the rows
    share is adapted once (``run_at`` once per run of equal times)."""
    vendor = dialect(connection)
    parent = vendor.uuid_param(connection, parent_id) if parent_id else None
    false = vendor.bool_param(False)
    created = vendor.dt_param(connection, created_at)
    when: datetime | None = None
    when_param: Any = None
    rows = []
    for eid, task_name, queue, payload_json, max_attempts, priority, run_at, trace, key in (
            invocations):
        if run_at is not when:
            when, when_param = run_at, vendor.dt_param(connection, run_at)
        rows.append((vendor.uuid_param(connection, eid), task_name, queue, "pending",
                     payload_json, "", false, 0, max_attempts, priority, when_param, created,
                     None, parent, schedule_name, event_name, false, trace, key))
    return rows
