"""What a handler receives: the ``Event`` and the task context ``ctx``."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from ..definitions.registry import check_window_open
from ..definitions.tasks import Task
from ..exceptions import DEFAULT_REASON, AttemptTimedOut, Cancelled, LeaseLost, Released, timed_out
from ..models import Execution
from ..scheduler import schedule, unschedule
from . import LOST, durable, steps
from .progress import Progress
from .retry import retry_write

if TYPE_CHECKING:
    from . import Runtime

logger = logging.getLogger("conductor_django.task")

#: The step name prefix under which ``ctx.patched`` memoizes its answers.
PATCH_STEP = "conductor.patched:"


class StopToken:
    """Tells a running handler that it should stop: the object a handler reads as
    ``ctx.signal`` (``.aborted``, ``.reason``, ``.wait``, ``.raise_if_aborted``). Not to
    be confused with ``models.Signal``, a message sent to an execution
    (``conductor.send_signal``, ``ctx.wait_for_signal``).

    ``reason``: ``"cancelled"``, ``"timeout"``, or ``"lost"`` when this worker no longer
    holds the execution (it was presumed dead and the execution was recovered).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.message: str | None = None

    @property
    def aborted(self) -> bool:
        return self._event.is_set()

    def abort(self, reason: str, message: str | None = None) -> None:
        """Abort with ``reason`` ``"cancelled"``, ``"timeout"`` or ``"lost"``.

        The first reason wins, except that a lost lease overrides the others: nothing
        of the attempt may be written any more, not even its cancellation.
        """
        with self._lock:
            if self._event.is_set() and (reason != LOST or self.reason == LOST):
                return
            self.reason = reason
            self.message = message
            self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early when aborted; returns ``aborted``."""
        return self._event.wait(max(0.0, float(seconds)))

    def raise_if_aborted(self) -> None:
        if not self.aborted:
            return
        if self.reason == "cancelled":
            raise Cancelled(self.message or DEFAULT_REASON)
        if self.reason == LOST:
            raise LeaseLost(self.message or "the execution was recovered from this worker")
        raise AttemptTimedOut(self.message or "timeout")


class TaskLoggerAdapter(logging.LoggerAdapter):
    """Adds execution id, task name, queue and attempt to every record."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class BaseContext:
    """What every ``ctx`` shares: identity, ``signal``, ``logger``, the attempt's timeout
    and **the** step boundary, ``checkpoint``. A subclass says which leases to verify
    and which cancel requests to poll (its own, or every item of a batch)."""

    task_name: str
    signal: StopToken
    timeout: float | None
    deadline: float | None
    _runtime: Runtime

    def _verify_leases(self) -> None:
        """Stop (``LeaseLost``) or mark items lost whose lease no longer surely holds."""
        raise NotImplementedError

    def _poll_cancels(self) -> None:
        """Inline runs (no worker loop delivers cancels): ask the database."""
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Stop here if the lease is lost (``LeaseLost``), cancelled (``Cancelled``), timed
        out (``AttemptTimedOut``), the worker shuts down or the task's window closed
        (``Released``)."""
        self._verify_leases()
        if self._runtime.inline:
            self._poll_cancels()
        if not self.signal.aborted and self.deadline and time.monotonic() >= self.deadline:
            self.signal.abort("timeout", timed_out(self.timeout))
        self.signal.raise_if_aborted()
        if self._runtime.stopping.is_set():
            raise Released()
        # flow control: outside the task's window, release until the window opens
        check_window_open(self.task_name)


class Context(BaseContext):
    """The ``ctx`` of a handler: identity, ``signal``, memoized ``step`` and ``checkpoint``."""

    def __init__(
        self,
        *,
        execution_id: str,
        task_name: str,
        queue: str,
        attempt: int,
        runtime: Runtime,
        timeout: float | None = None,
        steps_may_exist: bool = True,
        lease: int = 0,
    ) -> None:
        self.execution_id = execution_id
        self.task_name = task_name
        self.queue = queue
        self.attempt = attempt
        self.signal = StopToken()
        self.timeout = timeout
        self.deadline: float | None = None
        self.lease = lease
        self._runtime = runtime
        self._timer: threading.Timer | None = None
        self._book = steps.StepBook(self, steps_may_exist)  # loaded steps, names reached
        self._progress = Progress(self._write_progress)
        self.logger = TaskLoggerAdapter(
            logger,
            {
                "execution_id": execution_id,
                "task_name": task_name,
                "queue": queue,
                "attempt": attempt,
            },
        )

    def __repr__(self) -> str:
        return f"<Context {self.task_name} {self.execution_id} attempt {self.attempt}>"

    def start(self) -> None:
        """The handler starts now: the attempt's timeout counts from here.

        A worker aborts the signal of a handler past its deadline; in ``testing.drain``
        (no worker loop) a timer does, so ``ctx.signal.wait`` wakes as it would there.
        """
        if self.timeout:
            self.deadline = time.monotonic() + self.timeout
            if self._runtime.inline:
                message = timed_out(self.timeout)
                self._timer = threading.Timer(self.timeout, self.signal.abort,
                                              ("timeout", message))
                self._timer.daemon = True
                self._timer.start()

    def finish(self) -> None:
        """The attempt ended: stop its timer, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- step boundaries -------------------------------------------------------------

    def _verify_leases(self) -> None:
        self._runtime.check_lease(self.execution_id, self)

    def _poll_cancels(self) -> None:
        if not self.signal.aborted:
            reason = Execution.objects.cancel_requested(self.execution_id, self._runtime.using)
            if reason is not None:
                self.signal.abort("cancelled", reason)

    def step(self, name: str, fn: Callable[[], Any], *, atomic: bool = False) -> Any:
        """Run ``fn`` once for this execution and memoize its JSON result under ``name``.

        A step whose execution was cancelled or timed out while ``fn`` ran is not
        memoized: ``fn`` may have stopped half-way (``ctx.signal``), so the attempt stops
        here and a retry runs it again.

        ``atomic=True``: ``fn`` runs inside one transaction on conductor's database,
        and the step record is written in that same transaction, fenced by this
        worker's lease: ``fn``'s writes to that database and the record commit together
        or not at all, so they happen exactly once.
        """
        steps.check_name(name)
        return steps.run(steps.plan(self, name, fn, atomic))  # the algorithm: steps.py

    # --- versions: deploying changes to long-running executions -------------------------

    def patched(self, change_id: str) -> bool:
        """Whether this execution takes the new code path of ``change_id``.

        ``True`` when it reaches this call for the first time; ``False`` when it had
        already passed this point under code without it (it has recorded steps that this
        attempt has not reached yet). The answer is memoized as the step
        ``conductor.patched:<change_id>``, so it stays the same on every replay.
        """
        if not isinstance(change_id, str) or not change_id:
            raise ValueError(f"change_id must be a non-empty str, got {change_id!r}")
        name = PATCH_STEP + change_id
        self.checkpoint()
        book = self._book
        stored = book.load()
        book.seen.add(name)
        if name not in stored:
            answer = not (stored.keys() - book.seen)
            db = self._runtime.using
            started = timezone.now()
            stored[name] = retry_write(
                lambda: book.save(name, answer, started, json.dumps(answer)), db,
                f"saving {name!r} of {self.execution_id}")
        return bool(stored[name])

    # --- durable suspension (see durable.py) -----------------------------------------

    def sleep(self, name: str, duration: float | timedelta) -> None:
        """Durable sleep: release the worker and resume after ``duration`` on any worker."""
        durable.sleep(self, name, duration)

    def invoke(
        self,
        step_name: str,
        task: str | Task,
        payload: Any = None,
        timeout: float | timedelta | None = None,
    ) -> Any:
        """Run ``task`` as a child execution (once) and return its result.

        Raises ``ChildExecutionFailed`` when the child fails for good or is cancelled,
        ``TimeoutError`` when ``timeout`` passes first (the child keeps running).
        """
        return durable.invoke(self, step_name, task, payload, timeout)

    def wait_for_signal(self, name: str, timeout: float | timedelta | None = None,
                        choices: list[str] | None = None) -> Any:
        """Wait, holding no worker, for the signal ``name`` (``conductor.send_signal``) and
        return its payload; memoized like a step under ``name``.

        ``timeout`` (seconds or timedelta, counted from the first wait) passing first
        raises ``SignalTimeout``. ``choices``: the payloads accepted (the admin shows
        one button each); a signal sent with another payload is refused.
        """
        return durable.wait_for_signal(self, name, timeout, choices)

    # --- progress (see progress.py) ------------------------------------------------------

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report progress (``Execution.progress``); throttled, the last value always kept."""
        self._progress.report(done, total, message)

    def flush_progress(self) -> None:
        """The attempt ends: store the last progress report, if it is not yet (never raises)."""
        try:
            self._progress.flush()
        except LeaseLost:
            pass
        except Exception:  # noqa: BLE001 - the attempt's outcome matters more
            logger.warning("could not store the progress of %s", self.execution_id,
                           exc_info=True)

    def _write_progress(self, value: dict[str, Any]) -> None:
        runtime = self._runtime
        if not Execution.objects.record_progress(self.execution_id, runtime.worker_id,
                                                 self.lease, value, runtime.using):
            self.signal.abort(LOST, "the execution was recovered from this worker")
            raise LeaseLost(self.execution_id)

    # --- scheduling (conductor_django.scheduler) -------------------------------------

    def schedule(self, task: Any, schedule_name: str, cron: str, payload: Any = None,
                 timezone: str | None = None) -> Any:
        """Create or replace a dynamic cron schedule; see ``conductor_django.schedule``."""
        return schedule(task, schedule_name, cron, payload, timezone, using=self._runtime.using)

    def unschedule(self, task: Any, schedule_name: str) -> bool:
        """Delete a schedule and cancel its queued run; see ``conductor_django.unschedule``.

        Called from the execution that schedule started, it also cancels this execution,
        which stops at its next step boundary.
        """

        task_name = task.name if isinstance(task, Task) else task
        reason = f"Schedule {schedule_name!r} was removed (unschedule)"
        db = self._runtime.using
        removed = unschedule(task, schedule_name, reason=reason, using=db)
        own = Execution.objects.using(db).filter(
            pk=self.execution_id, task_name=task_name, schedule_name=schedule_name
        )
        if own.exists() and Execution.objects.cancel(self.execution_id, reason, using=db):
            self.signal.abort("cancelled", reason)
        return removed
