"""conductor_django: durable task execution for Django.

Tasks are plain functions; every execution, step and schedule is a row in the
project's own database; ``manage.py conductor_worker`` runs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .definitions import Batch, Cron, RateLimit, Retention, Task, task
from .exceptions import (
    Cancelled,
    ChildExecutionFailed,
    ConductorError,
    ExecutionCancelled,
    ExecutionFailed,
    NonRetryableError,
    SignalTimeout,
    TaskNotFound,
)

if TYPE_CHECKING:
    from .definitions.controls import Effective
    from .models import Execution, Schedule
    from .operations import Paused

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "Cancelled",
    "ChildExecutionFailed",
    "ConductorError",
    "Cron",
    "ExecutionCancelled",
    "ExecutionFailed",
    "NonRetryableError",
    "RateLimit",
    "Retention",
    "SignalTimeout",
    "Task",
    "TaskNotFound",
    "acancel",
    "aget",
    "ainvoke",
    "await_result",
    "cancel",
    "emit",
    "fork",
    "get",
    "invoke",
    "invoke_many",
    "pause",
    "paused",
    "resume",
    "retry",
    "schedule",
    "send_signal",
    "set_limits",
    "task",
    "unschedule",
    "wait",
]


# The API touches models, so it is imported when first called, not with the package
# (which INSTALLED_APPS imports before the app registry is ready).


def invoke(task: str | Task, payload: Any = None, **options: Any) -> str:
    """Start an execution; see ``conductor_django.api.invoke``."""
    from .api import invoke as _invoke

    return _invoke(task, payload, **options)


def invoke_many(task: str | Task, items: list[dict[str, Any]]) -> list[str]:
    """Start several executions in one transaction; see ``api.invoke_many``."""
    from .api import invoke_many as _invoke_many

    return _invoke_many(task, items)


def cancel(execution_id: Any, reason: str | None = None) -> bool:
    """Cancel an execution; ``True`` if it took effect."""
    from .models import Execution as _Execution

    return _Execution.objects.cancel(execution_id, reason)


def retry(execution_id: Any, from_step: str | None = None) -> bool:
    """Put a failed or cancelled execution back to pending (steps kept; with
    ``from_step``, the steps from that one on discarded); ``True`` if it took effect."""
    from .models import Execution as _Execution

    return _Execution.objects.retry(execution_id, from_step=from_step)


def fork(execution_id: Any, from_step: str, *, dedupe_key: str | None = None) -> str:
    """A new execution of the same task and payload with the steps before ``from_step``
    copied; returns its id (the original is left as it is). With ``dedupe_key``, as for
    ``invoke``: an unfinished execution of the task holding that key is returned instead."""
    from .models import Execution as _Execution

    return _Execution.objects.fork(execution_id, from_step, dedupe_key=dedupe_key)


def emit(name: str, payload: Any = None, **options: Any) -> list[str]:
    """Start one execution per task subscribed to the event; see ``events.emit``."""
    from .events import emit as _emit

    return _emit(name, payload, **options)


def get(execution_id: Any) -> Execution:
    """The ``Execution`` row (``Execution.DoesNotExist`` if absent)."""
    from .api import get as _get

    return _get(execution_id)


def wait(execution_id: Any, timeout: float | None = 30) -> Any:
    """Wait for the result; raises ``ExecutionFailed``/``ExecutionCancelled``/``TimeoutError``."""
    from .api import wait as _wait

    return _wait(execution_id, timeout)


async def ainvoke(task: str | Task, payload: Any = None, **options: Any) -> str:
    """Start an execution from async code; see ``invoke``."""
    from .asyncapi import ainvoke as _ainvoke

    return await _ainvoke(task, payload, **options)


async def acancel(execution_id: Any, reason: str | None = None) -> bool:
    """Cancel an execution from async code; see ``cancel``."""
    from .asyncapi import acancel as _acancel

    return await _acancel(execution_id, reason)


async def aget(execution_id: Any) -> Execution:
    """The ``Execution`` row, from async code (``Execution.DoesNotExist`` if absent)."""
    from .asyncapi import aget as _aget

    return await _aget(execution_id)


async def await_result(execution_id: Any, timeout: float | None = 30) -> Any:
    """Wait for the result without blocking the event loop; raises like ``wait``."""
    from .asyncapi import await_result as _await_result

    return await _await_result(execution_id, timeout)


def send_signal(execution_id: Any, name: str, payload: Any = None, *,
                sent_by: str | None = None) -> bool:
    """Send a signal to an execution waiting in ``ctx.wait_for_signal``; ``True`` if stored,
    ``False`` if the execution is finished or unknown."""
    from .api import send_signal as _send_signal

    return _send_signal(execution_id, name, payload, sent_by=sent_by)


# --- scheduling (conductor_django.scheduler) ---------------------------------------------


def schedule(
    task: str | Task,
    name: str,
    cron: str,
    payload: Any = None,
    timezone: str | None = None,
) -> Schedule:
    """Create or replace the dynamic cron schedule ``name`` of ``task``; see ``scheduler``."""
    from .scheduler import schedule as _schedule

    return _schedule(task, name, cron, payload, timezone)


def unschedule(task: str | Task, name: str) -> bool:
    """Delete a schedule and cancel its pending execution; ``False`` if there was none."""
    from .scheduler import unschedule as _unschedule

    return _unschedule(task, name)


# --- operating (conductor_django.operations) --------------------------------------------


def pause(queue: str | None = None, task: str | Task | None = None, *,
          cancel_running: bool = False, schedules: str = "queue", by: str = "") -> bool:
    """Stop starting executions of a queue or a task (exactly one) on every worker until
    ``resume``; ``True`` if it was not paused. See ``operations.pause``."""
    from .operations import pause as _pause

    return _pause(queue, task, cancel_running=cancel_running, schedules=schedules, by=by)


def resume(queue: str | None = None, task: str | Task | None = None) -> bool:
    """Start executions of a paused queue or task again; ``True`` if it was paused."""
    from .operations import resume as _resume

    return _resume(queue, task)


def paused() -> list[Paused]:
    """What is paused and since when (``scope``, ``name``, ``since``, ``by``, ...)."""
    from .operations import paused as _paused

    return _paused()


def set_limits(task: str | Task, **limits: Any) -> Effective:
    """Override ``concurrency``, ``key_concurrency`` or ``rate_limit`` of a task on every
    worker (``None``: back to the code's value); see ``operations.set_limits``."""
    from .operations import set_limits as _set_limits

    return _set_limits(task, **limits)
