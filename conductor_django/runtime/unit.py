"""The final writes of an attempt, shared by single executions (``runner``) and batches
(``batch``): once the outcome of an attempt is known it is recorded even across a
database fault (``retry.retry_write``), and a failure is retried with the task's
backoff until its attempts run out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from django.db import InterfaceError, InternalError, OperationalError
from django.utils import timezone

from ..definitions.tasks import Task
from ..definitions.values import storable_text
from ..exceptions import error_text
from ..models import Execution
from ..state import Claimed
from ..state.status import FINISHED, Outcome
from . import Runtime
from .retry import retry_write

logger = logging.getLogger("conductor_django.worker")


__all__ = ["FINISHED", "Outcome"]  # how an attempt ended: ``state.status``'s vocabulary


class ExecutionUnit(Protocol):
    """What the worker claims and hands to a handler thread: one execution
    (``state.Claimed``) or a batch of them (``runtime.batch.ClaimedBatch``)."""

    @property
    def id(self) -> str: ...

    @property
    def task_name(self) -> str: ...

    @property
    def ids(self) -> list[str]: ...

    @property
    def items(self) -> list[Claimed]: ...

    @property
    def size(self) -> int: ...


#: Seconds before the retry of an execution whose task is not registered here.
UNKNOWN_TASK_RETRY = 60.0


def error_message(exc: BaseException) -> str:
    """The ``last_error`` of an attempt that raised ``exc`` (its type and message), made
    storable (``storable_text``: a NUL or a lone surrogate in the message is escaped)."""
    return storable_text(error_text(exc))


#: Database errors of the connection, not of the values written: the worker releases the
#: execution and it runs again on a fresh connection. Any other error while recording an
#: outcome (``DataError``: a value the database refused) fails the execution for good.
TRANSIENT = (OperationalError, InterfaceError, InternalError)


def unrecordable(items: list[Claimed], runtime: Runtime, exc: BaseException) -> str:
    """The outcome of an attempt could not be recorded: fail its executions for good with
    a clear ``last_error``. Left running, they would be released and run again at once,
    over and over."""
    message = f"Could not record the outcome of this attempt: {error_message(exc)}"
    logger.error("%s: %s", ", ".join(item.id for item in items), message, exc_info=exc)
    return ",".join(sorted({fail(item, runtime, None, message, retry=False) for item in items}))


def final_write(fn: Callable[[], int], using: str, eid: str) -> int:
    """The outcome of an attempt is known: record it even across a database fault."""
    return retry_write(fn, using, f"the final write of {eid}")


def unknown_task_error(task_name: str) -> str:
    """The ``last_error`` of an attempt whose task this worker does not know."""
    return (f"Task {task_name!r} is not registered in this worker: a worker knows the tasks "
            "it imported when it started, so restart it after adding a task (or run "
            "conductor_worker --reload while developing), and check that it imports the "
            "module that defines the task (an installed app's tasks.py, or TASK_MODULES)")


def fail_unknown(item: Claimed, runtime: Runtime) -> str:
    """Fail (retry later) an attempt whose task is not registered here; the first attempt
    says why at WARNING, so an edit loop with a stale worker is not silent."""
    error = unknown_task_error(item.task_name)
    level = logging.WARNING if item.attempts <= 1 else logging.INFO
    logger.log(level, "%s %s: %s", item.task_name, item.id, error,
               extra={"execution_id": item.id, "task_name": item.task_name})
    return fail(item, runtime, None, error)


def fail(item: Claimed, runtime: Runtime, task: Task | None, error: str, *,
         retry: bool = True, ended: Outcome | None = None) -> str:
    """Record a failed attempt: ``retrying`` at the task's backoff, or ``failed``."""
    retry_at = None
    error = storable_text(error)
    if retry and item.attempts < item.max_attempts:
        try:
            delay = task.retry_delay(item.attempts) if task is not None else UNKNOWN_TASK_RETRY
        except Exception as exc:  # noqa: BLE001 - a backoff callable may raise anything
            # No retry without a delay: a retry at once could loop hot.
            error += f" (not retried: {error_message(exc)})"
        else:
            retry_at = timezone.now() + timedelta(seconds=delay)
            logger.info("%s %s retrying in %gs", item.task_name, item.id, delay)
    db = runtime.using
    final_write(
        lambda: Execution.objects.fail(item.id, runtime.worker_id, item.lease, error,
                                       retry_at, db, may_have_parent=item.parent_id is not None,
                                       ended=ended),
        db, item.id,
    )
    return Outcome.FAILED if retry_at is None else Outcome.RETRYING
