"""The wake-up protocol: how a commit wakes the workers (and the async waiters) at once.

A worker would find everything by polling; wake-ups only cut the latency. Three
**messages**, each on its own PostgreSQL channel:

- *new work* (``NEW_CHANNEL``, payload: the queue name, ``""`` for any queue): an
  execution became runnable. Sent by the triggers of migration 0002 on PostgreSQL, by
  ``announce_new`` after ``invoke``/``invoke_many`` commit on SQLite.
- *cancel* (``CANCEL_CHANNEL``, payload: the execution id, a newline and the reason;
  the id alone when the reason is longer than ``NOTIFY_REASON_BYTES``): an operator
  asked a running execution to stop. Sent by ``request_cancel`` in the statement that
  flags the row (``Dialect.request_cancel``). A cancel without its reason (too long
  for a payload, or any SQLite datagram) is completed by reading the row
  (``reason_of``, the listener's ``Execution.objects.cancel_requested``).
- *finished* (``DONE_CHANNEL``, payload: the execution id): PostgreSQL only, sent by
  the trigger of migration 0016; ``finished`` waits for it (``asyncapi``).

Three **transports**, chosen by ``transport(using)``:

- ``NOTIFY``: PostgreSQL with psycopg 3, LISTEN/NOTIFY on a connection of its own
  (``Notifications``), sent with the commit.
- ``SOCKET``: a SQLite database file: each worker binds a Unix datagram socket in a
  folder beside that file (``<database>.conductor-wake/<worker id>.sock``, ``Inbox``).
  After the commit the committing process sends one datagram to every socket in the
  folder (``send``): ``n`` and the queue name, or ``c`` and the execution id.
- ``None``: polling (MySQL/MariaDB, an in-memory SQLite, psycopg 2, no Unix sockets):
  nothing listens; the worker's poll and the cancel poll find everything, as they
  do after a lost message on the other transports.

``listen`` opens the transport of a worker; its ``receive`` yields ``Wake`` messages
as they arrive. The worker's thread and callbacks are ``runtime/listener.py``.

The socket transport is robust by construction: a missing folder means no worker
listens; a socket whose worker died without removing it refuses the datagram and is
removed by the sender; a full socket buffer means that worker has wake-ups pending
already; a sender that may not write to a socket (another user) is skipped. All of it
is best effort and never fails the ``invoke`` or ``cancel`` that triggered it. The
folder and the sockets get the access rights of the database file, so whoever may
write the database may wake its workers. Unix only (elsewhere workers poll).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import socket
import stat
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from django.db import connections, transaction

from . import pooling
from .vendor import dialect

logger = logging.getLogger("conductor_django")

# --- the messages ------------------------------------------------------------------------

NEW_CHANNEL = "conductor_new"
CANCEL_CHANNEL = "conductor_cancel"
DONE_CHANNEL = "conductor_done"
#: Longest reason (in bytes) sent in a cancel's NOTIFY payload (PostgreSQL's limit for a
#: payload is 8000 bytes); a longer one is read from the row by the listener.
NOTIFY_REASON_BYTES = 7000

#: The first byte of a datagram of the socket transport.
NEW = b"n"
CANCEL = b"c"

#: The transports (``None``: polling).
Transport = Literal["notify", "socket"]
NOTIFY: Transport = "notify"
SOCKET: Transport = "socket"


@dataclass(frozen=True)
class Wake:
    """One wake-up: new work on queue ``detail`` (``""``: any queue), or a cancel of the
    execution ``detail`` whose ``reason`` is ``None`` when the message did not carry it."""

    kind: Literal["new", "cancel"]
    detail: str
    reason: str | None = None


def decode_notification(channel: str, payload: str) -> Wake:
    """The ``Wake`` of a PostgreSQL notification on ``NEW_CHANNEL`` or ``CANCEL_CHANNEL``."""
    if channel == CANCEL_CHANNEL:
        eid, newline, reason = payload.partition("\n")
        return Wake("cancel", eid, reason if newline else None)
    return Wake("new", payload)


def encode_datagram(kind: bytes, detail: str) -> bytes:
    """A datagram of the socket transport: ``NEW`` or ``CANCEL`` and the queue or id."""
    return kind + detail.encode()


def decode_datagram(message: bytes) -> Wake | None:
    """The ``Wake`` of a datagram; ``None`` for anything else (the empty datagram of
    ``Inbox.interrupt``)."""
    kind, detail = message[:1], message[1:].decode(errors="replace")
    if kind == CANCEL:
        return Wake("cancel", detail)
    if kind == NEW:
        return Wake("new", detail)
    return None


# --- sending -------------------------------------------------------------------------------


def listen_supported(using: str) -> bool:
    """Whether database ``using`` has LISTEN/NOTIFY (PostgreSQL with psycopg 3)."""
    connection = connections[using]
    return dialect(connection).listen_supported(connection)


def transport(using: str) -> Transport | None:
    """How the workers of database ``using`` are woken; ``None``: they poll (also a
    transaction-pooled PostgreSQL without ``LISTEN_DATABASE``: ``store.pooling``)."""
    connection = connections[using]
    if dialect(connection).listen_supported(connection):
        return NOTIFY if pooling.listen_alias(using) is not None else None
    return SOCKET if folder(connection) is not None else None


def announce_new(using: str, queue: str) -> None:
    """New work on ``queue`` (``""``: several) was written in the current transaction:
    wake the local workers once it commits (PostgreSQL's triggers announce it there)."""
    _announce(using, NEW, queue)


def request_cancel(using: str, table: str, execution_id: uuid.UUID, reason: str) -> bool:
    """Flag the running execution ``execution_id`` cancelled with ``reason`` and wake its
    worker (NOTIFY in the same statement, or a datagram after the commit); whether the
    row was flagged."""
    connection = connections[using]
    requested = dialect(connection).request_cancel(
        connection, table, execution_id, reason, CANCEL_CHANNEL, NOTIFY_REASON_BYTES)
    if requested:
        _announce(using, CANCEL, str(execution_id))
    return requested


def _announce(using: str, kind: bytes, detail: str) -> None:
    """Wake the local workers of ``using`` once the current transaction commits (at once
    in autocommit); nothing where there is no wake-up folder."""
    where = folder(connections[using])
    if where is None:
        return
    message = encode_datagram(kind, detail)
    transaction.on_commit(lambda: send(where, message), using=using, robust=True)


# --- listening -----------------------------------------------------------------------------


class Listening:
    """A worker's open transport: ``receive`` yields the ``Wake`` messages that arrive
    within a timeout, each cancel with its reason (read with ``reason_of`` when the
    message did not carry it; a cancel no longer requested is dropped)."""

    kind: Transport

    def __init__(self, reason_of: Callable[[str], str | None]) -> None:
        self._reason_of = reason_of

    def receive(self, timeout: float) -> Iterator[Wake]:
        for wake in self._messages(timeout):
            if wake.kind == "cancel" and wake.reason is None:
                try:
                    reason = self._reason_of(wake.detail)
                except Exception:  # noqa: BLE001 - the cancel poll delivers it then
                    logger.warning("could not read the cancel request of %s", wake.detail,
                                   exc_info=True)
                    continue
                if reason is None:
                    continue
                wake = Wake("cancel", wake.detail, reason)
            yield wake

    def _messages(self, timeout: float) -> Iterator[Wake]:
        raise NotImplementedError

    def interrupt(self) -> bool:
        """End a ``receive`` waiting in another thread now; whether this transport can."""
        return False

    def close(self) -> None:
        raise NotImplementedError


class Notifications(Listening):
    """PostgreSQL: LISTEN on a connection of its own (autocommit)."""

    kind: Transport = NOTIFY

    def __init__(self, using: str, reason_of: Callable[[str], str | None]) -> None:
        super().__init__(reason_of)
        # a direct connection where ``using`` goes through a transaction pooler
        self._wrapper = connections.create_connection(pooling.listen_alias(using) or using)
        try:
            self._wrapper.ensure_connection()
            self._raw = self._wrapper.connection
            self._raw.autocommit = True
            self._raw.execute(f"LISTEN {NEW_CHANNEL}")
            self._raw.execute(f"LISTEN {CANCEL_CHANNEL}")
        except Exception:
            self.close()
            raise

    def _messages(self, timeout: float) -> Iterator[Wake]:
        for note in self._raw.notifies(timeout=timeout):
            yield decode_notification(note.channel, note.payload)

    def close(self) -> None:
        try:
            self._wrapper.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass


class SocketInbox(Listening):
    """A SQLite database file: this worker's ``Inbox``."""

    kind: Transport = SOCKET

    def __init__(self, using: str, worker_id: uuid.UUID,
                 reason_of: Callable[[str], str | None]) -> None:
        super().__init__(reason_of)
        connection = connections[using]
        where = folder(connection)
        if where is None:
            raise ValueError(f"database {using!r} has no local wake-up (not a SQLite file)")
        self.inbox = Inbox(where, worker_id, connection.settings_dict["NAME"])

    def _messages(self, timeout: float) -> Iterator[Wake]:
        for message in self.inbox.receive(timeout):
            wake = decode_datagram(message)
            if wake is not None:
                yield wake

    def interrupt(self) -> bool:
        self.inbox.interrupt()
        return True

    def close(self) -> None:
        self.inbox.close()


def listen(using: str, worker_id: uuid.UUID,
           reason_of: Callable[[str], str | None]) -> Listening | None:
    """Open the transport that wakes worker ``worker_id`` of database ``using``;
    ``None`` where it polls. Raises what opening it raised (a database error, an
    ``OSError`` of the socket)."""
    kind = transport(using)
    if kind == NOTIFY:
        return Notifications(using, reason_of)
    if kind == SOCKET:
        return SocketInbox(using, worker_id, reason_of)
    return None


class FinishedNotices:
    """The ``DONE_CHANNEL`` notifications of one async connection."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    async def wait(self, execution_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``execution_id`` to be announced finished."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                async for note in self._raw.notifies():
                    if note.payload == execution_id:
                        return True
        except TimeoutError:
            pass
        return False


@asynccontextmanager
async def finished(using: str) -> AsyncIterator[FinishedNotices | None]:
    """Listen for finished executions on ``using`` (psycopg's ``AsyncConnection``, found
    through Django's backend); ``None`` where LISTEN is not available (then poll)."""
    connection: Any = connections[using]
    alias = pooling.listen_alias(using)
    if not dialect(connection).listen_supported(connection) or alias is None:
        yield None
        return
    connection = connections[alias]  # ``CONDUCTOR["LISTEN_DATABASE"]``, when set
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)  # Django's sync cursor classes
    raw = await connection.Database.AsyncConnection.connect(**params, autocommit=True)
    try:
        await raw.execute(f"LISTEN {DONE_CHANNEL}")
        yield FinishedNotices(raw)
    finally:
        await raw.close()


# --- the socket transport ------------------------------------------------------------------

SUFFIX = ".sock"
#: ``sun_path`` holds 108 bytes on Linux (104 on BSDs): longer paths use a folder in
#: the temporary directory named after the database file's path instead.
MAX_SOCKET_PATH = 100


def folder(connection: Any) -> Path | None:
    """Where the wake-up sockets of this database live; ``None`` when there are none
    (not SQLite, an in-memory database, or no Unix sockets on this platform)."""
    database = dialect(connection).local_wakeup_file(connection)
    if database is None or not hasattr(socket, "AF_UNIX"):
        return None
    return folder_for(database)


def folder_for(database: str) -> Path:
    """The wake-up folder of the SQLite database file ``database``."""
    path = Path(os.path.abspath(database))
    beside = path.with_name(path.name + ".conductor-wake")
    if len(str(beside)) + 1 + 32 + len(SUFFIX) <= MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"conductor-wake-{digest}"


def send(where: Path, message: bytes) -> int:
    """Send ``message`` to every worker socket in ``where``; returns how many got it."""
    try:
        entries = list(os.scandir(where))
    except OSError:
        return 0  # no folder: no worker listens
    sent = 0
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError:  # out of file descriptors: the poll finds the work
        logger.debug("could not open a socket to wake workers", exc_info=True)
        return 0
    with sock:
        sock.setblocking(False)
        for entry in entries:
            if not entry.name.endswith(SUFFIX):
                continue
            try:
                sock.sendto(message, entry.path)
                sent += 1
            except (ConnectionRefusedError, FileNotFoundError):
                _remove_stale(entry.path)
            except OSError as exc:  # EAGAIN (full: wake-ups pending), EACCES, ...
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES,
                                     errno.EPERM):
                    logger.debug("could not wake the worker at %s", entry.path,
                                 exc_info=True)
    return sent


