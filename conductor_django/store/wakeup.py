"""SQLite: wake local workers at once, where PostgreSQL has LISTEN/NOTIFY.

Each worker on a SQLite database file binds a Unix datagram socket in a folder beside
that file (``<database>.conductor-wake/<worker id>.sock``). After a commit that starts
an execution (``invoke``, ``invoke_many``) or asks a running one to stop (``cancel``),
the committing process sends one datagram to every socket in the folder: ``n`` and
the queue name for new work, ``c`` and the execution id for a cancel. The worker
waiting on its socket claims (or polls its cancel requests) at once instead of at its
next poll; the poll stays as the fallback, so a lost datagram only costs latency.

Robust by construction: a missing folder means no worker listens; a socket whose
worker died without removing it refuses the datagram and is removed by the sender; a
full socket buffer means that worker has wake-ups pending already; a sender that may
not write to a socket (another user) is skipped. All of it is best effort and never
fails the ``invoke`` or ``cancel`` that triggered it. The folder and the sockets get
the access rights of the database file, so whoever may write the database may wake
its workers. Unix only (elsewhere workers poll).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any

from django.db import connections, transaction

from .vendor import dialect

logger = logging.getLogger("conductor_django")

NEW = b"n"
CANCEL = b"c"
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


def announce(using: str, kind: bytes, detail: str = "") -> None:
    """Wake the local workers of ``using`` once the current transaction commits (at
    once in autocommit); nothing where there is no wake-up folder."""
    where = folder(connections[using])
    if where is None:
        return
    message = kind + detail.encode()
    transaction.on_commit(lambda: send(where, message), using=using, robust=True)


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
