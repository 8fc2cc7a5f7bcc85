"""Stores the last log lines of each execution (``ExecutionLog``), shown in the admin.

While a handler runs, ``capture(ctx, using)`` collects log lines into a bounded
in-memory buffer (the last ``LOG_LINES``, at or above ``LOG_LEVEL``) and writes them
when the attempt ends, in one INSERT, then trims the execution's rows to the newest
``LOG_LINES``. Nothing is written per line, so logging stays cheap and a handler's
own transaction (rolled back or not) has no effect on what is stored.

Two sources feed the buffer:

* ``ctx.logger``: every call at or above ``LOG_LEVEL``, whatever the project's logging
  configuration lets through to its handlers (and from any thread the handler starts);
* any other logger, through ``ThreadHandler`` on the root logger, for records emitted
  on the thread running the execution, as far as the logging configuration lets them
  reach the root logger.

An exception that ends the attempt is stored as an ERROR line with its traceback.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .. import conf
from ..definitions.values import storable_text
from ..exceptions import AttemptTimedOut, Cancelled, LeaseLost, timed_out
from ..models import Execution, ExecutionLog
from ..store.transactions import write_transaction
from .context import TaskLoggerAdapter

if TYPE_CHECKING:
    from .context import Context

logger = logging.getLogger("conductor_django.worker")

MAX_MESSAGE = 10_000  # characters kept of one line (with its traceback)
STORED = "conductor_stored"  # record attribute: the line is in a buffer already


def level_number(value: Any) -> int | None:
    """The numeric level of ``LOG_LEVEL`` (an int or a name like ``"INFO"``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        return logging.getLevelNamesMapping().get(value.upper())
    return None


class LogBuffer:
    """The newest ``limit`` lines of one attempt; thread-safe."""

    def __init__(self, limit: int, level: int) -> None:
        self.level = level
        self.lines: deque[tuple[datetime, int, str, str]] = deque(maxlen=limit)
        self.dropped = 0
        self.closed = False
        self._lock = threading.Lock()

    def add(self, level: int, name: str, message: str, created: float | None = None) -> None:
        if self.closed or level < self.level:
            return
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        when = datetime.fromtimestamp(created, UTC) if created else datetime.now(UTC)
        with self._lock:
            if len(self.lines) == self.lines.maxlen:
                self.dropped += 1
            self.lines.append((when, level, storable_text(name[:200]), storable_text(message)))

    def absorb(self, other: LogBuffer) -> None:
        """Put the lines of ``other`` before this buffer's (the newest ``limit`` kept)."""
        lines = other.take()
        with self._lock:
            merged = [*lines, *self.lines]
            self.dropped += other.dropped + max(0, len(merged) - (self.lines.maxlen or 0))
            self.lines = deque(merged, maxlen=self.lines.maxlen)

    def take(self) -> list[tuple[datetime, int, str, str]]:
        with self._lock:
            self.closed = True
            lines, self.lines = list(self.lines), deque(maxlen=self.lines.maxlen)
            return lines


class CapturingLoggerAdapter(TaskLoggerAdapter):
    """``ctx.logger`` while capturing: also puts each line into the execution's buffer."""

    def __init__(self, logger: logging.Logger, extra: Mapping[str, object] | None,
                 buffer: LogBuffer) -> None:
        super().__init__(logger, extra)
        self.buffer = buffer

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.buffer.closed and level >= self.buffer.level:
            try:
                message = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                message = f"{msg} {args!r}"
            exc_info = kwargs.get("exc_info")
            if exc_info:
                if not isinstance(exc_info, tuple | BaseException):
                    exc_info = sys.exc_info()
                if isinstance(exc_info, BaseException):
                    exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
                if exc_info[0] is not None:
                    message += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
            self.buffer.add(level, self.logger.name, message)
            kwargs["extra"] = {**(kwargs.get("extra") or {}), STORED: True}
        super().log(level, msg, *args, **kwargs)


class ThreadHandler(logging.Handler):
    """On the root logger: puts records of a thread running an execution into its buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        buffer: LogBuffer | None = getattr(self.local, "buffer", None)
        if buffer is None or getattr(record, STORED, False):
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                message += "\n" + self._formatter.formatException(record.exc_info)
            buffer.add(record.levelno, record.name, message, record.created)
        except Exception:  # noqa: BLE001 - a bad log call must not break the handler
            self.handleError(record)


_handler = ThreadHandler()
_install_lock = threading.Lock()


def install() -> ThreadHandler:
    """Attach ``ThreadHandler`` to the root logger (again, if logging was reconfigured)."""
    root = logging.getLogger()
    if _handler not in root.handlers:
        with _install_lock:
            if _handler not in root.handlers:
                root.addHandler(_handler)
    return _handler


def settings() -> tuple[int, int]:
    """(``LOG_LINES``, numeric ``LOG_LEVEL``)."""
    level = level_number(conf.get("LOG_LEVEL"))
    return int(conf.get("LOG_LINES")), logging.INFO if level is None else level


@contextmanager
def capture(ctx: Context, using: str, first: bool = False) -> Iterator[LogBuffer | None]:
    """Collect the log lines of the attempt running in this block; store them at its end.

    ``first``: the execution's first run (no line of it can be stored yet).
    """
    limit, level = settings()
    if limit <= 0:
        yield None
        return
    buffer = LogBuffer(limit, level)
    plain = ctx.logger
    ctx.logger = CapturingLoggerAdapter(plain.logger, plain.extra, buffer)
    handler = install()
    previous = getattr(handler.local, "buffer", None)
    handler.local.buffer = buffer
    lost = False
    try:
        yield buffer
    except LeaseLost:
        lost = True  # another worker holds the execution now: nothing more is written
        raise
    except Cancelled as exc:
        buffer.add(logging.WARNING, "conductor_django", f"Cancelled: {exc.reason}")
        raise
    except AttemptTimedOut:
        buffer.add(logging.ERROR, "conductor_django", timed_out(ctx.timeout))
        raise
    except Exception as exc:
        text = "".join(traceback.format_exception(exc)).rstrip()
        buffer.add(logging.ERROR, "conductor_django", f"Attempt {ctx.attempt} failed:\n{text}")
        raise
    finally:
        handler.local.buffer = previous
        ctx.logger = plain
        if not lost:
            holder = (ctx._runtime.worker_id, ctx.lease)
            store(ctx.execution_id, ctx.attempt, buffer, limit, using, trim=not first,
                  holder=holder)


def store(execution_id: str, attempt: int, buffer: LogBuffer, limit: int, using: str,
          trim: bool = True, holder: tuple[Any, int] | None = None) -> int:
    """Write the buffered lines and keep only the newest ``limit`` rows; never raises.

    One INSERT, and with ``trim`` in the same transaction a DELETE of the rows older
    than the newest ``limit`` (found by a read of the ``(execution, id)`` index). The first
    run of an execution needs no trim: the buffer holds at most ``limit`` lines.
    ``holder``: ``(worker id, lease)`` of the attempt; nothing is written unless that
    worker still holds the execution under that lease.
    """
    lines = buffer.take()
    if not lines:
        return 0
    rows = [
        ExecutionLog(execution_id=execution_id, attempt=attempt, created_at=when, level=level,
                     logger=name, message=message)
        for when, level, name, message in lines
    ]
    try:
        with write_transaction(using):
            if holder is not None and not Execution.objects.lock_held(execution_id, *holder,
                                                                      using):
                return 0  # the execution was recovered from this worker
            ExecutionLog.objects.using(using).bulk_create(rows)
            if trim:
                logs = ExecutionLog.objects.using(using).filter(execution_id=execution_id)
                # the newest row beyond the kept ones, then every row up to it (MariaDB
                # has no LIMIT in an IN subquery): two reads of the (execution, id) index
                drop = logs.order_by("-id").values_list("id", flat=True)[limit:limit + 1]
                cutoff = next(iter(drop), None)
                if cutoff is not None:
                    logs.filter(id__lte=cutoff).delete()
    except Exception:  # noqa: BLE001 - losing log lines must not lose the outcome
        logger.warning("could not store the log lines of %s", execution_id, exc_info=True)
        return 0
    return len(rows)