def _remove_stale(path: str) -> None:
    """A socket nobody reads: its worker died without removing it."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


class Inbox:
    """A worker's wake-up socket: bound on creation, removed by ``close``."""

    def __init__(self, where: Path, worker_id: uuid.UUID, database: str | None = None) -> None:
        mode = _mode_of(database)
        try:
            where.mkdir(mode=_folder_mode(mode), exist_ok=True)
        except FileExistsError:
            pass
        self.path = where / f"{worker_id.hex}{SUFFIX}"
        _remove_stale(str(self.path))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.bind(str(self.path))
            os.chmod(self.path, mode)
        except OSError:
            self.sock.close()
            raise

    def receive(self, timeout: float) -> list[bytes]:
        """The datagrams that arrive within ``timeout`` seconds (all those waiting)."""
        self.sock.settimeout(timeout)
        try:
            messages = [self.sock.recv(512)]
        except (TimeoutError, BlockingIOError, InterruptedError):
            return []
        self.sock.setblocking(False)
        while True:
            try:
                messages.append(self.sock.recv(512))
            except (BlockingIOError, InterruptedError):
                return messages

    def interrupt(self) -> None:
        """End a ``receive`` waiting in another thread now (an empty datagram)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
                poke.sendto(b"", str(self.path))
        except OSError:  # closed already, or full: that receive ends on its timeout
            pass

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _mode_of(database: str | None) -> int:
    """The read/write bits of the database file (``0o600`` if it cannot be read)."""
    try:
        return stat.S_IMODE(os.stat(database).st_mode) & 0o666 if database else 0o600
    except OSError:
        return 0o600


def _folder_mode(mode: int) -> int:
    """The folder's bits: whoever may read the database may enter and list it (the
    umask still applies, as to any folder created)."""
    return mode | ((mode & 0o444) >> 2) | 0o700
