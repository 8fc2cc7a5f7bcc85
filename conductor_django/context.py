"""What a handler receives: the ``Event`` and the task context ``ctx``."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from . import durable, queries, window
from .cancellation import DEFAULT_REASON, cancel_requested
from .dbretry import retry_write
from .exceptions import AttemptTimedOut, Cancelled, Released
from .utils import check_json_text

if TYPE_CHECKING:
    from .registry import Task
    from .runtime import Runtime

logger = logging.getLogger("conductor_django.task")


@dataclass(frozen=True, slots=True)
class Event:
    """The event a handler runs for: ``name``, JSON ``payload`` and ``execution_id``."""

    name: str
    payload: Any
    execution_id: str


class Signal:
    """Tells a running handler that it should stop (cancelled or timed out)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.message: str | None = None

    @property
    def aborted(self) -> bool:
        return self._event.is_set()

    def abort(self, reason: str, message: str | None = None) -> None:
        """Abort with ``reason`` ``"cancelled"`` or ``"timeout"``; the first reason wins."""
        with self._lock:
            if self._event.is_set():
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
        raise AttemptTimedOut(self.message or "timeout")


class TaskLoggerAdapter(logging.LoggerAdapter):
    """Adds execution id, task name, queue and attempt to every record."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**self.extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


class Context:
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
    ) -> None:
        self.execution_id = execution_id
        self.task_name = task_name
        self.queue = queue
        self.attempt = attempt
        self.signal = Signal()
        self.timeout = timeout
        self.deadline: float | None = None
        self._runtime = runtime
        self._steps: dict[str, Any] | None = None if steps_may_exist else {}
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
        """The handler starts now: the attempt's timeout counts from here."""
        if self.timeout:
            self.deadline = time.monotonic() + self.timeout

    # --- step boundaries -------------------------------------------------------------

    def _boundary(self) -> None:
        """Raise if the attempt must stop here: cancelled, timed out, or shutting down."""
        runtime = self._runtime
        if runtime.inline and not self.signal.aborted:
            reason = cancel_requested(self.execution_id, runtime.using)
            if reason is not None:
                self.signal.abort("cancelled", reason)
        if not self.signal.aborted and self.deadline and time.monotonic() >= self.deadline:
            self.signal.abort("timeout", f"Timed out after {self.timeout:g} seconds")
        self.signal.raise_if_aborted()
        if runtime.stopping.is_set():
            raise Released()
        # flow control: outside the task's window, release until the window opens
        window.check(self.task_name)

    def checkpoint(self) -> None:
        """Stop here if cancelled (``Cancelled``), timed out, or the worker shuts down."""
        self._boundary()

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once for this execution and memoize its JSON result under ``name``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"step name must be a non-empty str, got {name!r}")
        self._boundary()
        steps = self._load_steps()
        if name in steps:
            return steps[name]
        started = timezone.now()
        value = fn()
        text = check_json_text(value, f"result of step {name!r}")
        value = json.loads(text)  # replays return exactly what was stored
        db = self._runtime.using
        def save() -> Any:  # on this thread's connection, in its transaction if any
            return queries.save_step(self.execution_id, name, value, started, db, text)

        # fn ran: keep its result across a database fault
        stored = retry_write(save, db, f"saving step {name!r} of {self.execution_id}")
        steps[name] = stored
        return stored

    def _load_steps(self) -> dict[str, Any]:
        if self._steps is None:
            db = self._runtime.using
            self._steps = retry_write(
                lambda: queries.load_steps(self.execution_id, db), db, "loading steps"
            )
        return self._steps

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

    # --- scheduling (conductor_django.scheduler) -------------------------------------

    def schedule(self, task: Any, schedule_name: str, cron: str, payload: Any = None,
                 timezone: str | None = None) -> Any:
        """Create or replace a dynamic cron schedule; see ``conductor_django.schedule``."""
        from .scheduler import schedule

        return schedule(task, schedule_name, cron, payload, timezone, using=self._runtime.using)

    def unschedule(self, task: Any, schedule_name: str) -> bool:
        """Delete a schedule and cancel its queued run; see ``conductor_django.unschedule``.

        Called from the execution that schedule started, it also cancels this execution,
        which stops at its next step boundary.
        """
        from .cancellation import cancel
        from .models import Execution
        from .registry import Task
        from .scheduler import unschedule

        task_name = task.name if isinstance(task, Task) else task
        reason = f"Schedule {schedule_name!r} was removed (unschedule)"
        db = self._runtime.using
        removed = unschedule(task, schedule_name, reason=reason, using=db)
        own = Execution.objects.using(db).filter(
            pk=self.execution_id, task_name=task_name, schedule_name=schedule_name
        )
        if own.exists() and cancel(self.execution_id, reason, using=db):
            self.signal.abort("cancelled", reason)
        return removed
