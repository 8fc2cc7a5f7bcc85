"""The worker's wake-up thread: it listens on the transport of the wake-up protocol
(``store.wakeup``: PostgreSQL's NOTIFY or a SQLite file's socket) and calls back,
``on_new(queue)`` for new work and ``on_cancel(execution id, reason)`` for a cancel.
Where the database has no transport nothing listens and the worker polls."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable

from django.db import connections

from .. import conf
from ..exceptions import DEFAULT_REASON
from ..models import Execution
from ..store import pooling, wakeup
from .retry import Backoff, Outage

logger = logging.getLogger("conductor_django.worker")

THREAD_NAMES: dict[wakeup.Transport | None, str] = {
    wakeup.NOTIFY: "conductor-listener", wakeup.SOCKET: "conductor-wakeup"}
#: What the outage lines call the listener (``retry.Outage``).
OUTAGE_NAMES: dict[wakeup.Transport | None, str] = {
    wakeup.NOTIFY: "the LISTEN connection", wakeup.SOCKET: "the wake-up socket"}


def _reason_of(using: str) -> Callable[[str], str | None]:
    """How the listener completes a cancel that came without its reason: the manager's
    read of the row (``None``: no cancel requested any more)."""
    return functools.partial(Execution.objects.cancel_requested, using=using)


class Listener(threading.Thread):
    """A daemon thread calling back on each wake-up; it reopens its transport (with a
    backoff) when the database goes away. The poll stays the fallback."""

    def __init__(
        self,
        using: str,
        worker_id: uuid.UUID,
        on_new: Callable[[str], None],
        on_cancel: Callable[[str, str], None],
        opened: wakeup.Listening | None = None,
    ) -> None:
        kind = opened.kind if opened is not None else wakeup.transport(using)
        super().__init__(name=THREAD_NAMES.get(kind, "conductor-listener"), daemon=True)
        self._outage_name = OUTAGE_NAMES.get(kind, "the wake-up listener")
        self.using = using
        self.worker_id = worker_id
        self.on_new = on_new
        self.on_cancel = on_cancel
        self._opened = opened
        self._stopping = threading.Event()
        self.ready = threading.Event()

    def _open(self) -> wakeup.Listening:
        opened, self._opened = self._opened, None
        if opened is not None:
            return opened
        listening = wakeup.listen(self.using, self.worker_id, _reason_of(self.using))
        if listening is None:
            raise RuntimeError(f"database {self.using!r} has no wake-up transport")
        return listening

    def stop(self) -> None:
        """Stop listening; at once where the transport can be interrupted (the socket:
        an idle worker stops quickly), else within the receive's timeout."""
        self._stopping.set()
        listening = self._current
        if listening is not None and listening.interrupt():
            if self.is_alive() and threading.current_thread() is not self:
                self.join(1.0)

    _current: wakeup.Listening | None = None

    def run(self) -> None:
        backoff = Backoff(0.1, 5.0)
        outage = Outage(self._outage_name)
        try:
            while not self._stopping.is_set():
                try:
                    self._current = self._open()
                    self.ready.set()
                    self.on_new("")  # anything announced while not listening: look now
                    backoff.reset()
                    outage.recovered()
                    while not self._stopping.is_set():
                        for wake in self._current.receive(0.5):
                            if wake.kind == "cancel":
                                self.on_cancel(wake.detail, wake.reason or DEFAULT_REASON)
                            else:
                                self.on_new(wake.detail)
                except Exception as exc:
                    if self._stopping.is_set():
                        break
                    outage.failed(exc, backoff.pause)
                    backoff.wait(self._stopping)
                finally:
                    if self._current is not None:
                        self._current.close()
                        self._current = None
        finally:
            if self._opened is not None:  # stopped before it listened: remove the socket
                self._opened.close()
            connections.close_all()  # this thread's connection (reading long reasons)


def listen_database(using: str) -> str | None:
    """The alias a worker of ``using`` LISTENs on; ``None``: it cannot (it polls).
    A pooled database without ``LISTEN_DATABASE`` is said once, as a warning."""
    if not wakeup.listen_supported(using):
        return None
    alias = pooling.listen_alias(using)
    if alias is None:
        logger.warning(
            "database %r goes through a transaction pooler (DISABLE_SERVER_SIDE_CURSORS) "
            'and CONDUCTOR["LISTEN_DATABASE"] is not set: no LISTEN, this worker finds new '
            "work every %s s and cancel requests every %s s by polling", using,
            conf.get("POLL_INTERVAL"), conf.get("CANCEL_POLL_INTERVAL"))
    return alias


def start(using: str, worker_id: uuid.UUID, on_new: Callable[[str], None],
          on_cancel: Callable[[str, str], None]) -> Listener | None:
    """Start the wake-up thread of a worker; ``None`` where the database has no
    transport, or a SQLite file's socket cannot be made (the worker then polls, as it
    always may). Behind a transaction pooler the LISTEN connection is one of
    ``CONDUCTOR["LISTEN_DATABASE"]``; without it the worker polls and says so."""
    kind = wakeup.transport(using)
    if kind is None:
        listen_database(using)  # a pooled PostgreSQL: the warning
        return None
    opened = None
    if kind == wakeup.SOCKET:  # made now: no socket, no thread
        try:
            opened = wakeup.listen(using, worker_id, _reason_of(using))
        except OSError as exc:
            logger.warning("no local wake-up for database %r (%s): the worker polls",
                           using, exc)
            return None
    listener = Listener(using, worker_id, on_new, on_cancel, opened)
    listener.start()
    return listener
