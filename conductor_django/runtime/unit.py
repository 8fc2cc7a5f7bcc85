"""The final writes of an attempt, shared by single executions (``runner``) and batches
(``batch``): once the outcome of an attempt is known it is recorded even across a
database fault (``retry.retry_write``), and a failure is retried with the task's
backoff until its attempts run out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from django.utils import timezone

from ..definitions.tasks import Task
from ..exceptions import error_text
from ..models import Execution
from ..state import Claimed
from . import Runtime
from .retry import retry_write

logger = logging.getLogger("conductor_django.worker")


class Outcome(StrEnum):
    """How an attempt ended, as the worker logs it (the values are the log's words)."""

    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"  # failed, another attempt is due
    CANCELLED = "cancelled"
    RELEASED = "released"  # given back unfinished: shutdown, a closed window, a sleep
    SUSPENDED = "suspended"  # waiting for a child execution
    LOST = "lost"  # this worker no longer holds it: nothing of the attempt was written


#: The outcomes after which an execution is finished.
FINISHED = (Outcome.COMPLETED, Outcome.FAILED, Outcome.CANCELLED)


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
    """The ``last_error`` of an attempt that raised ``exc`` (its type and message)."""
    return error_text(exc)


def final_write(fn: Callable[[], int], using: str, eid: str) -> int:
    """The outcome of an attempt is known: record it even across a database fault."""
    return retry_write(fn, using, f"the final write of {eid}")


def fail(item: Claimed, runtime: Runtime, task: Task | None, error: str, *,
         retry: bool = True, ended: str | None = None) -> str:
    """Record a failed attempt: ``retrying`` at the task's backoff, or ``failed``."""
    retry_at = None
    if retry and item.attempts < item.max_attempts:
        delay = task.retry_delay(item.attempts) if task is not None else UNKNOWN_TASK_RETRY
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
