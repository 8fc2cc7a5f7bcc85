"""Attempt history: how each attempt of an execution ended, and the operator's retries.

An attempt row is written by the write that ends the attempt, in its transaction and
fenced by its lease (``store.attempts.record`` reads the row that write is about to
change): ``failed`` / ``retrying`` / ``timed_out`` (``fail``), ``cancelled``
(``finish_cancelled``), ``recovered`` (the worker was presumed dead: recovery and
``give_up``), ``released`` (the worker shut down mid-attempt: the attempt resumes
later), ``completed`` (only off the hot path, below), and ``retried`` (an operator's
retry, by whom and from which step).

The hot path writes nothing more: the first attempt of an execution that completes
without ever being released or suspended is the execution row itself (number 1,
``started_at``, ``finished_at``), so ``history`` derives it. Any other completion
(a later attempt, a resumed one) is recorded by ``complete(..., record=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.exceptions import EmptyResultSet
from django.db import connections, models
from django.db.models import QuerySet
from django.utils import timezone

from ..store import attempts as attempts_sql
from .status import RECORDED, Outcome, Status

#: The derived current attempt of a running execution (not an outcome: it has none yet).
RUNNING = "running"


class AttemptQuerySet(models.QuerySet):
    def of(self, eid: Any) -> AttemptQuerySet:
        return self.filter(execution_id=eid).order_by("id")


def _attempt_model(execution_model: Any) -> Any:
    return execution_model._meta.apps.get_model(execution_model._meta.app_label, "Attempt")


def record(rows: QuerySet, ended: Outcome, error: str, using: str, *, retried_by: str = "",
           from_step: str = "", now: datetime | None = None) -> int:
    """Record the attempt of each execution of ``rows`` (call it inside the transaction
    of the write that ends them, before that write). ``ended``: one of ``RECORDED``."""
    if ended not in RECORDED:
        raise ValueError(f"the attempt history does not record {str(ended)!r}")
    model = rows.model
    try:
        sql, params = rows.values("pk").query.get_compiler(using).as_sql()
    except EmptyResultSet:
        return 0  # e.g. ``pk__in=[]``: nothing to record

    return attempts_sql.record(
        connections[using], model._meta.db_table, _attempt_model(model)._meta.db_table,
        sql, params, Outcome(ended).value, error or "", now or timezone.now(),
        retried_by=retried_by, from_step=from_step)


@dataclass(frozen=True)
class AttemptView:
    """One line of an execution's attempt history (a row, or derived from the execution)."""

    number: int
    worker: UUID | None
    started_at: datetime | None
    finished_at: datetime | None
    ended: str  # an ``Outcome`` of ``RECORDED``, or "running"
    error: str = ""
    retried_by: str = ""
    from_step: str = ""
    derived: bool = False

    @property
    def how(self) -> str:
        """How it ended, in words (the admin's column)."""
        if self.ended == Outcome.RETRIED:
            where = f" from step {self.from_step!r}" if self.from_step else ""
            who = f" by {self.retried_by}" if self.retried_by else ""
            return f"retried{where}{who}"
        if self.ended == RUNNING:
            return "in progress"
        return Outcome(self.ended).label if self.ended in Outcome.values else self.ended

    @property
    def outcome(self) -> str:
        if self.ended in (Outcome.COMPLETED, RUNNING, Outcome.CANCELLED, Outcome.RETRIED,
                          Outcome.RELEASED):
            return str(self.ended)
        return Outcome.FAILED.value


def history(execution: Any, using: str | None = None) -> list[AttemptView]:
    """The attempts of ``execution`` in order: its recorded rows, and the current attempt
    derived from the execution row when no row records it (running, or completed on the
    hot path)."""
    rows = _attempt_model(type(execution))._default_manager.using(
        using or execution._state.db).of(execution.pk)
    views = [AttemptView(a.number, a.worker, a.started_at, a.finished_at, a.ended, a.error,
                         a.retried_by, a.from_step) for a in rows]
    ended_numbers = {v.number for v in views
                     if v.ended not in (Outcome.RELEASED, Outcome.RETRIED)}
    current = execution.attempts
    if current and current not in ended_numbers:
        if execution.status == Status.RUNNING:
            views.append(AttemptView(current, execution.locked_by, execution.locked_at, None,
                                     RUNNING, derived=True))
        elif execution.status == Status.COMPLETED:
            started = execution.started_at if current == 1 and not views else None
            views.append(AttemptView(current, None, started, execution.finished_at,
                                     Outcome.COMPLETED, derived=True))
    return views
