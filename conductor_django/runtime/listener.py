"""PostgreSQL LISTEN/NOTIFY: wake the worker for new work and deliver cancels at once.

New and newly runnable executions are announced by triggers (migration 0002) on the
channel ``conductor_new`` with the queue name as payload; cancel requests by
``Execution.objects.cancel`` (``store/vendor.py``) on ``conductor_cancel`` with the
execution id, a newline and the reason (a reason too long for a payload is read from
the row). The listener's connection is one of ``CONDUCTOR["LISTEN_DATABASE"]`` when
that is set (a direct connection beside a transaction-pooled one: ``store.pooling``).
On a SQLite file, ``LocalListener`` waits on a local socket that ``invoke`` and
``cancel`` poke after their commit (``store.wakeup``). On other databases (or
psycopg2), and on a pooled database without ``LISTEN_DATABASE``, nothing listens and
the worker polls.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

from django.db import connections

from .. import conf
from ..exceptions import DEFAULT_REASON
from ..models import Execution
from ..state.operator import CANCEL_CHANNEL
from ..store import pooling, wakeup
from ..store.vendor import dialect
from .retry import Backoff, Outage

logger = logging.getLogger("conductor_django.worker")

NEW_CHANNEL = "conductor_new"


def listen_supported(using: str) -> bool:
    """Whether LISTEN/NOTIFY can wake this worker (PostgreSQL with psycopg 3)."""
    connection = connections[using]
    return dialect(connection).listen_supported(connection)


def listen_database(using: str) -> str | None:
    """The alias a worker of ``using`` LISTENs on; ``None``: it cannot (it polls).
    A pooled database without ``LISTEN_DATABASE`` is said once, as a warning."""
    if not listen_supported(using):
        return None
    alias = pooling.listen_alias(using)
    if alias is None:
        logger.warning(
            "database %r goes through a transaction pooler (DISABLE_SERVER_SIDE_CURSORS) "
            'and CONDUCTOR["LISTEN_DATABASE"] is not set: no LISTEN, this worker finds new '
            "work every %s s and cancel requests every %s s by polling", using,
            conf.get("POLL_INTERVAL"), conf.get("CANCEL_POLL_INTERVAL"))
    return alias


class Listener(threading.Thread):
    """A daemon thread with its own connection (on ``using``: see ``listen_database``),
    calling back on each notification."""

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
        outage = Outage("the LISTEN connection")
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
                outage.recovered()
                while not self._stop.is_set():
                    for note in raw.notifies(timeout=0.5):
                        if note.channel == CANCEL_CHANNEL:
                            self.on_cancel(*cancel_request(raw, note.payload))
                        else:
                            self.on_new(note.payload)
            except Exception as exc:
                if self._stop.is_set():
                    break
                outage.failed(exc, backoff.pause)
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


class LocalListener(threading.Thread):
    """SQLite: a daemon thread waiting on this worker's wake-up socket (``store.wakeup``),
    calling back as ``Listener`` does. The poll stays the fallback."""

    def __init__(
        self,
        using: str,
        worker_id: uuid.UUID,
        on_new: Callable[[str], None],
        on_cancel: Callable[[str, str], None],
    ) -> None:
        super().__init__(name="conductor-wakeup", daemon=True)
        self.using = using
        self.on_new = on_new
        self.on_cancel = on_cancel
        self._stopping = threading.Event()
        connection = connections[using]
        where = wakeup.folder(connection)
        if where is None:
            raise ValueError(f"database {using!r} has no local wake-up (not a SQLite file)")
        self.inbox = wakeup.Inbox(where, worker_id, connection.settings_dict["NAME"])

    def stop(self) -> None:
        """Stop waiting and remove the socket (at once: an idle worker stops quickly)."""
        self._stopping.set()
        self.inbox.interrupt()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(1.0)

    def run(self) -> None:
        try:
            self.on_new("")  # anything announced before the socket existed: look now
            while not self._stopping.is_set():
                for message in self.inbox.receive(0.5):
                    kind, detail = message[:1], message[1:].decode(errors="replace")
                    if kind == wakeup.CANCEL:
                        self._cancel(detail)
                    elif kind == wakeup.NEW:
                        self.on_new(detail)
        finally:
            self.inbox.close()
            connections.close_all()

    def _cancel(self, execution_id: str) -> None:
        try:
            reason = Execution.objects.cancel_requested(execution_id, self.using)
        except Exception:  # noqa: BLE001 - the cancel poll delivers it then
            logger.warning("could not read the cancel request of %s", execution_id,
                           exc_info=True)
            return
        if reason is not None:
            self.on_cancel(execution_id, reason)


def start_local(using: str, worker_id: uuid.UUID, on_new: Callable[[str], None],
                on_cancel: Callable[[str, str], None]) -> LocalListener | None:
    """Start the local wake-up of a SQLite file database; ``None`` where there is none
    or its socket cannot be made (the worker then polls, as it always may)."""
    if wakeup.folder(connections[using]) is None:
        return None
    try:
        local = LocalListener(using, worker_id, on_new, on_cancel)
    except OSError as exc:
        logger.warning("no local wake-up for database %r (%s): the worker polls", using, exc)
        return None
    local.start()
    return local
