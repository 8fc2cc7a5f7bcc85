"""The birth of an execution: every initial column of a new row, computed in one place.

Every path that creates an execution goes through ``birth``: ``invoke`` and
``invoke_many`` (``api``, with throttle and debounce), a child (``ctx.invoke``), ``emit``
and model triggers (``events``), the Django Tasks backend, a schedule's fire time
(``scheduler``), and the operator's ``fork`` and ``run_again`` (``state.operator``). The
caller writes the row its own way - one ORM insert, or the bulk statement of
``store.inserts`` for ``invoke_many`` (``Birth.invocation``) - and keeps its own rule for
a unique clash (a dedupe twin, a fire time already queued).

**The attempt budget** (``max_attempts``, SPEC: "total attempts before the execution
fails for good") is the task's ``max_attempts``: of the ``Task`` the caller resolved
(``invoke``, a child, an event, a schedule; the Django Tasks backend passes its task with
the backend's ``MAX_ATTEMPTS``), else of the task registered under that name (``fork``,
``run_again``, and the fresh budget of a ``retry``, which adds it to the attempts used),
else - a task this process does not know, e.g. an operator acting from a web process
that does not import it - the original row's ``max_attempts``. Always at least 1 and at
most ``MAX_ATTEMPTS``, so a retry's ``attempts + budget`` fits its column.

A new row is ``pending`` with no attempt made (``attempts`` 0), not cancelled, not
resumed, and due at ``run_at`` (default: now).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from django.utils import timezone

from ..definitions.registry import all_tasks
from ..definitions.tasks import MAX_ATTEMPTS, Task
from ..store.inserts import Invocation
from .status import Status

#: The ``event_name`` of an execution no event started.
INVOKED = "conductor.invoke"


def attempt_budget(task: Task | str, fallback: int = 1) -> int:
    """The attempts a new execution of ``task`` (a ``Task``, or a task name) may make;
    ``fallback``: the original row's budget, for a task name not registered here."""
    known = task if isinstance(task, Task) else all_tasks().get(task)
    budget = known.max_attempts if known is not None else fallback
    return max(1, min(int(budget), MAX_ATTEMPTS))


@dataclass(slots=True)
class Birth:
    """Every column a new execution starts with (the others take the model's defaults)."""

    task_name: str
    queue: str
    payload: Any
    max_attempts: int
    priority: int
    run_at: datetime
    dedupe_key: str | None
    key: str | None  # the flow-control key
    trace_context: dict[str, str] | None
    parent_id: Any
    schedule_name: str | None
    scheduled_for: datetime | None
    event_name: str
    forked_from_id: Any
    started_at: datetime | None  # a fork with copied steps: when they started
    status: str = Status.PENDING
    attempts: int = 0

    def columns(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def row(self, model: Any) -> Any:
        """The unsaved model instance (``model``: ``Execution``)."""
        return model(**self.columns())

    def invocation(self, eid: uuid.UUID, payload_text: str | None) -> Invocation:
        """The row's own values for the bulk insert (``store.inserts.execution_rows``, whose
        shared columns - parent, schedule, event - the caller passes once for all rows),
        with ``payload_text``, a payload as JSON (``None``: no payload): the rows of one
        ``invoke_many`` that differ only by their payload share one ``Birth``."""
        return (eid, self.task_name, self.queue, payload_text, self.max_attempts,
                self.priority, self.run_at,
                None if self.trace_context is None else json.dumps(self.trace_context),
                self.key)

    def payload_json(self) -> str | None:
        return None if self.payload is None else json.dumps(self.payload, allow_nan=False)

def birth(
    task: Task | str,
    payload: Any = None,
    *,
    queue: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    key: str | None = None,
    trace_context: dict[str, str] | None = None,
    parent_id: Any = None,
    schedule_name: str | None = None,
    scheduled_for: datetime | None = None,
    event_name: str | None = None,
    forked_from_id: Any = None,
    started_at: datetime | None = None,
    budget_fallback: int = 1,
) -> Birth:
    """The initial columns of a new execution of ``task`` (its values already checked).

    ``task``: the ``Task`` the caller resolved, or a task name (an operator's re-birth of
    a row: then ``queue`` is the original's and ``budget_fallback`` its budget)."""
    if queue is None:
        if not isinstance(task, Task):
            raise TypeError(f"the birth of an execution of {task!r} needs its queue")
        queue = task.get_queue()
    return Birth(
        task_name=task.name if isinstance(task, Task) else task,
        queue=queue,
        payload=payload,
        max_attempts=attempt_budget(task, budget_fallback),
        priority=priority,
        run_at=timezone.now() if run_at is None else run_at,
        dedupe_key=dedupe_key,
        key=key,
        trace_context=trace_context,
        parent_id=parent_id,
        schedule_name=schedule_name,
        scheduled_for=scheduled_for,
        event_name=INVOKED if event_name is None else event_name,
        forked_from_id=forked_from_id,
        started_at=started_at,
    )
