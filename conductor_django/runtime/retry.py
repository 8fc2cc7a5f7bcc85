"""Retrying a worker's own writes across database faults.

When the database connection of a handler thread is killed (a restarted server, a
failover, ``pg_terminate_backend``) or SQLite stays locked past its timeout, the
write that records an attempt's outcome must not be lost: the handler's outcome is
known, so the write is retried on a fresh connection. Every write retried here is
fenced (``locked_by`` and ``status``), so repeating one that did commit is harmless.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import DatabaseError, DataError, IntegrityError, connections

from ..exceptions import error_text

logger = logging.getLogger("conductor_django.worker")

T = TypeVar("T")

#: Pauses between tries of a write: about 15 s in all before giving up.
PAUSES = (0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


class Backoff:
    """Pauses that double after each failure, from ``first`` up to ``cap`` seconds, and
    start over after a success: the reconnect loops of the worker, the listener and the
    completer share it. Each pause is drawn between half and all of its nominal value
    (jitter), so that the many loops of many workers that lost the database at the same
    moment do not all reconnect at the same moments."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self._nominal = first
        self.pause = jittered(first)  # the next pause, as ``wait`` will sleep it

    def reset(self) -> None:
        self._nominal = self.first
        self.pause = jittered(self.first)

    def wait(self, stop: threading.Event | None = None) -> None:
        """Sleep the current pause (until ``stop`` is set, if given); double the next."""
        (stop or threading.Event()).wait(self.pause)
        self._nominal = min(self._nominal * 2, self.cap)
        self.pause = jittered(self._nominal)


def jittered(seconds: float) -> float:
    """A pause between half of ``seconds`` and ``seconds``, drawn at random."""
    return seconds * (0.5 + random.random() / 2)


class Outage:
    """How a reconnect loop logs a database that went away: one WARNING with the error's
    traceback when it goes, one short line (no traceback) per failed retry, and one line
    when the loop works again, saying how long it was away. A 10-second outage used to
    write a full traceback for every retry of every loop."""

    def __init__(self, what: str) -> None:
        self.what = what  # e.g. "the worker loop"
        self.since: float | None = None
        self.retries = 0

    def failed(self, exc: BaseException, pause: float) -> None:
        """A try failed with ``exc``; the loop retries in ``pause`` seconds."""
        if self.since is None:
            self.since = time.monotonic()
            logger.warning("database error in %s (%s); retrying in %.1f s", self.what,
                           _one_line(exc), pause, exc_info=exc)
            return
        self.retries += 1
        logger.warning("database still unavailable for %s after %.1f s (%s); retrying in "
                       "%.1f s", self.what, time.monotonic() - self.since, _one_line(exc),
                       pause)

    def recovered(self) -> None:
        """A try worked: say so once if the database had been away."""
        if self.since is not None:
            logger.warning("database back for %s after %.1f s (%d retries)", self.what,
                           time.monotonic() - self.since, self.retries)
            self.since, self.retries = None, 0


def _one_line(exc: BaseException) -> str:
    """``error_text`` (the type and message, safe whatever ``__str__`` does), first
    line only: a driver's message often goes on with details and hints."""
    return error_text(exc).strip().splitlines()[0]


def reset_connection(using: str) -> None:
    """Close this thread's connection so that the next query opens a new one."""
    try:
        connections[using].close()
    except DatabaseError:
        pass


def retry_write(fn: Callable[[], T], using: str, what: str = "write") -> T:
    """Call ``fn``; on a database error reconnect and try again - not on an integrity
    error nor a ``DataError`` (a value the database refuses is refused again).

    ``fn`` must be safe to repeat. Inside a transaction nothing is retried: the
    transaction is lost with its connection, so the error goes to its owner.
    """
    for pause in (*PAUSES, None):
        try:
            return fn()
        except (IntegrityError, DataError):
            raise
        except DatabaseError:
            if pause is None or connections[using].in_atomic_block:
                raise
            pause = jittered(pause)
            logger.warning("database error during %s; retrying in %.2f s", what, pause,
                           exc_info=True)
            reset_connection(using)
            time.sleep(pause)
    raise AssertionError("unreachable")


def ensure_usable(using: str, idle_for: float, max_idle: float = 1.0) -> None:
    """Drop this thread's connection if it had errors, or was idle and no longer works.

    A connection killed while its thread waited for work would otherwise fail the first
    query of the next execution, costing it an attempt for nothing.
    """
    connection = connections[using]
    if connection.connection is None:
        return
    if connection.errors_occurred or (idle_for >= max_idle and not connection.is_usable()):
        reset_connection(using)
        connection.errors_occurred = False
