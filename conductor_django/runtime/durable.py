"""Durable suspension: ``ctx.sleep``, ``ctx.invoke`` and ``ctx.wait_for_signal``.

All three are memoized like steps, under the name the handler gives them:

* a sleep stores when it ends (``{"sleep_until": ISO}``); the execution is released
  ``suspended`` with ``run_at`` at that time and, resumed on any worker, replays its
  finished steps, finds the sleep over and carries on;
* an invocation stores the child's id and deadline (``{"child_id": ..., "deadline":
  ISO or None}``), written in one transaction with the child, so the child is created
  once however often the parent is resumed or retried. The parent is released
  ``suspended`` until the child finishes (``Execution.objects.wake_parents``) or the deadline
  passes, then reads the child's outcome;
* a wait for a signal records what it waits for and until when on the execution
  (``waiting_for``), is released ``suspended`` until the deadline or a signal of that
  name (``send_signal`` wakes it), then stores the signal's payload - or the timeout -
  as its step (``state.signals`` walks through it).

Being resumed is not a new attempt (the ``resume`` column). A wake-up is only a hint:
a parent resumed early (an older child finished, a sleep not yet over) suspends again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from ..api import insert, prepare
from ..definitions.registry import Task
from ..definitions.values import (
    STEP_NAME_LENGTH,
    check_choices,
    check_signal_name,
    check_text,
    to_seconds,
)
from ..exceptions import ChildExecutionFailed, LeaseLost, SignalTimeout, Suspended
from ..models import Execution, Signal
from ..store.transactions import write_transaction
from . import LOST

if TYPE_CHECKING:
    from .context import Context


def _check_name(name: Any, what: str) -> str:
    return check_text(name, f"{what} name", STEP_NAME_LENGTH)


def _stored(ctx: Context, name: str, key: str) -> dict[str, Any] | None:
    """The memoized value of ``name``, checking it was stored by the same kind of call."""
    steps = ctx._book.load()
    ctx._book.seen.add(name)
    if name not in steps:
        return None
    value = steps[name]
    if not isinstance(value, dict) or key not in value:
        raise ValueError(f"step name {name!r} is already used by another kind of step in "
                         f"execution {ctx.execution_id}; names are unique per execution")
    return value


def _remember(ctx: Context, name: str, value: Any, started: datetime) -> Any:
    stored = ctx._book.save(name, value, started, None)  # fenced by the lease
    ctx._book.load()[name] = stored
    return stored


def sleep(ctx: Context, name: str, duration: float | timedelta) -> None:
    """Suspend the execution for ``duration`` (seconds or timedelta), freeing the worker."""
    _check_name(name, "sleep")
    seconds = to_seconds(duration, "sleep duration")
    if seconds is None:
        raise TypeError("sleep duration must be seconds (int or float) or a timedelta, not None")
    ctx.checkpoint()
    stored = _stored(ctx, name, "sleep_until")
    now = timezone.now()
    if stored is None:
        until = now + timedelta(seconds=seconds)
        stored = _remember(ctx, name, {"sleep_until": until.isoformat()}, now)
    until = datetime.fromisoformat(stored["sleep_until"])
    if now < until:
        raise Suspended(run_at=until)


def invoke(
    ctx: Context,
    step_name: str,
    task: str | Task,
    payload: Any = None,
    timeout: float | timedelta | None = None,
) -> Any:
    """Start ``task`` as a child once, suspend until it finishes, return its result."""
    _check_name(step_name, "step")
    seconds = to_seconds(timeout, "timeout")
    db = ctx._runtime.using
    new = prepare(task, payload)  # validate before anything (unknown task, bad payload)
    ctx.checkpoint()
    stored = _stored(ctx, step_name, "child_id")
    if stored is None:
        started = timezone.now()
        deadline = None if seconds is None else started + timedelta(seconds=seconds)
        with write_transaction(db):
            child_id = insert(new, db, parent_id=ctx.execution_id)
            value = {
                "child_id": child_id,
                "task": new.task.name,
                "deadline": None if deadline is None else deadline.isoformat(),
            }
            stored = _remember(ctx, step_name, value, started)
            if stored["child_id"] != child_id:  # stored meanwhile by another holder
                transaction.set_rollback(True, using=db)
        ctx.logger.info("started child %s (%s) as step %r", stored["child_id"],
                        new.task.name, step_name)
    return _outcome(ctx, stored, db)


def _outcome(ctx: Context, stored: dict[str, Any], db: str) -> Any:
    child_id = stored["child_id"]
    row = (
        Execution.objects.using(db)
        .filter(pk=child_id)
        .values("status", "result", "last_error", "task_name")
        .first()
    )
    if row is None:
        raise ChildExecutionFailed(f"Child execution failed: child {child_id} no longer exists")
    if row["status"] == Execution.Status.COMPLETED:
        return row["result"]
    if row["status"] in Execution.FINAL:
        raise ChildExecutionFailed(f"Child execution failed: {row['last_error']}")
    deadline = stored.get("deadline")
    until = None if deadline is None else datetime.fromisoformat(deadline)
    if until is not None and timezone.now() >= until:
        raise TimeoutError(
            f"Child execution {child_id} ({row['task_name']}) did not finish by its "
            f"deadline {until.isoformat()}"
        )
    raise Suspended(run_at=until, child_id=child_id)


def wait_for_signal(ctx: Context, name: str, timeout: float | timedelta | None = None,
                    choices: list[str] | None = None) -> Any:
    """Suspend, freeing the worker, until a signal ``name`` arrives; return its payload.

    Raises ``SignalTimeout`` when ``timeout`` (from the first time this wait ran) passes
    first. Both outcomes are memoized in the step ``name``.
    """
    check_signal_name(name)
    seconds = to_seconds(timeout, "timeout")
    choices = check_choices(choices)
    ctx.checkpoint()
    stored = _stored(ctx, name, "signal")
    if stored is None:
        runtime = ctx._runtime
        eid, wid, lease, db = ctx.execution_id, runtime.worker_id, ctx.lease, runtime.using
        try:
            spec = Execution.objects.await_signal(eid, wid, lease, name, seconds, choices, db)
            stored = Signal.objects.consume(eid, wid, lease, spec, db)
        except LeaseLost:
            ctx.signal.abort(LOST, "the execution was recovered from this worker")
            raise
        if stored is None:
            until = None if spec["until"] is None else datetime.fromisoformat(spec["until"])
            ctx.logger.info("waiting for signal %r until %s", name, spec["until"] or "ever")
            raise Suspended(run_at=until, signal=name)
        ctx._book.load()[name] = stored
    if "timed_out" in stored:
        raise SignalTimeout(f"No signal {name!r} arrived by {stored['timed_out']}", name,
                            stored["timed_out"])
    return stored["payload"]
