"""Operator transitions: cancel (any unfinished execution), retry (the same row) and run
again (a new row). Mixed into ``ExecutionQuerySet``.

Each is one guarded write (cancel: a few), so it is safe against a worker (or another
operator) changing the row at the same moment, and returns what it did instead of
raising when the action is not legal now.

**Cancel** (``cancel``): a pending or suspended execution is marked ``failed`` at once
with the reason as ``last_error`` (``cancelled`` stays False) and never runs. A running
execution gets ``cancelled=True`` and the reason in ``last_error`` in the same
statement, and a wake-up for its worker carrying the id and the reason
(``store.wakeup``: NOTIFY on PostgreSQL), so that its worker hears of it at once
(the rest of the path: ``runtime.cancellation``). Then every unfinished descendant (children, their
children, ...) is cancelled the same way with the same reason, parents before
children (``descendants``); the return value is about the execution itself. A
finished (or unknown) execution is not cancelled and neither is its tree: ``False``
means nothing was cancelled, unless the execution is running with a cancel requested
already (its descendants are cancelled again, which reaches those started since).
Whatever is cancelled gets ``cancel_requested``, so that a view or a metric tells an
operator's cancel from a failure.

**Retry** (``retry``): a ``failed`` or ``cancelled`` execution becomes ``pending``
again, runnable at once, *the same row*: its finished steps are kept, so it resumes
where it stopped and never repeats a finished step. ``attempts`` keeps counting
(history stays honest) and the execution gets a fresh budget: ``max_attempts``
becomes ``attempts`` + the task's ``max_attempts`` (``state.birth.attempt_budget``: the
row's ``max_attempts`` when the task is not registered in this process).
``cancelled`` and ``cancel_requested`` are reset, ``finished_at`` cleared, ``last_error``
keeps the previous error until the next attempt ends.
Not legal (returns ``False``) for unfinished or completed executions, nor when an
unfinished execution of the same task holds the same ``dedupe_key``. With
``from_step``, the steps recorded from that step on (in the order they were recorded)
are deleted in the same transaction, so the execution runs again from there; an
unknown step name raises ``ValueError`` before anything is written. Each retry that
took effect adds a ``retried`` row (by whom, from which step) to the attempt history.

**Fork** (``fork``): a new ``pending`` execution of the same task with the same
payload, queue, priority and event name (no parent; the dedupe key given to ``fork``,
if any, with ``invoke``'s rule), ``forked_from`` the original, with copies of the steps
recorded before ``from_step`` (its signals are not copied: a wait after ``from_step``
waits for a new decision); the original is not touched, whatever its state. A fork
with copied steps keeps the original's ``started_at`` (its steps started then), so its
first claim loads them.

**Run again** (``run_again``): a new ``pending`` execution of the same task with the
same payload, queue, priority, event name, ``dedupe_key`` and key, no steps, no parent and
a fresh attempt budget. Legal for finished executions (``completed``, ``failed``,
``cancelled``); returns the new id, or ``None`` when not legal, or when an unfinished
execution of the task holds the same ``dedupe_key`` (dedupe wins: nothing is created).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, router, transaction
from django.db.models import F
from django.utils import timezone

from ..definitions.values import KEY_LENGTH, STEP_NAME_LENGTH, as_uuid, check_text
from ..exceptions import DEFAULT_REASON
from ..store import wakeup
from ..store.transactions import retry_locked, write_transaction
from . import attempts
from .birth import attempt_budget, birth
from .status import FINAL, RUNNABLE, UNFINISHED, Outcome, Status

S = Status
RETRYABLE = (S.FAILED, S.CANCELLED)
RERUNNABLE = FINAL


class OperatorTransitions:
    model: Any

    def _write_db(self, using: str | None) -> str:
        return using or router.db_for_write(self.model)

    def cancel(self, execution_id: Any, reason: str | None = None, *,
               using: str | None = None) -> bool:
        """Request cancellation; ``True`` if it took effect, ``False`` if already finished."""
        if reason is not None:
            check_text(reason, "cancel reason", allow_empty=True)  # before any write
        eid = as_uuid(execution_id)
        if eid is None:
            return False
        reason = reason or DEFAULT_REASON
        db = self._write_db(using)
        done = self._cancel_one(eid, reason, db)
        if not done and not self.model._default_manager.using(db).filter(
                pk=eid, status__in=UNFINISHED).exists():
            return False  # finished or unknown: its tree is left alone
        for descendant in self.descendants(eid, using=db):
            self._cancel_one(descendant, reason, db)
        return done

    def descendants(self, execution_id: Any, *, using: str | None = None) -> list[uuid.UUID]:
        """The ids of the unfinished descendants of an execution, parents first (a
        finished child's unfinished children count too)."""
        eid = as_uuid(execution_id)
        if eid is None:
            return []
        return self._unfinished_below([eid], self._write_db(using))

    def _unfinished_below(self, ids: list[Any], db: str) -> list[uuid.UUID]:
        """The ids of the unfinished descendants of ``ids``, parents first."""
        rows = self.model._default_manager.using(db)
        found: list[uuid.UUID] = []
        seen = set(ids)
        level = list(ids)
        while level:
            children = list(rows.filter(parent_id__in=level).values_list("pk", "status"))
            level = [pk for pk, _ in children if pk not in seen]
            seen.update(level)
            found += [pk for pk, status in children if status in UNFINISHED]
        return found

    def _cancel_one(self, eid: uuid.UUID, reason: str, db: str) -> bool:
        rows = self.model._default_manager.using(db).filter(pk=eid)
        # A status may change between the two updates (pending -> running -> pending on
        # a retry); a few rounds settle it, each update being atomic on its own.
        for _ in range(5):
            # Running (the case that must be fast): flag it and tell its worker.
            if retry_locked(lambda: self._request_running(db, eid, reason), db):
                return True
            if retry_locked(lambda: self._stop_waiting(db, eid, reason), db):
                return True
            status = rows.values_list("status", flat=True).first()
            if status is None or status in FINAL:
                return False  # unknown or finished
            if status == S.RUNNING:  # False: a cancel was accepted already
                return retry_locked(lambda: self._request_running(db, eid, reason), db)
        return False

    def _stop_waiting(self, db: str, eid: uuid.UUID, reason: str) -> bool:
        """A pending or suspended execution ends ``failed`` with ``reason``, never runs."""
        return bool(self._stop_waiting_rows(db, [eid], reason))

    def _stop_waiting_rows(self, db: str, ids: list[Any], reason: str) -> int:
        """The pending or suspended executions of ``ids`` end ``failed`` with ``reason``
        and ``cancel_requested``, never run; their waiting parents are woken first, in
        the same transaction. How many were stopped (the others started meanwhile)."""
        manager = self.model._default_manager
        with write_transaction(db):
            waiting = manager.using(db).filter(pk__in=ids, status__in=RUNNABLE)
            woken = manager.wake_parents(waiting, db)  # parent first: see state.execution
            stopped = waiting.update(
                status=S.FAILED,
                last_error=reason,
                cancel_requested=True,
                finished_at=timezone.now(),
                resume=False,
            )
            if not stopped and woken:
                transaction.set_rollback(True, using=db)  # they started meanwhile: no wake
        return int(stopped)

    def _request_running(self, db: str, eid: uuid.UUID, reason: str) -> bool:
        """Set ``cancelled`` and the reason on a running execution and notify its worker."""
        return wakeup.request_cancel(db, self.model._meta.db_table, eid, reason)

    def _reborn(self, old: Any, **links: Any) -> Any:
        """A new execution of ``old``'s task, payload, queue, priority, event and key
        (``state.birth``: a fresh attempt budget, no parent), not yet saved."""
        return birth(old.task_name, old.payload, queue=old.queue, priority=old.priority,
                     key=old.key, event_name=old.event_name,
                     budget_fallback=old.max_attempts, **links).row(self.model)

    def _steps(self, db: str) -> Any:
        model = self.model._meta.apps.get_model(self.model._meta.app_label, "Step")
        return model._default_manager.using(db)

    def _step_from(self, eid: uuid.UUID, from_step: str, db: str) -> int:
        """The id of the step ``from_step`` of ``eid``; ``ValueError`` naming it if none."""
        step_id = (self._steps(db).filter(execution_id=eid, name=from_step)
                   .values_list("pk", flat=True).first())
        if step_id is None:
            raise ValueError(f"Execution {eid} has no recorded step named {from_step!r}")
        return int(step_id)

    def retry(self, execution_id: Any, *, from_step: str | None = None, by: str = "",
              using: str | None = None) -> bool:
        """Put a failed or cancelled execution back to ``pending``; ``True`` if it did.

        ``from_step``: discard the steps recorded from that one on (``ValueError`` if the
        execution has no such step); ``by``: who retried it, for the attempt history.
        """
        if from_step is not None:
            check_text(from_step, "from_step", STEP_NAME_LENGTH)  # before any query
        eid = as_uuid(execution_id)
        if eid is None:
            return False
        db = self._write_db(using)
        first_discarded = None if from_step is None else self._step_from(eid, from_step, db)
        rows = self.model._default_manager.using(db).filter(pk=eid, status__in=RETRYABLE)
        found = rows.values_list("task_name", "max_attempts").first()
        if found is None:
            return False
        task_name, max_attempts = found
        budget = attempt_budget(task_name, max_attempts)
        try:
            with write_transaction(db):  # a savepoint: a dedupe clash leaves no trace
                updated = rows.update(
                    status=S.PENDING,
                    run_at=timezone.now(),
                    finished_at=None,
                    cancelled=False,
                    cancel_requested=False,
                    resume=False,
                    locked_by=None,
                    locked_at=None,
                    max_attempts=F("attempts") + budget,
                )
                if updated:
                    if first_discarded is not None:
                        self._steps(db).filter(execution_id=eid, pk__gte=first_discarded).delete()
                    again = self.model._default_manager.using(db).filter(pk=eid)
                    attempts.record(again, Outcome.RETRIED, "", db, retried_by=by,
                                    from_step=from_step or "")
        except IntegrityError:
            return False  # an unfinished twin holds the dedupe key
        return bool(updated)

    def fork(self, execution_id: Any, from_step: str, *, dedupe_key: str | None = None,
             by: str = "", using: str | None = None) -> str:
        """A new execution of the same task and payload with copies of the steps recorded
        before ``from_step``; its id. ``ValueError`` if there is no such execution or step.

        ``dedupe_key``: as ``invoke``'s, the fork's own; while an unfinished execution of
        the task holds it, the fork creates nothing and returns that execution's id (two
        operators forking at once make one execution)."""
        check_text(from_step, "from_step", STEP_NAME_LENGTH)  # before any query
        if dedupe_key is not None:
            check_text(dedupe_key, "dedupe_key", KEY_LENGTH)
        eid = as_uuid(execution_id)
        db = self._write_db(using)
        old = None if eid is None else self.model._default_manager.using(db).filter(
            pk=eid).first()
        if old is None:
            raise ValueError(f"No execution {execution_id!r}")
        first_left = self._step_from(old.pk, from_step, db)
        steps = self._steps(db)
        kept = list(steps.filter(execution_id=old.pk, pk__lt=first_left).order_by("pk"))
        # Its copied steps started with the original; a claim seeing ``started_at`` set
        # loads the steps (a fresh first attempt is assumed to have none).
        started = (old.started_at or kept[0].started_at or kept[0].created_at) if kept \
            else None
        new = self._reborn(old, dedupe_key=dedupe_key, forked_from_id=old.pk,
                           started_at=started)
        copies = [steps.model(execution_id=new.pk, name=s.name, result=s.result,
                              started_at=s.started_at, created_at=s.created_at) for s in kept]
        for _ in range(10):
            try:
                with write_transaction(db):  # a savepoint: a dedupe clash leaves no trace
                    new.save(using=db, force_insert=True)
                    steps.bulk_create(copies)
                return str(new.pk)
            except IntegrityError:
                if dedupe_key is None:
                    raise
                twin = self.model._default_manager.using(db).filter(
                    task_name=old.task_name, dedupe_key=dedupe_key,
                    status__in=UNFINISHED).values_list("pk", flat=True).first()
                if twin is not None:
                    return str(twin)
        raise IntegrityError(f"fork: could not insert or find the execution with dedupe_key "
                             f"{dedupe_key!r}")

    def run_again(self, execution_id: Any, *, using: str | None = None) -> str | None:
        """Start a new execution with the payload of a finished one; its id, or ``None``."""
        eid = as_uuid(execution_id)
        if eid is None:
            return None
        db = self._write_db(using)
        old = self.model._default_manager.using(db).filter(pk=eid, status__in=RERUNNABLE).first()
        if old is None:
            return None
        new = self._reborn(old, dedupe_key=old.dedupe_key)
        try:
            with write_transaction(db):
                new.save(using=db, force_insert=True)
        except IntegrityError:
            return None  # an unfinished execution of the task holds the same dedupe key
        return str(new.pk)
