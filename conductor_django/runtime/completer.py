"""Batched completion writes for the threaded worker.

Handlers that return hand their result to the ``Completer``; its thread writes
everything that finished since its last write in one ``UPDATE ... FROM (VALUES ...)``
(``Execution.objects.complete_many``). There is no artificial delay: while one write is on its
way, the next batch gathers. A result still in the buffer when the worker dies is
lost like any work of a crashed worker: the execution is still ``running`` under the
dead worker's id and is recovered and run again.

A write that fails for a reason other than the connection (a result the database
refuses) is tried again row by row: the other results are written, and the row that
cannot be written is failed with a clear ``last_error`` (``isolate``), so that one
poison result never holds up the completions of other executions.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from django.db import DatabaseError, InterfaceError, connections

from ..definitions.values import storable_text
from ..exceptions import error_text
from ..models import Execution
from .retry import Backoff, Outage
from .sessions import enroll
from .unit import TRANSIENT

logger = logging.getLogger("conductor_django.worker")

MAX_BATCH = 500


class Completer(threading.Thread):
    def __init__(self, worker_id: uuid.UUID, using: str, dead_after: float) -> None:
        super().__init__(name="conductor-completer", daemon=True)
        self.worker_id = worker_id
        self.using = using
        self.dead_after = dead_after
        self._items: list[tuple[str, int, Any]] = []
        self._cond = threading.Condition()
        self._closing = False
        self._idle = threading.Event()
        self._idle.set()

    def submit(self, execution_id: str, lease: int, result: Any) -> bool:
        with self._cond:
            self._items.append((execution_id, lease, result))
            self._idle.clear()
            self._cond.notify()
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is buffered and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self.join(timeout)

    def pending(self) -> set[str]:
        """The executions whose results are submitted and not yet written."""
        with self._cond:
            return {eid for eid, _, _ in self._items}

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written."""
        return self._idle.wait(timeout)

    def run(self) -> None:
        enroll(self.using, self.dead_after)
        backoff = Backoff(0.05, 2.0)
        outage = Outage("the result writer")
        try:
            while True:
                with self._cond:
                    while not self._items and not self._closing:
                        self._idle.set()
                        self._cond.wait()
                    if not self._items and self._closing:
                        self._idle.set()
                        return
                    batch = self._items[:MAX_BATCH]
                try:
                    written = self._write(batch)
                except (DatabaseError, InterfaceError) as exc:
                    outage.failed(exc, backoff.pause)  # the results wait in the buffer
                    connections[self.using].close()
                    backoff.wait()
                    continue
                backoff.reset()
                outage.recovered()
                with self._cond:
                    del self._items[: len(batch)]
                if written < len(batch):
                    logger.warning("%d of %d results were not written: the executions were "
                                   "taken from this worker", len(batch) - written, len(batch))
        finally:
            connections.close_all()

    def _write(self, batch: list[tuple[str, int, Any]]) -> int:
        try:
            return Execution.objects.complete_many(batch, self.worker_id, self.using)
        except TRANSIENT:
            raise  # the connection: retried as a whole
        except DatabaseError as exc:
            if len(batch) == 1:
                return self.isolate(batch[0], exc)
            logger.warning("could not write %d results at once; writing them one by one",
                           len(batch), exc_info=True)
        written = 0
        for item in batch:
            try:
                written += Execution.objects.complete_many([item], self.worker_id, self.using)
            except TRANSIENT:
                raise
            except DatabaseError as exc:
                written += self.isolate(item, exc)
        return written

    def isolate(self, item: tuple[str, int, Any], exc: BaseException) -> int:
        """A result the database refuses: fail its execution for good, saying why."""
        eid, lease, _ = item
        message = storable_text(f"Could not store the result: {error_text(exc)}")
        logger.error("execution %s: %s", eid, message)
        return Execution.objects.fail(eid, self.worker_id, lease, message, None, self.using,
                                      may_have_parent=False)
