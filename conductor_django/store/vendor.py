"""The database dialects: every difference between SQLite and PostgreSQL, side by side.

``dialect(connection)`` is the one place that reads ``connection.vendor``; the store's
statements ask their ``Dialect`` for the few fragments that differ (locking clauses,
casts, ``GREATEST``), and the dialect runs the statements that exist on one database
only (``pg_notify``, ``COPY``, the planner's estimates). Adding a database (MySQL) means
one more subclass here, plus whatever the store's statements need from it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any


class Dialect:
    """SQLite, and the defaults of every dialect."""

    vendor = "sqlite"
    #: Appended to a ``SELECT`` that picks rows to claim.
    skip_locked = ""
    #: Appended to a ``SELECT`` of a held row that must stay held until the commit.
    share_lock = ""
    #: The SQL function of the larger of two values.
    greatest = "MAX"
    #: A single writer at a time: write transactions begin ``IMMEDIATE`` and a busy
    #: database is waited for (``store.transactions``).
    single_writer = True
    #: The payload placeholder of an ``INSERT`` (the payload arrives as JSON text).
    json_mark = "%s"

    def picked(self, inner: str) -> str:
        """The ``WHERE`` of an ``UPDATE`` of the rows ``inner`` (a ``SELECT id``) picks.

        SQLite runs an uncorrelated ``IN (subquery)`` once; the status is checked again
        because nothing locked the picked rows between the pick and the update (the
        statement holds the database write lock, so nothing can change them either).
        """
        return f"id IN ({inner}) AND status IN ('pending', 'suspended')"

    def values_row(self, first: bool) -> str:
        """One row of the ``VALUES`` list of ``complete_many``."""
        return "(%s, %s, %s)"

    def uuid_param(self, connection: Any, value: uuid.UUID | str) -> Any:
        value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        return value if connection.features.has_native_uuid_field else value.hex

    def not_among(self, connection: Any, ids: Sequence[str]) -> tuple[str, Any]:
        """``id`` is none of ``ids``: a condition and its one parameter, so the statement's
        text does not change with the number of ids."""
        return ("id NOT IN (SELECT value FROM json_each(%s))",
                json.dumps([self.uuid_param(connection, i) for i in ids]))

    def limit_idle_transactions(self, connection: Any, seconds: float) -> None:
        """End a transaction this session leaves idle for longer than ``seconds`` (where the
        database can): a frozen worker must not hold row locks that recovery waits for."""

    def dt_param(self, connection: Any, value: datetime) -> Any:
        return connection.ops.adapt_datetimefield_value(value)

    def bool_param(self, value: bool) -> Any:
        return int(value)

    def request_cancel(self, connection: Any, table: str, eid: uuid.UUID, reason: str,
                       channel: str, reason_bytes: int) -> bool:
        """Flag a running execution ``cancelled`` with ``reason``; whether it was."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET cancelled = %s, last_error = %s"
                " WHERE id = %s AND status = 'running' AND NOT cancelled",
                [True, reason, self.uuid_param(connection, eid)],
            )
            return bool(cursor.rowcount)

    def insert_many(self, cursor: Any, sql: str, copy_sql: str, rows: Sequence[tuple],
                    copy_from: int) -> None:
        cursor.executemany(sql, rows)

    def listen_supported(self, connection: Any) -> bool:
        """Whether LISTEN/NOTIFY can wake the worker (else it polls)."""
        return False

    def table_estimate(self, connection: Any, table: str) -> int | None:
        """The planner's row count of ``table`` (``None``: no cheap estimate here)."""
        return None

    def query_estimate(self, connection: Any, sql: str, params: Sequence[Any]) -> int | None:
        return None


class PostgreSQL(Dialect):
    vendor = "postgresql"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    share_lock = " FOR SHARE"
    greatest = "GREATEST"
    single_writer = False
    json_mark = "CAST(%s AS jsonb)"

    def picked(self, inner: str) -> str:
        # ``id = ANY(ARRAY(subquery))`` evaluates the pick once and then reads the
        # picked rows by primary key, whatever the planner's statistics say. (As ``id
        # IN (subquery)`` or a join, stale statistics - a table that just grew from
        # empty - could make it scan the whole table once per picked row.) The picked
        # rows are locked (FOR UPDATE) and rechecked by the pick itself, so the outer
        # statement filters on the id alone: a status condition there would tempt the
        # planner into the partial claim index instead of the primary key.
        return f"id = ANY(ARRAY({inner}))"

    def values_row(self, first: bool) -> str:
        # the first row gives the VALUES list its column types
        return "(%s::uuid, %s::bigint, %s::jsonb)" if first else "(%s, %s, %s)"

    def bool_param(self, value: bool) -> Any:
        return value

    def not_among(self, connection: Any, ids: Sequence[str]) -> tuple[str, Any]:
        return "NOT (id = ANY(%s::uuid[]))", [uuid.UUID(str(i)) for i in ids]

    def limit_idle_transactions(self, connection: Any, seconds: float) -> None:
        milliseconds = max(1, int(seconds * 1000))
        with connection.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")

    def request_cancel(self, connection: Any, table: str, eid: uuid.UUID, reason: str,
                       channel: str, reason_bytes: int) -> bool:
        # One statement flags the row and notifies its worker (the NOTIFY goes out with
        # the commit); the payload is the id, a newline and the reason (just the id when
        # the reason is too long to send).
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH r AS (UPDATE {table} SET cancelled = true,"
                " last_error = %s WHERE id = %s AND status = 'running' AND NOT cancelled"
                " RETURNING id, last_error) SELECT pg_notify(%s, id::text || CASE WHEN"
                " octet_length(last_error) <= %s THEN E'\\n' || last_error ELSE '' END)"
                " FROM r",
                [reason, eid, channel, reason_bytes],
            )
            return cursor.fetchone() is not None

    def insert_many(self, cursor: Any, sql: str, copy_sql: str, rows: Sequence[tuple],
                    copy_from: int) -> None:
        if len(rows) < copy_from:
            cursor.executemany(sql, rows)
            return
        with cursor.cursor.copy(copy_sql) as copy:
            for row in rows:
                copy.write_row(row)

    def listen_supported(self, connection: Any) -> bool:
        try:
            import psycopg  # noqa: F401 - optional: LISTEN needs psycopg 3
        except ImportError:
            return False
        return bool(getattr(connection, "is_psycopg3", False)
                    or connection.Database.__name__ == "psycopg")

    def table_estimate(self, connection: Any, table: str) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                           [table])
            row = cursor.fetchone()
        return -1 if row is None else int(row[0])

    def query_estimate(self, connection: Any, sql: str, params: Sequence[Any]) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str | bytes):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])


_DIALECTS: dict[str, Dialect] = {"sqlite": Dialect(), "postgresql": PostgreSQL()}


def dialect(connection: Any) -> Dialect:
    """The dialect of a Django connection (unknown vendors get SQLite's portable SQL)."""
    return _DIALECTS.get(connection.vendor, _DIALECTS["sqlite"])
