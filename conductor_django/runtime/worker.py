"""The worker loop: claim, dispatch to a thread pool, heartbeat, recover, shut down.

``Worker.run()`` is what ``manage.py conductor_worker`` and ``testing.drain`` call.
The main thread claims executions in batches (``Execution.objects.claim``) and hands them to
``concurrency`` handler threads, each with its own database connection, closed when
the thread ends. Between claims it heartbeats, recovers executions of dead workers,
delivers cancel requests and enforces timeouts. On PostgreSQL a listener thread wakes
it on new work and delivers cancels at once; everywhere it also polls.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from django.db import DatabaseError, InterfaceError, connections, router
from django.utils import timezone

from .. import conf, retention, scheduler
from ..definitions.registry import handler_kinds
from ..models import Execution
from ..models import Worker as WorkerRow
from ..state import Claimed
from . import Runtime, aio_runner, batch, custom_context, listener, runner
from .aio_loop import AsyncLoop
from .cancellation import deliver
from .completer import Completer
from .dispatch import make_dispatcher
from .housekeeper import Heartbeat, Housekeeper
from .retry import Backoff, Outage, ensure_usable, retry_write
from .sessions import enroll
from .stopping import on_stop_signals
from .unit import FINISHED, ExecutionUnit

logger = logging.getLogger("conductor_django.worker")

DB_ERRORS = (DatabaseError, InterfaceError)
CLEANUP_BUDGET = 2.0  # seconds of deleting per loop turn before claiming again
#: How long a stopping worker waits for a heartbeat in progress (one short UPDATE).
HEARTBEAT_JOIN_TIMEOUT = 5.0
#: How long a stopping worker waits for interrupted async handlers to be released.
ASYNC_RELEASE_TIMEOUT = 5.0

#: Default ``--batch-size``. Claims go beyond the free threads (prefetch) only while
#: handlers are short, so that long tasks never sit claimed behind busy threads.
PREFETCH_BATCH = 50
PREFETCH_MAX_SECONDS = 0.02


class Worker:
    """Runs executions of the given queues (every queue when ``queues`` is empty).

    ``concurrency=0`` runs handlers on the calling thread, one at a time, which is what
    ``testing.drain`` uses so that handlers see the caller's uncommitted test data.
    """

    def __init__(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        poll_interval: float | None = None,
        batch_size: int | None = None,
        drain: bool = False,
        shutdown_timeout: float = 30.0,
        using: str | None = None,
        handle_signals: bool = True,
        async_concurrency: int = 100,
    ) -> None:
        if concurrency < 0:
            raise ValueError("concurrency must be >= 0")
        if async_concurrency < 0:
            raise ValueError("async_concurrency must be >= 0")
        if concurrency == 0 and not drain:
            raise ValueError("concurrency=0 (inline) is only for drain mode")
        self.queues = sorted(set(queues or ()))
        self.concurrency = concurrency
        self.async_concurrency = async_concurrency  # handlers at once on the event loop
        self.poll_interval = float(poll_interval if poll_interval is not None
                                   else conf.get("POLL_INTERVAL"))
        self.batch_size = max(1, batch_size or max(concurrency, PREFETCH_BATCH))
        self.drain = drain
        self.shutdown_timeout = float(shutdown_timeout)
        self.using = using or router.db_for_write(Execution)
        self.handle_signals = handle_signals
        self.cancel_poll_interval = float(conf.get("CANCEL_POLL_INTERVAL"))
        self.heartbeat_interval = float(conf.get("HEARTBEAT_INTERVAL"))
        self.dead_after = float(conf.get("WORKER_DEAD_AFTER"))
        self.cleanup_interval = float(conf.get("CLEANUP_INTERVAL"))
        self.id = uuid.uuid4()
        self.runtime = Runtime(worker_id=self.id, using=self.using, inline=concurrency == 0,
                               dead_after=self.dead_after)
        self.processed = 0
        self.dispatched = 0  # sent to django-q2 (ENGINE = "django_q")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy = 0
        # (execution, lease) whose final write failed (a database fault): released later
        self._lost: list[tuple[str, int]] = []
        # execution -> lease of everything handed to a thread or the event loop, until its
        # run has ended (its final write is then done, or queued in the completer)
        self._held: dict[str, int] = {}
        self._unsure = False  # a database error in the loop: did a claim commit unseen?
        self._avg_seconds = 1.0  # moving average of handler durations (for prefetch)
        self._jobs: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._listener: listener.Listener | listener.LocalListener | None = None
        self._completer: Completer | None = None
        self._aio: AsyncLoop | None = None
        # --- engine: with ENGINE = "django_q" this worker dispatches instead of running;
        # --concurrency is then how many executions may wait in the broker at once.
        self.dispatcher = None if self.runtime.inline else make_dispatcher(
            conf.get("ENGINE"), worker_id=self.id, using=self.using,
            window=concurrency, batch_size=self.batch_size,
        )

    # --- public ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop (what SIGTERM and SIGINT do)."""
        self._stop.set()
        self._wake.set()

    def run(self) -> int:
        """Run until stopped (or, in drain mode, until nothing is runnable now)."""
        custom_context.members()  # CONDUCTOR["CONTEXT"], built once per process: fail fast
        self._row = WorkerRow(
            id=self.id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
            role=self.dispatcher.role if self.dispatcher else WorkerRow.Role.WORKER,
        )
        # The threaded worker beats on a thread of its own (``Heartbeat``).
        self._house = Housekeeper(self.runtime, self._row, recover=True,
                                  heartbeat=self.runtime.inline,
                                  heartbeat_interval=self.heartbeat_interval,
                                  cancel_poll_interval=self.cancel_poll_interval)
        # Signals first: a SIGTERM from the moment the worker is visible stops it cleanly.
        restore = self._install_signals()
        try:
            began = time.monotonic()
            # A database fault at start (a restart, a killed session) is waited out.
            retry_write(self._register, self.using, "registering the worker")
            self.runtime.confirmed = began  # the leases of its claims hold from here
        except BaseException:
            restore()
            raise
        logger.info(
            "%s %s started: queues=%s concurrency=%d",
            "worker" if self.dispatcher is None else "dispatcher (django-q2 runs the tasks)",
            self.id, ",".join(self.queues) or "*", self.concurrency,
        )
        try:
            if self.runtime.inline:
                self._run_here()
            else:
                self._run_threaded()
        finally:
            restore()
            try:
                WorkerRow.objects.unregister(self.id, self.using)
            except DB_ERRORS:
                logger.warning("could not remove worker row %s", self.id, exc_info=True)
            if self.dispatcher is not None:  # it ran nothing itself: the qcluster did
                logger.info("dispatcher %s stopped after sending %d executions to django-q2",
                            self.id, self.dispatched)
            else:
                logger.info("worker %s stopped after %d executions", self.id, self.processed)
        return self.processed

    def _register(self) -> None:
        """Insert this worker's row, unless a try that lost its connection already did."""
        if not WorkerRow.objects.using(self.using).filter(pk=self.id).exists():
            WorkerRow.objects.register(self._row, self.using)

    # --- inline (drain in the caller's thread) -----------------------------------------

    def _run_here(self) -> None:
        Execution.objects.recover(self.dead_after, self.using)
        while not self._stop.is_set():
            # flow control: a batch task's executions first, as partial batches (drain)
            claimed: list[ExecutionUnit] = [
                *batch.claim_batches(self.id, self.queues, 1, self.using, fill=False)]
            if not claimed:
                claimed += Execution.objects.claim(self.id, self.queues, 1, self.using)
            if not claimed:
                return
            unit = claimed[0]
            if isinstance(unit, Claimed) and aio_runner.is_async(unit.task_name):
                aio_runner.run_here(unit, self.runtime)
            else:
                runner.run(unit, self.runtime)
            self.processed += unit.size

    # --- threaded ----------------------------------------------------------------------

    def _run_threaded(self) -> None:
        # the guard holds from the first call: a retry's new connection gets it on connect
        retry_write(lambda: enroll(self.using, self.dead_after), self.using,
                    "guarding the worker's session")
        self._heartbeat = Heartbeat(self.runtime, self._row, self.heartbeat_interval)
        self._heartbeat.start()
        self._sync_schedules()
        if self.dispatcher is None:
            self._completer = Completer(self.id, self.using, self.dead_after)
            self._completer.start()
            self.runtime.complete = self._completer.submit
        if self.dispatcher is None and self.async_concurrency > 0:
            self._aio = AsyncLoop(self.runtime, self.async_concurrency,
                                  after=self._after_scheduled_run, done=self._async_done)
            self._aio.start()
        for n in range(self.concurrency if self.dispatcher is None else 0):
            t = threading.Thread(target=self._handler_loop, name=f"conductor-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        listen_on = listener.listen_database(self.using)
        if listen_on is not None:
            self._listener = listener.Listener(listen_on, self._on_new, self._on_cancel)
            self._listener.start()
        else:  # SQLite: a local socket beside the database file, poked after commits
            self._listener = listener.start_local(self.using, self.id, self._on_new,
                                                  self._on_cancel)
        try:
            self._loop()
        finally:
            self._shutdown()

    def _on_new(self, queue_name: str) -> None:
        if not queue_name or not self.queues or queue_name in self.queues:
            self._wake.set()

    def _on_cancel(self, execution_id: str, reason: str) -> None:
        deliver(self.runtime.inflight, execution_id, reason)

    def _loop(self) -> None:
        backoff = Backoff(0.1, 5.0)
        outage = Outage("the worker loop")
        while not self._stop.is_set():
            self._wake.clear()  # before the claim: work announced from now on wakes us
            try:
                # Claim first: a wake-up is usually new work, and its start waits on this.
                claimed, maybe_more, looked = self._claim()
                self._periodic()
                backoff.reset()
                outage.recovered()
            except DB_ERRORS as exc:
                outage.failed(exc, backoff.pause)
                self._unsure = True
                self._close_connection()
                backoff.wait(self._stop)
                continue
            # drain: done when a claim that looked found nothing and no handler is busy
            # (a claim skipped for want of free slots proves nothing: the handlers may
            # all have finished since, with runnable work still queued in the table)
            if self.drain and looked and not claimed and self._busy_count() == 0 and (
                    self.dispatcher is None or not self.dispatcher.held()):
                return
            if maybe_more and (self._free() > 0 or self._async_free() > 0):
                continue  # the claim was full: there may be more runnable right now
            self._wake.wait(self._sleep_time())

    def _claim(self) -> tuple[list[ExecutionUnit], bool, bool]:
        """Claim what the free threads (and the prefetch) can take, and queue it.

        Returns the claimed executions, whether claiming again at once may find more,
        and whether it asked the database at all (not when no slot was free).
        A claim that returned less than it asked for found everything runnable at that
        moment; what is announced later sets ``_wake``, and the poll covers the rest.
        """
        if self.dispatcher is not None:
            dispatched = self.dispatcher.dispatch(self.queues)
            self.dispatched += len(dispatched)
            return dispatched, bool(dispatched), True
        free = self._free()
        async_free = self._async_free()
        if self._jobs.qsize() >= self.concurrency:
            # Prefetched work waits for every thread already: claim for the threads once
            # it runs low, in one larger claim, not one small claim per finished handler.
            free = 0
        if free <= 0 and async_free <= 0:
            return [], False, False
        # fencing: never a second attempt of an execution a stale handler still runs
        exclude = self.runtime.running_here()
        # async handlers run on the event loop, the others on threads: each kind is
        # claimed for its own free slots (none of the async ones without a loop)
        async_names, sync_names = handler_kinds()
        # Each claim's executions are handed over before the next claim: a database error
        # in a later claim must not strand what an earlier one committed to this worker.
        claimed: list[ExecutionUnit] = []
        maybe_more = False
        if free > 0:
            # flow control: ready batches first (one handler slot each), then the others
            claimed += self._hand_over(batch.claim_batches(
                self.id, self.queues, free, self.using, fill=not self.drain, exclude=exclude))
            maybe_more = bool(claimed)
            if len(claimed) < free:
                limit = min(free - len(claimed), self.batch_size)
                single = self._hand_over(Execution.objects.claim(
                    self.id, self.queues, limit, self.using, exclude, skip=async_names))
                maybe_more = maybe_more or len(single) == limit
                claimed += single
        if self._aio is not None and async_names and async_free > 0:
            limit = min(async_free, max(self.batch_size, PREFETCH_BATCH))
            looped = self._hand_over(Execution.objects.claim(
                self.id, self.queues, limit, self.using, exclude, skip=sync_names))
            maybe_more = maybe_more or len(looped) == limit
            claimed += looped
        # asked for both kinds of slot (a kind with no free slot was not looked for)
        looked = free > 0 and (self._aio is None or not async_names or async_free > 0)
        return claimed, maybe_more, looked

    def _hand_over(self, claimed: Sequence[ExecutionUnit]) -> list[ExecutionUnit]:
        """Queue claimed executions for the threads, or submit them to the event loop."""
        for item in claimed:
            with self._lock:
                self._held.update(_leases(item))
            # Routed by the task's kind now: a task registered since the names were read
            # (tests define tasks while a worker runs) still goes where it can run.
            if self._aio is not None and isinstance(item, Claimed) and aio_runner.is_async(
                    item.task_name):
                self._aio.submit(item, aio_runner.make_context(item, self.runtime))
                continue
            with self._lock:
                self._busy += 1
            # The context exists from the claim on, so a cancel reaches it even
            # before a thread picks it up (it then never starts).
            self._jobs.put((item, runner.make_context(item, self.runtime)))
        return list(claimed)

    def _async_free(self) -> int:
        return self._aio.free() if self._aio is not None else 0

    def _async_done(self, item: Claimed, failed: bool) -> None:
        """An async handler slot is free again (called on the event loop)."""
        with self._lock:
            self.processed += 1
            if failed:
                self._lost.append((item.id, item.lease))
            self._held.pop(item.id, None)
        self._wake.set()

    def _handler_loop(self) -> None:
        idle_since = time.monotonic()
        enroll(self.using, self.dead_after)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                item, ctx = job
                began = time.monotonic()
                try:
                    ensure_usable(self.using, time.monotonic() - idle_since)
                    if self.runtime.stopping.is_set():  # claimed but not started: give back
                        for eid, lease in _leases(item):
                            self.runtime.inflight.pop(eid, None)
                            Execution.objects.release(eid, self.id, lease, timezone.now(),
                                                      self.using)
                    else:
                        outcome = runner.run(item, self.runtime, ctx)
                        self._after_scheduled_run(item, outcome)
                except DB_ERRORS:
                    logger.warning("database error finishing %s", item.id, exc_info=True)
                    with self._lock:
                        self._lost.extend(_leases(item))
                    self._close_connection()
                except BaseException:
                    logger.exception("unexpected error running %s", item.id)
                    with self._lock:
                        self._lost.extend(_leases(item))
                finally:
                    idle_since = time.monotonic()
                    seconds = idle_since - began
                    with self._lock:
                        self._busy -= 1
                        self.processed += item.size
                        for eid, _ in _leases(item):
                            self._held.pop(eid, None)
                        self._avg_seconds += (seconds - self._avg_seconds) * 0.1
                        idle = self._busy == 0
                    # Wake the loop only when it has something to do: claim for threads
                    # that are about to run out of queued work, or see the last handler
                    # end (drain, shutdown). Waking it after every handler made a fast
                    # drain loop mostly over claims that could not ask for anything.
                    if idle or self._jobs.qsize() < self.concurrency:
                        self._wake.set()
        finally:
            connections.close_all()

    def _busy_count(self) -> int:
        with self._lock:
            busy = self._busy
        return busy + (self._aio.busy() if self._aio is not None else 0)

    def _free(self) -> int:
        """How many more executions may be claimed now: the free threads, plus a
        prefetch of ``batch_size`` while handlers are short."""
        with self._lock:
            fast = self._avg_seconds < PREFETCH_MAX_SECONDS
            return self.concurrency + (self.batch_size if fast else 0) - self._busy

    def _periodic(self) -> None:
        self._house.run_due()  # heartbeat, recovery, cancel poll
        if self.dispatcher is not None:
            self.dispatcher.periodic()
        self._house.check_timeouts()
        self._release_lost()
        # right after a database error (a claim's reply may have been lost with the
        # connection), else as often as dead workers are looked for
        if self.dispatcher is None and not self.runtime.stopping.is_set() and (
                self._unsure or self._house.every("orphans", self.dead_after)):
            self._unsure = False
            self._release_orphans()
        self._tick_schedules()
        # retention: delete old executions at most every CLEANUP_INTERVAL (hourly)
        if (not self.runtime.stopping.is_set()
                and self._house.every("cleanup", self.cleanup_interval)):
            self._cleanup()

    def _cleanup(self) -> None:
        try:
            result = retention.cleanup(using=self.using, time_budget=CLEANUP_BUDGET)
        except DB_ERRORS:
            self._house.due["cleanup"] = time.monotonic() + 60.0  # retry soon, not in an hour
            raise
        except Exception:
            logger.exception("cleanup failed")
            return
        if result.total:
            logger.info("cleanup deleted %d finished executions", result.total)
        if not result.finished:
            self._house.due["cleanup"] = time.monotonic() + self.poll_interval  # more to delete

    # --- scheduling (conductor_django.scheduler) ---------------------------------------

    def _sync_schedules(self) -> None:
        """Write the static ``cron=`` schedules of the code (once, at start)."""
        try:
            scheduler.sync_static(self.using)
        except DB_ERRORS:
            logger.warning("could not sync static schedules; retrying at the next start",
                           exc_info=True)

    def _tick_schedules(self) -> None:
        """Queue the next run of schedules that have none (one query when nothing is due)."""
        if (not self.runtime.stopping.is_set()
                and self._house.every("schedules", self.poll_interval)):
            scheduler.tick(self.using)

    def _after_scheduled_run(self, item: Claimed, outcome: str) -> None:
        """A scheduled run finished: queue the next one now rather than at the next tick."""
        finished = outcome in FINISHED
        schedule_name = getattr(item, "schedule_name", None)
        if schedule_name is None or not finished:
            return
        try:
            scheduler.queue_next(item.task_name, schedule_name, self.using)
        except (*DB_ERRORS, ValueError):
            logger.warning("could not queue the next run of schedule %s/%s; the next tick will",
                           item.task_name, item.schedule_name, exc_info=True)

    def _release_lost(self) -> None:
        with self._lock:
            lost, self._lost = self._lost, []
        for eid, lease in lost:
            try:
                Execution.objects.release(eid, self.id, lease, timezone.now(), self.using)
            except DB_ERRORS:
                with self._lock:
                    self._lost.append((eid, lease))
                raise

    def _release_orphans(self) -> None:
        """Release what the database says this worker runs but nothing here runs or
        writes: a claim that committed while its reply was lost (the connection was cut
        in between). The others never recover it from a worker that is alive."""
        rows = Execution.objects.held_by(self.id, self.using)
        if not rows:
            return
        # In this order: a run ends by queueing its result in the completer, then leaving
        # ``_held``; what is in neither was written (a release of it then changes nothing).
        with self._lock:
            known = set(self._held).union(eid for eid, _ in self._lost)
        if self._completer is not None:
            known |= self._completer.pending()
        orphans = [(eid, lease) for eid, lease in rows if eid not in known]
        released = sum(Execution.objects.release(eid, self.id, lease, timezone.now(), self.using)
                       for eid, lease in orphans)
        if released:
            logger.warning("released %d executions held by this worker but not running here "
                           "(a claim whose reply was lost)", released)

    def _sleep_time(self) -> float:
        return self._house.sleep_time(self.poll_interval)

    def _close_connection(self) -> None:
        try:
            connections[self.using].close()
        except DB_ERRORS:
            pass

    def _shutdown(self) -> None:
        """Stop claiming; let handlers reach a step boundary; release what is left."""
        self.runtime.stopping.set()
        deadline = time.monotonic() + self.shutdown_timeout
        if self._busy_count():
            logger.info("shutting down: waiting for %d running handlers", self._busy_count())
        while self._busy_count() and time.monotonic() < deadline:
            self._wake.clear()
            try:
                self._periodic()  # cancellation still reaches handlers while shutting down
            except DB_ERRORS:
                logger.warning("database error while shutting down", exc_info=True)
                self._close_connection()
            self._wake.wait(max(0.0, min(self._sleep_time(), deadline - time.monotonic())))
        if self._aio is not None:
            # out of time: interrupt the async handlers still awaiting; each is released
            if self._aio.interrupt_all():
                self._aio.wait_idle(ASYNC_RELEASE_TIMEOUT)
            self._aio.close()
        if self._completer is not None:
            self._completer.close()  # results first: what finished must not be released
        try:
            released = Execution.objects.release_all(self.id, self.using)
            self._release_lost()
        except DB_ERRORS:
            released = 0
            logger.warning("could not release executions at shutdown", exc_info=True)
        if released:
            logger.warning("released %d executions still running at shutdown", released)
        for _ in self._threads:
            self._jobs.put(None)
        if self._listener is not None:
            self._listener.stop()
        self._heartbeat.stop()  # last: a worker shutting down is not presumed dead
        # ... and no beat may run once ``run`` removes the row: a beat that found its row
        # gone would take the worker for presumed dead and register it again.
        self._heartbeat.join(HEARTBEAT_JOIN_TIMEOUT)

    def _install_signals(self) -> Callable[[], None]:
        return on_stop_signals(self.stop) if self.handle_signals else (lambda: None)


def _leases(item: ExecutionUnit) -> list[tuple[str, int]]:
    """``(execution id, lease)`` of a claimed execution, or of each item of a batch."""
    return [(claimed.id, claimed.lease) for claimed in item.items]
