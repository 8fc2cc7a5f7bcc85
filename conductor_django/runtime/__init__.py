"""State shared between a worker and the handlers it runs, and the worker's leases.

A claim is a lease on the execution (``state/execution.py``: ``locked_by`` plus a fencing token),
and it holds as long as the worker's heartbeat does: other workers recover the
executions of a worker whose heartbeat is older than ``WORKER_DEAD_AFTER``. So a
handler may trust its lease without asking the database while the worker's last
confirmed heartbeat is recent (``lease_fresh``); past that (the process was frozen,
paused or cut off), every step boundary asks the database (``Execution.objects.holds``). A
heartbeat that finds the worker's row gone means the worker was presumed dead: every
handler in flight is stopped (``LeaseLost`` at its next boundary) and writes nothing
more, and none of those executions is claimed again by this worker until its stale
handler has ended.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..models import Execution, Worker

logger = logging.getLogger("conductor_django.worker")

LOST = "lost"  # ``ctx.signal.reason`` of an execution this worker no longer holds


class InFlight(Protocol):
    """What the worker sees of a running execution: its signal, lease and deadline."""

    signal: Any
    lease: int
    deadline: float | None
    timeout: float | None


@dataclass
class Runtime:
    """The worker as handlers see it: its id, database, shutdown flag, running contexts."""

    worker_id: uuid.UUID
    using: str = "default"
    inline: bool = False  # handlers run on the worker's own thread (testing.drain)
    stopping: threading.Event = field(default_factory=threading.Event)
    inflight: dict[str, Any] = field(default_factory=dict)
    #: Writes a handler's result; the threaded worker batches these (``Completer``).
    complete: Callable[[str, int, Any], bool] | None = None
    #: ``WORKER_DEAD_AFTER``: how long other workers wait before recovering ours.
    dead_after: float = 30.0
    #: ``time.monotonic()`` when the last heartbeat that found this worker's row began.
    confirmed: float = field(default_factory=time.monotonic)
    #: Exceptions a handler may raise that are not its outcome and leave the attempt
    #: unrecorded: an engine's hard time limit (django-q2's ``TimeoutException``), which
    #: the engine records itself. Any other exception, ``SystemExit``, ``KeyboardInterrupt``
    #: and ``BaseException`` subclasses included, fails the attempt like any error.
    passthrough: tuple[type[BaseException], ...] = ()

    def write_result(self, execution_id: str, lease: int, result: Any) -> bool:
        """Record a returned result; ``False`` if the lock was lost (written at once)."""
        if self.complete is not None:
            return self.complete(execution_id, lease, result)
        return bool(Execution.objects.complete(execution_id, self.worker_id, lease, result,
                                               self.using))

    # --- leases ------------------------------------------------------------------------

    def lease_fresh(self) -> bool:
        """Whether no other worker can have recovered this worker's executions yet.

        Half of ``WORKER_DEAD_AFTER`` since the last confirmed heartbeat leaves room for
        clock drift between machines and for a heartbeat that is slow to commit.
        """
        return time.monotonic() - self.confirmed < self.dead_after / 2

    def heartbeat(self, row: Worker) -> bool:
        """Refresh this worker's heartbeat; ``False`` if it had been presumed dead.

        Then every execution in flight is given up (its handler stops at its next
        boundary and writes nothing) and the row is registered again, so the worker
        goes on with new claims under new leases.
        """
        began = time.monotonic()
        if Worker.objects.heartbeat(row, self.using):
            self.confirmed = began
            return True
        lost = self.abandon_all("this worker was presumed dead (no heartbeat for "
                                f"{self.dead_after:g} s) and its executions were recovered")
        logger.warning("worker %s was presumed dead: gave up %d executions in flight; "
                       "registering again", self.worker_id, lost)
        Worker.objects.register(row, self.using)
        self.confirmed = began
        return False

    def abandon_all(self, why: str) -> int:
        """Stop every handler in flight: this worker holds none of them any more."""
        contexts = list(self.inflight.values())
        for ctx in contexts:
            ctx.signal.abort(LOST, why)
        return len(contexts)

    def verify_lease(self, execution_id: str, ctx: InFlight) -> bool:
        """Whether the lease of ``ctx`` surely holds; if not, its signal is aborted."""
        if ctx.signal.reason == LOST:
            return False
        if self.lease_fresh() or Execution.objects.holds(execution_id, self.worker_id, ctx.lease,
                                               self.using):
            return True
        ctx.signal.abort(LOST, "the execution was recovered from this worker")
        return False

    def check_lease(self, execution_id: str, ctx: InFlight) -> None:
        """At a step boundary: stop with ``LeaseLost`` unless the lease surely holds."""
        if not self.verify_lease(execution_id, ctx):
            ctx.signal.raise_if_aborted()

    def running_here(self) -> list[str]:
        """Every execution a handler of this worker still runs: none of them is claimed by
        this worker again until that handler has ended, so it never runs two attempts of
        one execution at once (even after being presumed dead and recovered from)."""
        return list(self.inflight)
