"""The periodic chores of a process that runs executions, on their own timers.

Shared by the worker loop (``runtime.worker``) and the watcher thread of each django-q2
qcluster process (``engines.django_q``): the heartbeat (which also notices that the
process was presumed dead), recovering the executions of dead workers (the worker only),
polling cancel requests of what runs here, and aborting attempts past their timeout
(the one "Timed out" abort). The worker adds its own chores (schedules, cleanup) on the
same timers through ``every``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import DatabaseError, InterfaceError, connections

from ..exceptions import timed_out
from ..models import Execution
from ..store.stats import oldest_transaction
from . import Runtime
from .cancellation import poll_cancellations
from .retry import Backoff, Outage, reset_connection
from .sessions import enroll

logger = logging.getLogger("conductor_django.worker")

#: How often a worker looks for long transactions, and repeats its warning.
TRANSACTION_CHECK = 60.0
TRANSACTION_REPEAT = 600.0


class Housekeeper:
    def __init__(self, runtime: Runtime, row: Any, *, heartbeat_interval: float,
                 cancel_poll_interval: float, recover: bool = False,
                 heartbeat: bool = True) -> None:
        self.runtime = runtime
        self.row = row
        self.heartbeat = heartbeat  # False: a ``Heartbeat`` thread beats instead
        self.heartbeat_interval = heartbeat_interval
        self.cancel_poll_interval = cancel_poll_interval
        self.recover = recover
        self.due: dict[str, float] = {}
        self._long_since: float | None = None  # when a long transaction was last reported

    def every(self, name: str, interval: float) -> bool:
        """Whether the chore ``name`` is due (then it is next due in ``interval`` s)."""
        now = time.monotonic()
        if now >= self.due.get(name, 0.0):
            self.due[name] = now + interval
            return True
        return False

    def run_due(self) -> None:
        """Heartbeat, recovery and the cancel poll, each when due."""
        runtime = self.runtime
        if self.heartbeat and self.every("heartbeat", self.heartbeat_interval):
            runtime.heartbeat(self.row)
        if self.recover and self.every("recover", self.heartbeat_interval):
            recovered = Execution.objects.recover(runtime.dead_after, runtime.using)
            if recovered:
                logger.warning("recovered %d executions of dead workers", recovered)
        if runtime.inflight and self.every("cancel", self.cancel_poll_interval):
            poll_cancellations(runtime.worker_id, runtime.inflight, runtime.using)

    def watch_transactions(self, warn_after: float | None) -> None:
        """Report a transaction of another session open for ``warn_after`` seconds or
        more (checked every minute): while it lasts, the database keeps every row version
        it might read, so the executions' tables and their indexes grow and the claim
        slows. Once when it is seen, again every ten minutes while it lasts, and once
        when it has ended."""
        if warn_after is None or not self.every("transactions",
                                                min(TRANSACTION_CHECK, warn_after / 2)):
            return
        age = oldest_transaction(connections[self.runtime.using])
        now = time.monotonic()
        if age is not None and age >= warn_after:
            if self._long_since is None or now - self._long_since >= TRANSACTION_REPEAT:
                logger.warning(
                    "a transaction on the database has been open for %.0f s: until it "
                    "ends, no row version it may read is cleaned up, and the tables grow "
                    "(see idle_in_transaction_session_timeout in the operations guide)", age)
                self._long_since = now
        elif self._long_since is not None:
            logger.warning("the long transaction on the database has ended")
            self._long_since = None

    def check_timeouts(self) -> None:
        """Abort the attempts running here that are past their deadline."""
        now = time.monotonic()
        for ctx in list(self.runtime.inflight.values()):
            if ctx.deadline is not None and now >= ctx.deadline:
                ctx.signal.abort("timeout", timed_out(ctx.timeout))

    def sleep_time(self, longest: float, shortest: float = 0.001) -> float:
        """How long to sleep before the next chore or deadline (at most ``longest``)."""
        now = time.monotonic()
        wait = longest
        for name, due in self.due.items():
            if name == "cancel" and not self.runtime.inflight:
                continue
            wait = min(wait, max(0.0, due - now))
        for ctx in list(self.runtime.inflight.values()):
            if ctx.deadline is not None:
                wait = min(wait, max(0.0, ctx.deadline - now))
        return max(wait, shortest)


class Heartbeat(threading.Thread):
    """The worker's heartbeat on a thread and a database connection of its own.

    A worker loop that is busy or waiting (a long claim, a cleanup, a lock wait, a slow
    database) must not make a live worker look dead to the others: a missed heartbeat
    gets its executions recovered and its handlers stopped. Beating apart from the loop
    leaves only a frozen or cut-off process without a heartbeat.
    """

    def __init__(self, runtime: Runtime, row: Any, interval: float) -> None:
        super().__init__(name="conductor-heartbeat", daemon=True)
        self.runtime = runtime
        self.row = row
        self.interval = interval
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        using = self.runtime.using
        backoff = Backoff(0.1, 5.0)
        outage = Outage("the heartbeat")
        enroll(using, self.runtime.dead_after)
        try:
            while not self._stop_event.is_set():
                try:
                    self.runtime.heartbeat(self.row)
                except (DatabaseError, InterfaceError) as exc:
                    outage.failed(exc, backoff.pause)
                    reset_connection(using)
                    backoff.wait(self._stop_event)
                    continue
                backoff.reset()
                outage.recovered()
                self._stop_event.wait(self.interval)
        finally:
            connections.close_all()
