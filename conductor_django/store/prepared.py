"""PostgreSQL: the hot statements as server-side prepared statements.

Django binds parameters on the client and turns psycopg's prepared statements off by
default (``prepare_threshold = None``), so the server parses and plans every statement
again. ``execute_prepared`` runs the few statements that are on every execution's path
(invoke's ``INSERT``, a step's ``INSERT``, the claim) with server-side binding, prepared
once per connection. Measured on this project's machine: about 12 % more one-by-one
invokes per second and a claim in 0.2 ms instead of 0.5 ms (docs/performance.md).

Turned off by ``CONDUCTOR["PREPARED_STATEMENTS"] = False``, by
``DATABASES[...]["OPTIONS"]["prepare_threshold"] = None`` written out explicitly, and
on a database marked as transaction-pooled (``store.pooling``). A pooler that moves a
session between server connections without saying so (PgBouncer in transaction mode
before 1.21, or without ``max_prepared_statements``) loses prepared statements; the
first such error turns preparing off for the process, with a warning, and the
statement is run again unprepared when no transaction of the caller's depends on it.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

from .. import conf
from .pooling import pooled
from .vendor import PostgreSQL, dialect

logger = logging.getLogger("conductor_django")

#: Set on the first error that shows prepared statements do not survive (a pooler).
_broken = False

#: One reusable psycopg cursor per open connection. Django gives each thread its own
#: connection, so a cursor is never shared by threads; a closed connection drops out.
_cursors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: psycopg's threshold for statements it would prepare on its own: never reached, so
#: only the statements asked for here are prepared (Django's own stay as they were).
ONLY_WHEN_ASKED = 2**31 - 1

#: SQLSTATEs of a prepared statement the server does not have, or has twice.
LOST_STATEMENT = ("26000", "42P05")


def enabled(connection) -> bool:
    """Whether statements on this (PostgreSQL) connection are prepared."""
    if _broken or not conf.get("PREPARED_STATEMENTS") or pooled(connection):
        return False
    options = connection.settings_dict.get("OPTIONS") or {}
    return not ("prepare_threshold" in options and options["prepare_threshold"] is None)


def execute_prepared(connection, sql: str, params: Sequence[Any], fetch: bool = False) -> Any:
    """Run ``sql`` on Django's connection (so inside the caller's transaction, if any),
    prepared when ``enabled``; returns the row count, or with ``fetch`` the rows.

    Other databases run it through Django's cursor, so callers need no branch of their
    own (``params`` must suit the connection's vendor either way)."""
    global _broken
    if not isinstance(dialect(connection), PostgreSQL):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if fetch else cursor.rowcount
    connection.ensure_connection()
    prepare = enabled(connection)
    with connection.wrap_database_errors:
        raw = connection.connection
        cursor = _cursors.get(raw)
        if cursor is None or cursor.closed:
            import psycopg  # only PostgreSQL gets here

            cursor = _cursors[raw] = psycopg.Cursor(raw)
        if prepare and raw.prepare_threshold is None:
            raw.prepare_threshold = ONLY_WHEN_ASKED
        logged = connection.queries_logged  # a settings read: once per statement
        start = time.monotonic() if logged else 0.0
        try:
            cursor.execute(sql, params, prepare=prepare)
        except Exception as exc:
            if not prepare or getattr(exc, "sqlstate", None) not in LOST_STATEMENT:
                raise
            _broken = True
            logger.warning(
                "prepared statements do not survive on this database connection (a "
                "connection pooler?): conductor_django stops preparing statements. Set "
                'CONDUCTOR["PREPARED_STATEMENTS"] = False to skip this. (%s)', exc)
            if not connection.get_autocommit():
                raise  # the caller's transaction is aborted: it has to be retried whole
            cursor.execute(sql, params, prepare=False)
        if logged:  # seen by assertNumQueries, as Django's cursor is
            connection.queries_log.append({
                "sql": f"{sql} -- {list(params)!r}",
                "time": f"{time.monotonic() - start:.3f}",
            })
        return cursor.fetchall() if fetch else cursor.rowcount
