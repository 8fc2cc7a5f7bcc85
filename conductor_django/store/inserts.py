"""Inserting executions (the invoke hot path): one prepared statement for one row,
``COPY`` for many on PostgreSQL, ``executemany`` elsewhere."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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
#: Columns a caller may set beyond the invocation's own (keywords of ``execution_row``).
EXTRA_COLUMNS = ("parent_id", "schedule_name", "event_name")
COPY_FROM = 64  # PostgreSQL: COPY from this many rows on
_COLUMNS = ", ".join(INSERT_COLUMNS)


def insert_sql(table: str, json_mark: str = "%s") -> str:
    marks = ", ".join(json_mark if c in JSON_COLUMNS else "%s" for c in INSERT_COLUMNS)
    return f"INSERT INTO {table} ({_COLUMNS}) VALUES ({marks})"


def insert_rows(connection: Any, table: str, rows: Sequence[tuple]) -> None:
    """Insert executions given as ``execution_row`` tuples. Runs in the caller's
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


def execution_row(
    connection: Any,
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
    trace_context: str | None = None,
    key: str | None = None,
) -> tuple:
    """One row for ``insert_rows``, with values adapted for ``connection``."""
    vendor = dialect(connection)
    parent = vendor.uuid_param(connection, parent_id) if parent_id else None
    false = vendor.bool_param(False)
    return (vendor.uuid_param(connection, eid), task_name, queue, "pending", payload_json, "",
            false, 0, max_attempts, priority, vendor.dt_param(connection, run_at),
            vendor.dt_param(connection, created_at), dedupe_key, parent, schedule_name,
            event_name, false, trace_context, key)
