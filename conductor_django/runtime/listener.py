"""PostgreSQL LISTEN/NOTIFY: wake the worker for new work and deliver cancels at once.

New and newly runnable executions are announced by triggers (migration 0002) on the
channel ``conductor_new`` with the queue name as payload; cancel requests by
``Execution.objects.cancel`` (``store/vendor.py``) on ``conductor_cancel`` with the
execution id, a newline and the reason (a reason too long for a payload is read from
the row). On other
databases (or psycopg2) nothing listens and the worker polls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connections

from ..exceptions import DEFAULT_REASON
from ..models import Execution
from ..state.operator import CANCEL_CHANNEL
from ..store.vendor import dialect
from .retry import Backoff

logger = logging.getLogger("conductor_django.worker")

NEW_CHANNEL = "conductor_new"


def listen_supported(using: str) -> bool:
    """Whether LISTEN/NOTIFY can wake this worker (PostgreSQL with psycopg 3)."""
    connection = connections[using]
    return dialect(connection).listen_supported(connection)


class Listener(threading.Thread):
    """A daemon thread with its own connection, calling back on each notification."""

    def __init__(
        self,
        using: str,
        on_new: Callable[[str], None],
        on_cancel: Callable[[str, str], None],
    ) -> None:
        super().__init__(name="conductor-listener", daemon=True)
        self.using = using
        self.on_new = on_new
        self.on_cancel = on_cancel
        self._stop = threading.Event()
        self.ready = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        backoff = Backoff(0.1, 5.0)
        while not self._stop.is_set():
            wrapper = connections.create_connection(self.using)
            try:
                wrapper.ensure_connection()
                raw = wrapper.connection
                raw.autocommit = True
                raw.execute(f"LISTEN {NEW_CHANNEL}")
                raw.execute(f"LISTEN {CANCEL_CHANNEL}")
                self.ready.set()
                self.on_new("")  # anything announced while not listening: look now
                backoff.reset()
                while not self._stop.is_set():
                    for note in raw.notifies(timeout=0.5):
                        if note.channel == CANCEL_CHANNEL:
                            self.on_cancel(*cancel_request(raw, note.payload))
                        else:
                            self.on_new(note.payload)
            except Exception:
                if self._stop.is_set():
                    break
                logger.warning("LISTEN connection lost; reconnecting", exc_info=True)
                backoff.wait(self._stop)
            finally:
                try:
                    wrapper.close()
                except Exception:  # noqa: BLE001 - closing a broken connection
                    pass


def cancel_request(raw, payload: str) -> tuple[str, str]:
    """``(execution id, reason)`` of a ``conductor_cancel`` payload; a reason that was
    too long to send is read from the row on ``raw`` (the listener's connection)."""
    eid, newline, reason = payload.partition("\n")
    if not newline:
        row = raw.execute(
            f"SELECT last_error FROM {Execution._meta.db_table} WHERE id = %s", [eid]
        ).fetchone()
        reason = row[0] if row else ""
    return eid, reason or DEFAULT_REASON
