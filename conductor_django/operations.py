"""Operator actions on finished executions: retry (the same row) and run again (a new row).

Cancel lives in ``cancellation``. Each function is one guarded write, so it is safe
against a worker (or another operator) changing the row at the same moment, and
returns what it did instead of raising when the action is not legal now.

**Retry** (``retry``): a ``failed`` or ``cancelled`` execution becomes ``pending``
again, runnable at once, *the same row*: its finished steps are kept, so it resumes
where it stopped and never repeats a finished step. ``attempts`` keeps counting
(history stays honest) and the execution gets a fresh budget: ``max_attempts``
becomes ``attempts`` + the task's ``max_attempts`` (the row's old budget when the
task is not registered in this process). ``cancelled`` is reset, ``finished_at``
cleared, ``last_error`` keeps the previous error until the next attempt ends.
Not legal (returns ``False``) for unfinished or completed executions, nor when an
unfinished execution of the same task holds the same ``dedupe_key``.

**Run again** (``run_again``): a new ``pending`` execution of the same task with the
same payload, queue, priority, event name and ``dedupe_key``, no steps, no parent and
a fresh attempt budget. Legal for finished executions (``completed``, ``failed``,
``cancelled``); returns the new id, or ``None`` when not legal, or when an unfinished
execution of the task holds the same ``dedupe_key`` (dedupe wins: nothing is created).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, router
from django.db.models import F
from django.utils import timezone

from .definitions.registry import all_tasks
from .definitions.values import as_uuid
from .models import Execution
from .transactions import write_transaction

S = Execution.Status
RETRYABLE = (S.FAILED, S.CANCELLED)
RERUNNABLE = Execution.FINAL


def _budget(task_name: str, row_max_attempts: int) -> int:
    task = all_tasks().get(task_name)
    return task.max_attempts if task is not None else max(row_max_attempts, 1)


def retry(execution_id: Any, *, using: str | None = None) -> bool:
    """Put a failed or cancelled execution back to ``pending``; ``True`` if it did."""
    eid = as_uuid(execution_id)
    if eid is None:
        return False
    db = using or router.db_for_write(Execution)
    rows = Execution.objects.using(db).filter(pk=eid, status__in=RETRYABLE)
    found = rows.values_list("task_name", "max_attempts").first()
    if found is None:
        return False
    task_name, max_attempts = found
    budget = _budget(task_name, max_attempts)
    try:
        with write_transaction(db):  # a savepoint: a dedupe clash leaves no trace
            updated = rows.update(
                status=S.PENDING,
                run_at=timezone.now(),
                finished_at=None,
                cancelled=False,
                resume=False,
                locked_by=None,
                locked_at=None,
                max_attempts=F("attempts") + budget,
            )
    except IntegrityError:
        return False  # an unfinished twin holds the dedupe key
    return bool(updated)


def run_again(execution_id: Any, *, using: str | None = None) -> str | None:
    """Start a new execution with the payload of a finished one; its id, or ``None``."""
    eid = as_uuid(execution_id)
    if eid is None:
        return None
    db = using or router.db_for_write(Execution)
    old = Execution.objects.using(db).filter(pk=eid, status__in=RERUNNABLE).first()
    if old is None:
        return None
    task = all_tasks().get(old.task_name)
    new = Execution(
        task_name=old.task_name,
        queue=old.queue,
        payload=old.payload,
        priority=old.priority,
        dedupe_key=old.dedupe_key,
        event_name=old.event_name,
        max_attempts=task.max_attempts if task is not None else old.max_attempts,
    )
    try:
        with write_transaction(db):
            new.save(using=db, force_insert=True)
    except IntegrityError:
        return None  # an unfinished execution of the task holds the same dedupe key
    return str(new.pk)
