"""The database dialects: the differences between SQLite, PostgreSQL and MySQL/MariaDB.

``dialect(connection)`` is the one place that reads ``connection.vendor``; the store's
statements ask their ``Dialect`` for the few fragments that differ (locking clauses,
casts, the runnable condition), and the dialect runs the statements that exist on one
database only (``pg_notify``, ``COPY``, the planner's estimates). The claim has one
module per database instead, chosen by the dialect's name (``store/claims/``).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from math import ceil
from typing import Any

from django.db import DatabaseError

#: The executions' table (SQLite's claim names its indexes: ``store/claims/sqlite.py``).
EXECUTION_TABLE = "conductor_django_execution"


class Dialect:
    """SQLite, and the defaults of every dialect."""

    #: The dialect's name (Django's vendor name), which also names its claim module.
    vendor = "sqlite"
    #: Appended to a ``SELECT`` of a held row that must stay held until the commit.
    share_lock = ""
    #: A single writer at a time: write transactions begin ``IMMEDIATE`` and a busy
    #: database is waited for (``store.transactions``).
    single_writer = True
    #: The payload placeholder of an ``INSERT`` (the payload arrives as JSON text).
    json_mark = "%s"
    #: The condition (unqualified columns) of a runnable status.
    runnable = "status IN ('pending', 'suspended')"
    #: Where Django builds no partial index or conditional unique constraint, conductor's
    #: migrations build equivalents (Django's models.W036/W037 do not apply).
    builds_partial_rules = False

    def values_row(self, first: bool) -> str:
        """One row of the ``VALUES`` list of ``complete_many``."""
        return "(%s, %s, %s)"

    def update_from_values(self, table: str, rows: int, set_sql: str, set_params: list[Any],
                           values: list[Any], where: str, where_params: list[Any],
                           ) -> tuple[str, list[Any]]:
        """``UPDATE table`` joined with ``rows`` literal rows ``v(column1, column2, ...)``
        (three columns): the statement and its parameters in order. ``where`` relates
        ``v`` to ``table`` and filters it."""
        rows_sql = ", ".join(self.values_row(n == 0) for n in range(rows))
        return (f"UPDATE {table} SET {set_sql} FROM (VALUES {rows_sql}) AS v WHERE {where}",
                [*set_params, *values, *where_params])

    def insert_step(self, into: str, held: str, unique: str) -> str:
        """``INSERT INTO into`` (execution id, name, JSON result, two times) ``SELECT`` of
        five parameters when the ``held`` row (``FROM ... WHERE``) exists; nothing when
        a row with the same ``unique`` columns exists."""
        return (f"INSERT INTO {into} SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 {held})"
                f" ON CONFLICT {unique} DO NOTHING")

    def uuid_param(self, connection: Any, value: uuid.UUID | str) -> Any:
        value = value if isinstance(value, uuid.UUID) else _parse_uuid(str(value))
        return value if connection.features.has_native_uuid_field else value.hex

    def not_among(self, connection: Any, ids: Sequence[str]) -> tuple[str, list[Any]]:
        """``id`` is none of ``ids``: a condition and its parameters (one, so that the
        statement's text does not change with the number of ids, where it can)."""
        return ("id NOT IN (SELECT value FROM json_each(%s))",
                [json.dumps([self.uuid_param(connection, i) for i in ids])])

    def guard_worker_session(self, connection: Any, seconds: float) -> None:
        """Set up a worker's session (``seconds``: ``WORKER_DEAD_AFTER``).

        PostgreSQL and MariaDB end a transaction the session leaves idle for longer than
        that: a frozen worker must not hold row locks that recovery waits for. SQLite
        has one writer at a time, and a worker's writes must not give up while others
        write (SQLite's default five seconds can pass under load): unless the settings
        give a ``timeout`` of their own, its sessions wait for the write lock that long.
        """
        if "timeout" in (connection.settings_dict.get("OPTIONS") or {}):
            return  # the project chose how long to wait
        milliseconds = int(seconds * 1000)
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            current = cursor.fetchone()[0]
            if current < milliseconds:
                cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")

    def dt_param(self, connection: Any, value: datetime) -> Any:
        return connection.ops.adapt_datetimefield_value(value)

    def bool_param(self, value: bool) -> Any:
        return int(value)

    def request_cancel(self, connection: Any, table: str, eid: uuid.UUID, reason: str,
                       channel: str, reason_bytes: int) -> bool:
        """Flag a running execution ``cancelled`` (and ``cancel_requested``) with ``reason``;
        whether it was."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET cancelled = %s, cancel_requested = %s, last_error = %s"
                " WHERE id = %s AND status = 'running' AND NOT cancelled",
                [True, True, reason, self.uuid_param(connection, eid)],
            )
            return bool(cursor.rowcount)

    def insert_many(self, cursor: Any, sql: str, copy_sql: str, rows: Sequence[tuple],
                    copy_from: int) -> None:
        cursor.executemany(sql, rows)

    def listen_supported(self, connection: Any) -> bool:
        """Whether LISTEN/NOTIFY can wake the worker (else it polls)."""
        return False

    def local_wakeup_file(self, connection: Any) -> str | None:
        """The database file whose local workers ``store.wakeup`` wakes (SQLite on a
        file); ``None`` where there is none."""
        in_memory = getattr(connection, "is_in_memory_db", None)  # Django's SQLite backend
        if in_memory is None or in_memory():
            return None
        return str(connection.settings_dict["NAME"])

    def text_collation(self, connection: Any, table: str, column: str) -> str | None:
        """The collation ``column`` of ``table`` compares with, where it can make keys
        that differ only in case equal (MySQL/MariaDB); ``None`` elsewhere."""
        return None

    def table_estimate(self, connection: Any, table: str) -> int | None:
        """The planner's row count of ``table`` (``None``: no cheap estimate here)."""
        return None

    def query_estimate(self, connection: Any, sql: str, params: Sequence[Any]) -> int | None:
        return None

    def server_port(self, connection: Any) -> int | None:
        """The TCP port the database server itself serves this session on (``None``:
        not known here, or a Unix socket); another port than the one connected to
        means a proxy or a pooler in between."""
        return None

    def uuid_ranges_are_prefixes(self, connection: Any) -> bool:
        """Whether the UUIDs from ``x...0`` to ``x...f`` are those whose text starts with
        ``x`` (SQLite stores 32 hex characters, PostgreSQL compares the bytes)."""
        return True

    def oldest_transaction(self, connection: Any) -> float | None:
        """Seconds since the oldest transaction of another session of this database
        began, among those that keep old row versions alive (``None``: none, or not
        visible here). SQLite: a reader only delays the checkpoint; not reported."""
        return None

    def duration_percentiles(self, connection: Any, table: str, since: Any,
                             quantiles: Sequence[float]) -> dict[str, list[float]] | None:
        """Per task, the run time quantiles of the executions finished since ``since``
        (``None``: no percentile function here; the caller computes them from the rows)."""
        return None


class PostgreSQL(Dialect):
    vendor = "postgresql"
    share_lock = " FOR SHARE"
    single_writer = False
    json_mark = "CAST(%s AS jsonb)"

    def values_row(self, first: bool) -> str:
        # the first row gives the VALUES list its column types
        return "(%s::uuid, %s::bigint, %s::jsonb)" if first else "(%s, %s, %s)"

    def bool_param(self, value: bool) -> Any:
        return value

    def insert_step(self, into: str, held: str, unique: str) -> str:
        # the held row is locked FOR SHARE until the commit; typed for the prepared path
        return (f"INSERT INTO {into} SELECT %s, %s, %s::jsonb, %s::timestamptz,"
                f" %s::timestamptz {held}{self.share_lock} ON CONFLICT {unique} DO NOTHING")

    def not_among(self, connection: Any, ids: Sequence[str]) -> tuple[str, list[Any]]:
        return "NOT (id = ANY(%s::uuid[]))", [[uuid.UUID(str(i)) for i in ids]]

    def guard_worker_session(self, connection: Any, seconds: float) -> None:
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
                f"WITH r AS (UPDATE {table} SET cancelled = true, cancel_requested = true,"
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

    def local_wakeup_file(self, connection: Any) -> str | None:
        return None  # LISTEN/NOTIFY instead

    def listen_supported(self, connection: Any) -> bool:
        try:
            import psycopg  # noqa: F401 - optional: LISTEN needs psycopg 3
        except ImportError:
            return False
        return bool(getattr(connection, "is_psycopg3", False)
                    or connection.Database.__name__ == "psycopg")

    def oldest_transaction(self, connection: Any) -> float | None:
        # a snapshot (backend_xmin) or a transaction id (backend_xid) holds back what
        # VACUUM may remove in this database; another role's sessions show no xact_start
        # without pg_read_all_stats
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXTRACT(EPOCH FROM now() - min(xact_start)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)")
            row = cursor.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def server_port(self, connection: Any) -> int | None:
        with connection.cursor() as cursor:  # PgBouncer passes the server's own through
            cursor.execute("SELECT inet_server_port()")
            return cursor.fetchone()[0]

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

    def duration_percentiles(self, connection: Any, table: str, since: Any,
                             quantiles: Sequence[float]) -> dict[str, list[float]] | None:
        # percentile_cont interpolates linearly, as admin.stats.quantile does elsewhere.
        columns = ", ".join(
            "percentile_cont(%s) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at"
            " - started_at))" for _ in quantiles)
        sql = (f"SELECT task_name, {columns} FROM {table}"
               " WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at >= %s"
               " AND started_at IS NOT NULL GROUP BY task_name")
        with connection.cursor() as cursor:
            cursor.execute(sql, [*quantiles, since])
            return {row[0]: [float(v) for v in row[1:]] for row in cursor.fetchall()}


class MySQL(Dialect):
    """MySQL 8 and MariaDB >= 10.6 (InnoDB).

    No ``UPDATE ... RETURNING`` (MariaDB has it for ``DELETE`` and ``INSERT`` only): a
    claim selects, then updates (``store/claims/mysql.py``). Migration
    ``0010_mysql`` adds what Django cannot build here (partial indexes and conditional
    unique constraints): the STORED generated column ``cdj_runnable`` (1 while the row
    is runnable, else NULL) that the claim indexes lead with, and the unique indexes of
    the dedupe key and of a schedule's fire time. No LISTEN/NOTIFY: workers poll.
    """

    vendor = "mysql"
    share_lock = " LOCK IN SHARE MODE"  # MySQL 8 and every MariaDB accept this spelling
    single_writer = False
    runnable = "cdj_runnable = 1"
    builds_partial_rules = True  # migration 0010_mysql

    def local_wakeup_file(self, connection: Any) -> str | None:
        return None  # a server database: its workers poll

    def insert_step(self, into: str, held: str, unique: str) -> str:
        # the held row is read with a shared lock, kept until the commit; IGNORE: a
        # duplicate of the unique key inserts nothing
        return f"INSERT IGNORE INTO {into} SELECT %s, %s, %s, %s, %s {held}{self.share_lock}"

    def uuid_param(self, connection: Any, value: uuid.UUID | str) -> Any:
        value = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        # MariaDB >= 10.7 stores Django's UUIDField as UUID (which reads the dashed
        # text); elsewhere it is char(32) hex
        return str(value) if connection.features.has_native_uuid_field else value.hex

    def not_among(self, connection: Any, ids: Sequence[str]) -> tuple[str, list[Any]]:
        # no prepared statements here, so the text may vary with the number of ids
        return (f"id NOT IN ({', '.join(['%s'] * len(ids))})",
                [self.uuid_param(connection, i) for i in ids])

    def update_from_values(self, table: str, rows: int, set_sql: str, set_params: list[Any],
                           values: list[Any], where: str, where_params: list[Any],
                           ) -> tuple[str, list[Any]]:
        first = "SELECT %s AS column1, %s AS column2, %s AS column3"
        rows_sql = " UNION ALL ".join([first] + ["SELECT %s, %s, %s"] * (rows - 1))
        return (f"UPDATE {table} JOIN ({rows_sql}) AS v ON {where} SET {set_sql}",
                [*values, *where_params, *set_params])

    def guard_worker_session(self, connection: Any, seconds: float) -> None:
        # MariaDB ends (disconnects) a session idle inside a transaction for longer than
        # idle_transaction_timeout; MySQL 8 has no such setting (docs/mysql.md).
        if connection.mysql_is_mariadb:
            with connection.cursor() as cursor:
                cursor.execute(f"SET SESSION idle_transaction_timeout = {max(1, ceil(seconds))}")

    def uuid_ranges_are_prefixes(self, connection: Any) -> bool:
        # MySQL stores char(32); MariaDB >= 10.7's native UUID type compares an RFC UUID
        # by its segments from the last one, so a prefix of its text is no range there.
        return str(connection.data_types.get("UUIDField", "")).startswith("char")

    def oldest_transaction(self, connection: Any) -> float | None:
        # InnoDB purges no row version an open transaction may still read (the history
        # list grows); reading innodb_trx needs the PROCESS privilege
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(t.trx_started), NOW(6)) / 1000000"
                    " FROM information_schema.innodb_trx t"
                    " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
                    " WHERE p.db = DATABASE() AND t.trx_mysql_thread_id <> CONNECTION_ID()")
                row = cursor.fetchone()
        except DatabaseError:
            return None
        return None if row is None or row[0] is None else float(row[0])

    def table_estimate(self, connection: Any, table: str) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT table_rows FROM information_schema.tables"
                           " WHERE table_schema = DATABASE() AND table_name = %s", [table])
            row = cursor.fetchone()
        return -1 if row is None or row[0] is None else int(row[0])

    def text_collation(self, connection: Any, table: str, column: str) -> str | None:
        """The collation ``column`` of ``table`` compares with: the column's own, or the
        database's default when the table is not created yet."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT collation_name FROM information_schema.columns"
                           " WHERE table_schema = DATABASE() AND table_name = %s"
                           " AND column_name = %s", [table, column])
            row = cursor.fetchone()
            if row is None or not row[0]:
                cursor.execute("SELECT default_collation_name FROM information_schema.schemata"
                               " WHERE schema_name = DATABASE()")
                row = cursor.fetchone()
        return None if row is None or not row[0] else str(row[0])

    def query_estimate(self, connection: Any, sql: str, params: Sequence[Any]) -> int | None:
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN {sql}", params)
            names = [c[0] for c in cursor.description]
            rows = cursor.fetchall()
        if not rows or "rows" not in names:
            return None
        # the first table's estimate (a filtered list is one table; joins add lookups)
        value = rows[0][names.index("rows")]
        return None if value is None else int(value)


@functools.lru_cache(maxsize=4096)
def _parse_uuid(text: str) -> uuid.UUID:
    """A UUID from its text, remembered: a handler passes the same execution id with
    each of its steps (``UUID`` objects are immutable, so sharing one is safe)."""
    return uuid.UUID(text)


_DIALECTS: dict[str, Dialect] = {"sqlite": Dialect(), "postgresql": PostgreSQL(),
                                 "mysql": MySQL()}


def dialect(connection: Any) -> Dialect:
    """The dialect of a Django connection (unknown vendors get SQLite's portable SQL)."""
    return _DIALECTS.get(connection.vendor, _DIALECTS["sqlite"])
