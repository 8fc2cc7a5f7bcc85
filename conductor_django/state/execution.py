"""The state machine of an execution: every transition, guarded, in one place.

Every transition is a method of ``ExecutionQuerySet`` (``Execution.objects``), written
against ``self.model``: the worker's (claim, complete, fail, release, recover), the
operator's (``state.operator``: cancel, retry, run again) and the django-q2
dispatcher's (``state.dispatch``). The raw statements are the store's.

Every claim takes a new fencing token (``lease = lease + 1``), and every write after
the claim - steps, log lines, the outcome - is fenced by ``locked_by = <this worker>``,
``lease = <the token of this claim>`` and ``status = 'running'``: a worker whose
executions were recovered after it was presumed dead (frozen, paused, cut off) cannot
write anything for them any more, even if it claimed the same execution again since.
A row whose cancellation was requested (``cancelled``) always ends ``cancelled``.

``using`` is the database alias of every write: the worker passes its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, models
from django.db.models import (
    Case,
    CharField,
    DateTimeField,
    Exists,
    F,
    Q,
    QuerySet,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from ..definitions.options import Batch
from ..definitions.registry import claim_rules
from ..exceptions import DEFAULT_REASON
from ..store import claims as claim_sql
from ..store import writes
from ..store.transactions import write_transaction
from . import attempts, controls, waiting
from .bulk import BulkTransitions
from .claimed import Claimed, as_id, as_id_or_none
from .dispatch import DispatchTransitions
from .operator import OperatorTransitions
from .signals import SignalTransitions
from .status import FINAL, RUNNABLE, UNFINISHED, Outcome, Status

S = Status

_CANCELLED = When(cancelled=True, then=Value(S.CANCELLED))


def _keep_reason(error: Any) -> Case:
    """``last_error``: the cancel reason stays on a cancelled row, else ``error``."""
    error = error if hasattr(error, "resolve_expression") else Value(error)
    return Case(When(cancelled=True, then=F("last_error")), default=error, output_field=TextField())


def _finished(when: Q, now: datetime, otherwise: datetime | None = None) -> Case:
    return Case(When(when, then=Value(now)), default=Value(otherwise), output_field=DateTimeField())


# --- waking parents (ctx.invoke) -------------------------------------------------------
#
# A parent waiting on a child (``ctx.invoke``) is ``suspended`` with ``run_at`` at its
# deadline (or empty). Every write that can end an execution wakes its parent, in the
# same transaction and *before* touching the child, so that locks are always taken
# parent first (as ``cancel`` does): no deadlock between a child finishing and its
# parent being cancelled. A parent that is still running (it is about to suspend) gets
# ``run_at`` just past its lock time: ``release(waiting_for=...)`` reads that as
# "woken" and makes it runnable at once. Wake-ups are hints: a woken parent re-reads
# its child and suspends again if it is not finished.

WOKEN_WHILE_RUNNING = timedelta(microseconds=1)


class ExecutionQuerySet(OperatorTransitions, BulkTransitions, DispatchTransitions,
                        SignalTransitions, models.QuerySet):
    def unfinished(self) -> ExecutionQuerySet:
        return self.filter(status__in=UNFINISHED)

    def finished(self) -> ExecutionQuerySet:
        return self.filter(status__in=FINAL)

    def why_waiting(self, execution: Any, now: datetime | None = None) -> list[str]:
        """Why the runnable ``execution`` is not starting (``state.waiting``)."""
        return waiting.why_waiting(self, execution, now)

    # --- the claim -------------------------------------------------------------------

    def claim(
        self, worker_id: uuid.UUID, queues: Sequence[str] | None, limit: int, using: str,
        exclude: Sequence[str] = (), skip: Sequence[str] = (),
    ) -> list[Claimed]:
        """Lock up to ``limit`` runnable executions for ``worker_id``, best first.

        ``skip``: task names not to claim now (the worker claims async handlers and
        threaded ones for their own free slots).

        Flow control (``claim_rules``): batch tasks and tasks whose window is closed are
        skipped here (batches are claimed by ``claim_batch``), and tasks with
        ``concurrency=N``, ``key_concurrency=N`` or a ``rate_limit`` go through
        ``store.claims.claim_limited`` (keyed tasks round-robin across keys). ``exclude``:
        executions not to claim (a stale handler of this worker may still run them).
        """
        connection = connections[using]
        table = self.model._meta.db_table
        now = timezone.now()
        # The operator's controls (``state.controls``): paused tasks are skipped like a
        # closed window, paused queues leave the worker's queues, changed limits replace
        # the code's (``conductor.pause``, ``set_limits``).
        seen = controls.current(self.model, using)
        queues = controls.served_queues(seen, queues)
        if queues == []:
            return []  # every queue of this worker is paused
        rules = claim_rules(now, seen.limits, seen.paused_tasks)
        skipped = (*rules.skip, *skip) if skip else rules.skip
        limits = {n: c for n, c in rules.limits.items() if n not in skip} if skip \
            else rules.limits
        keyed = {n: r for n, r in rules.keyed.items() if n not in skip} if skip \
            else rules.keyed
        if limits or keyed:
            rows = claim_sql.claim_limited(connection, table, worker_id, queues, limit, now,
                                           skipped, limits, exclude, keyed)
        else:
            rows = claim_sql.claim(connection, table, worker_id, queues, limit, now,
                                   skipped, exclude)
        return self._claimed(rows, connection)

    def claim_batch(
        self, worker_id: uuid.UUID, queues: Sequence[str] | None, name: str, spec: Batch,
        using: str, now: datetime, fill: bool, exclude: Sequence[str] = (),
    ) -> list[Claimed]:
        """Lock one batch of the batch task ``name`` (``store.claims.claim_batch``)."""
        connection = connections[using]
        # nothing while the task, or every queue of the worker, is paused
        seen = controls.current(self.model, using)
        queues = controls.served_queues(seen, queues)
        if queues == [] or name in seen.paused_tasks:
            return []
        rows = claim_sql.claim_batch(connection, self.model._meta.db_table, worker_id, queues,
                                     name, spec.size, spec.timeout_seconds, now, fill, exclude)
        return self._claimed(rows, connection)

    def _claimed(self, rows: list[tuple], connection: Any) -> list[Claimed]:
        payload_field = self.model._meta.get_field("payload")
        claimed = [
            Claimed(
                id=as_id(r[0]),
                task_name=r[1],
                queue=r[2],
                payload=payload_field.from_db_value(r[3], None, connection),
                attempts=r[4],
                max_attempts=r[5],
                priority=r[6],
                fresh=bool(r[7]),
                event_name=r[8],
                schedule_name=r[9],
                parent_id=as_id_or_none(r[10]),
                lease=r[11],
                key=r[12],
            )
            for r in rows
        ]
        claimed.sort(key=lambda c: -c.priority)
        return claimed

    def runnable_exists(self, queues: Sequence[str] | None, using: str) -> bool:
        qs = self.using(using).filter(status__in=RUNNABLE, run_at__lte=timezone.now())
        if queues:
            qs = qs.filter(queue__in=queues)
        return qs.exists()

    # --- the lease ---------------------------------------------------------------------

    def held(self, eid: str, worker_id: uuid.UUID, lease: int, using: str) -> QuerySet:
        """The row of ``eid`` if this worker still holds it under the lease ``lease``."""
        return self.using(using).filter(pk=eid, locked_by=worker_id, lease=lease,
                                        status=S.RUNNING)

    def held_by(self, worker_id: uuid.UUID, using: str) -> list[tuple[str, int]]:
        """``(id, lease)`` of every execution the database says ``worker_id`` runs."""
        rows = self.using(using).filter(locked_by=worker_id, status=S.RUNNING)
        return [(as_id(eid), lease) for eid, lease in rows.values_list("pk", "lease")]

    def holds(self, eid: str, worker_id: uuid.UUID, lease: int, using: str) -> bool:
        """Whether this worker still holds ``eid`` under ``lease`` (it was not recovered)."""
        return self.held(eid, worker_id, lease, using).exists()

    def lock_held(self, eid: str, worker_id: uuid.UUID, lease: int, using: str) -> bool:
        """``holds``, and keep it so until the caller's transaction ends."""
        return writes.lock_held(connections[using], self.model._meta.db_table, eid,
                                worker_id, lease)

    # --- final writes ------------------------------------------------------------------

    def complete(
        self, eid: str, worker_id: uuid.UUID, lease: int, result: Any, using: str, *,
        may_have_parent: bool = True, record: bool = False,
    ) -> int:
        """The handler returned: ``completed`` (``cancelled`` if a cancel was accepted).

        ``record``: write the attempt's row too (``state.attempts``: not on the hot path).
        """
        rows = self.held(eid, worker_id, lease, using)
        if record:
            with write_transaction(using):
                attempts.record(rows, Outcome.COMPLETED, "", using)
                with self._waking_parents(rows, using, may_have_parent):
                    return self.complete_many([(eid, lease, result)], worker_id, using)
        with self._waking_parents(rows, using, may_have_parent):
            return self.complete_many([(eid, lease, result)], worker_id, using)

    def complete_many(self, items: Sequence[tuple[str, int, Any]], worker_id: uuid.UUID,
                      using: str) -> int:
        """``complete`` for many executions in one statement; returns how many were
        written. ``items`` are ``(execution id, lease, JSON result)``."""
        return writes.complete_many(connections[using], self.model._meta.db_table, items,
                                    worker_id, timezone.now())

    def fail(
        self, eid: str, worker_id: uuid.UUID, lease: int, error: str,
        retry_at: datetime | None, using: str, *, may_have_parent: bool = True,
        ended: Outcome | None = None,
    ) -> int:
        """The attempt failed: back to ``pending`` at ``retry_at``, or ``failed`` for good.

        ``ended``: how, for the attempt history (default ``failed`` / ``retrying``)."""
        now = timezone.now()
        final = retry_at is None
        rows = self.held(eid, worker_id, lease, using)
        waking = rows if final else rows.filter(cancelled=True)
        with write_transaction(using), self._waking_parents(waking, using, may_have_parent):
            attempts.record(rows, ended or (Outcome.FAILED if final else Outcome.RETRYING), error,
                            using,
                            now=now)
            return rows.update(
                status=Case(_CANCELLED, default=Value(S.FAILED if final else S.PENDING)),
                last_error=_keep_reason(error),
                finished_at=_finished(Q(cancelled=True), now, now if final else None),
                run_at=retry_at if retry_at is not None else F("run_at"),
                resume=False,
                locked_by=None,
                locked_at=None,
            )

    def finish_cancelled(
        self, eid: str, worker_id: uuid.UUID, lease: int, reason: str, using: str, *,
        may_have_parent: bool = True,
    ) -> int:
        """``Cancelled`` reached the runner: the execution ends ``cancelled``, never retried."""
        rows = self.held(eid, worker_id, lease, using)
        with write_transaction(using), self._waking_parents(rows, using, may_have_parent):
            attempts.record(rows, Outcome.CANCELLED, reason, using)
            return rows.update(
                status=S.CANCELLED,
                last_error=_keep_reason(reason),
                cancelled=True,
                finished_at=timezone.now(),
                locked_by=None,
                locked_at=None,
            )

    def release(
        self, eid: str, worker_id: uuid.UUID, lease: int, run_at: datetime | None,
        using: str, status: str = S.PENDING, *, waiting_for: str | None = None,
        wakeable: bool = False, may_have_parent: bool = True, shutdown: bool = False,
    ) -> int:
        """Give the execution back without ending its attempt (shutdown, window, sleep).

        ``waiting_for``: the child this execution suspends for. If that child finished
        (or woke this execution) while it was still running, it becomes runnable at once
        instead of at ``run_at``, so a wake-up just before the suspend is not lost.
        ``shutdown``: the worker stops mid-attempt; the attempt history records it.
        ``wakeable``: the same for a wake-up alone (a signal sent while it ran).
        """
        now = timezone.now()
        rows = self.held(eid, worker_id, lease, using)
        when: Any = run_at
        if waiting_for is not None or wakeable:
            woken = Q(run_at__gt=F("locked_at"))
            if waiting_for is not None:
                woken |= Q(Exists(self.using(using).filter(pk=waiting_for, status__in=FINAL)))
            when = Case(
                When(woken, then=Value(now)),
                default=Value(run_at),
                output_field=DateTimeField(),
            )
        with write_transaction(using), self._waking_parents(rows.filter(cancelled=True), using,
                                                            may_have_parent):
            if shutdown:
                attempts.record(rows, Outcome.RELEASED, "", using, now=now)
            return rows.update(
                status=Case(_CANCELLED, default=Value(status)),
                finished_at=_finished(Q(cancelled=True), now),
                run_at=when,
                resume=True,
                locked_by=None,
                locked_at=None,
            )

    def release_all(self, worker_id: uuid.UUID, using: str) -> int:
        """Release whatever this worker still holds (its handlers did not stop in time)."""
        now = timezone.now()
        rows = self.using(using).filter(locked_by=worker_id, status=S.RUNNING)
        with self._waking_parents(rows.filter(cancelled=True), using):
            attempts.record(rows, Outcome.RELEASED, "", using, now=now)
            return rows.update(
                status=Case(_CANCELLED, default=Value(S.PENDING)),
                finished_at=_finished(Q(cancelled=True), now),
                run_at=now,
                resume=True,
                locked_by=None,
                locked_at=None,
            )

    def wake_parents(self, children: QuerySet, using: str) -> int:
        """Make the parents of ``children`` (which are finishing now) runnable at once."""
        parent_ids = children.filter(parent__isnull=False).values("parent_id")
        return self.using(using).filter(
            pk__in=parent_ids, status__in=(S.SUSPENDED, S.RUNNING)
        ).update(
            run_at=Case(
                When(status=S.RUNNING, then=F("locked_at") + WOKEN_WHILE_RUNNING),
                default=Value(timezone.now()),
                output_field=DateTimeField(),
            )
        )

    @contextmanager
    def _waking_parents(self, children: QuerySet, using: str,
                        may_have_parent: bool = True) -> Iterator[None]:
        """Run the final write of ``children`` in one transaction with waking their parents."""
        if not may_have_parent:
            yield
            return
        with write_transaction(using):
            self.wake_parents(children, using)
            yield

    # --- recovery of dead workers' executions --------------------------------------------

    def _workers(self, using: str) -> QuerySet:
        """The worker rows (the ``Worker`` model, through the app registry)."""
        model = self.model._meta.apps.get_model(self.model._meta.app_label, "Worker")
        return model._default_manager.using(using)

    def recover(self, dead_after: float, using: str) -> int:
        """Release executions held by dead workers; a recovery counts as an attempt.

        A worker is dead when its heartbeat is older than ``dead_after`` seconds, or when
        a running execution's lock is that old and names no registered worker.
        """
        if not self.using(using).filter(status=S.RUNNING).exists() and not (
                self._workers(using).filter(
                    last_heartbeat__lt=timezone.now() - timedelta(seconds=dead_after)).exists()):
            return 0  # the common case, in two index reads and no transaction
        with write_transaction(using):
            return self._recover(dead_after, using)

    def _recover(self, dead_after: float, using: str) -> int:
        """``recover`` in one transaction. The dead workers' rows are locked first: a
        heartbeat racing this waits, then finds its row gone (``heartbeat`` says so), so
        a worker whose executions are taken here can never believe it still holds them."""
        now = timezone.now()
        limit = now - timedelta(seconds=dead_after)
        workers = self._workers(using)
        # SKIP LOCKED (PostgreSQL): what another transaction holds - a concurrent recovery,
        # or a frozen worker's open transaction - is left for a later round; recovery
        # never waits, so the worker loop that runs it never stalls.
        dead = list(workers.select_for_update(skip_locked=True).filter(last_heartbeat__lt=limit)
                    .values_list("pk", flat=True))
        live = workers.filter(last_heartbeat__gte=limit).values("pk")
        candidates = self.using(using).filter(status=S.RUNNING).filter(
            Q(locked_by__in=dead) | (Q(locked_at__lt=limit) & ~Q(locked_by__in=live))
        )
        picked = list(candidates.select_for_update(skip_locked=True).values_list("pk", flat=True))
        orphans = self.using(using).filter(pk__in=picked, status=S.RUNNING)
        count = self._as_recovered(orphans, dead_after, now, using)
        if dead:
            workers.filter(pk__in=dead).delete()
        return count

    def give_up(self, eid: str, worker_id: uuid.UUID, lease: int, dead_after: float,
                using: str) -> int:
        """A worker that was presumed dead stopped a handler whose execution nobody
        recovered (its row was locked then): it hands the execution back as a recovery
        would (an attempt used up), if it still holds it under ``lease``."""
        rows = self.held(eid, worker_id, lease, using)
        return self._as_recovered(rows, dead_after, timezone.now(), using)

    def _as_recovered(self, orphans: QuerySet, dead_after: float, now: datetime,
                      using: str) -> int:
        """End ``orphans``' attempts as lost: back to pending, or failed when out of
        attempts, or cancelled when a cancel was accepted."""
        lost = Concat(
            Value(f"Worker lost (no heartbeat for {dead_after:g} s) during attempt "),
            Cast("attempts", CharField()),
            Value(" of "),
            Cast("max_attempts", CharField()),
            output_field=TextField(),
        )
        out_of_attempts = Q(attempts__gte=F("max_attempts"))
        with self._waking_parents(orphans.filter(Q(cancelled=True) | out_of_attempts), using):
            attempts.record(orphans, Outcome.RECOVERED,
                            f"Worker lost (no heartbeat for {dead_after:g} s)", using, now=now)
            return orphans.update(
                status=Case(
                    _CANCELLED, When(out_of_attempts, then=Value(S.FAILED)),
                    default=Value(S.PENDING),
                ),
                last_error=_keep_reason(lost),
                finished_at=_finished(Q(cancelled=True) | out_of_attempts, now),
                run_at=now,
                resume=False,
                locked_by=None,
                locked_at=None,
            )

    # --- cancel requests of running executions (delivered by runtime.cancellation) -----

    def cancel_requested(self, execution_id: str, using: str) -> str | None:
        """The cancel reason if cancellation of this running execution was requested."""
        row = (self.using(using).filter(pk=execution_id, cancelled=True)
               .values_list("last_error", flat=True).first())
        return None if row is None else (row or DEFAULT_REASON)

    def cancel_requests(self, worker_id: uuid.UUID, using: str) -> list[tuple[str, str]]:
        """``(id, reason)`` of the running executions of ``worker_id`` to cancel."""
        requested = self.using(using).filter(status=S.RUNNING, locked_by=worker_id,
                                             cancelled=True)
        return [(str(eid), reason) for eid, reason in requested.values_list("pk", "last_error")]
