"""Transactions for conductor's own writes, safe on SQLite's default settings.

SQLite starts a plain ``BEGIN`` transaction as a reader and upgrades it to a writer at
its first write. When another connection is writing at that moment, the upgrade
cannot wait (two upgrading readers would deadlock), so SQLite fails it at once with
"database is locked", whatever the timeout. Django's ``startproject`` settings start
transactions that way. ``write_transaction`` therefore opens conductor's outermost
transactions with ``BEGIN IMMEDIATE`` on SQLite: the write lock is taken up front,
where the connection's timeout lets it wait its turn. ``retry_locked`` runs a whole
transaction again if SQLite still reports the database busy (a timeout ran out).

On other databases ``write_transaction`` is plain ``transaction.atomic``, and
``retry_locked`` runs the transaction again only when the database rolled it back to
break a deadlock (InnoDB can pick even a single-row ``UPDATE`` as the victim).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from django.db import OperationalError, connections, transaction

from .vendor import dialect

logger = logging.getLogger("conductor_django")

T = TypeVar("T")

#: Pauses between runs of a transaction that found SQLite busy: about 15 s in all,
#: on top of the connection's own timeout for each run.
BUSY_PAUSES = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@contextmanager
def write_transaction(using: str) -> Iterator[None]:
    """``transaction.atomic(using=using)``, begun ``IMMEDIATE`` when it is SQLite's outermost.

    Inside a transaction of the caller's it is a savepoint, as ``atomic`` is: the
    caller's transaction decides how it began.
    """
    connection: Any = connections[using]  # SQLite's wrapper has transaction_mode
    if not dialect(connection).single_writer or connection.in_atomic_block:
        with transaction.atomic(using=using):
            yield
        return
    connection.ensure_connection()
    mode = connection.transaction_mode
    connection.transaction_mode = "IMMEDIATE"
    try:
        with transaction.atomic(using=using):
            connection.transaction_mode = mode  # only the BEGIN needed it
            yield
    finally:
        connection.transaction_mode = mode


def is_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (or "busy")."""
    text = str(exc).lower()
    return isinstance(exc, OperationalError) and ("locked" in text or "busy" in text)


#: MySQL/MariaDB's "Deadlock found when trying to get lock; try restarting transaction".
MYSQL_DEADLOCK = 1213

#: PostgreSQL's deadlock_detected.
POSTGRES_DEADLOCK = "40P01"


def is_deadlock(exc: BaseException) -> bool:
    """Whether ``exc`` says the database rolled the transaction back to break a deadlock
    (MySQL/MariaDB error 1213, PostgreSQL SQLSTATE 40P01)."""
    if not isinstance(exc, OperationalError):
        return False
    code = exc.args[0] if exc.args else None
    return code == MYSQL_DEADLOCK or getattr(exc.__cause__, "sqlstate", None) == POSTGRES_DEADLOCK


def retry_locked(fn: Callable[[], T], using: str) -> T:
    """Call ``fn``, again after a pause while SQLite reports the database busy, or when
    another database rolled it back to break a deadlock (which says: try again).

    Only outside the caller's transaction: inside it, the error is the caller's (their
    transaction is already lost). ``fn`` must be a whole transaction (or one statement).
    """
    connection = connections[using]
    if connection.in_atomic_block:
        return fn()
    single_writer = dialect(connection).single_writer
    for pause in (*BUSY_PAUSES, None):
        try:
            return fn()
        except OperationalError as exc:
            if pause is None or not (is_busy(exc) if single_writer else is_deadlock(exc)):
                raise
            logger.info("%s; trying again in %.2f s",
                        "SQLite database busy" if single_writer else "deadlock", pause)
            time.sleep(pause)
    raise AssertionError("unreachable")
