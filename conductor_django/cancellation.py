"""The whole cancellation path, in one place.

1. **Request** (``cancel``): a pending or suspended execution is marked ``failed`` at
   once with the reason as ``last_error`` (``cancelled`` stays False) and never runs;
   its waiting children are cancelled too. A running execution gets ``cancelled=True``
   and the reason in ``last_error`` in the same statement, and on PostgreSQL a
   ``NOTIFY conductor_cancel`` carrying the id and the reason, so that its worker hears
   of it at once and the handler's ``Cancelled`` says exactly why.
2. **Delivery** (``poll_cancellations`` and ``notify.Listener``): the worker sets
   ``ctx.signal`` of the running handler, from the NOTIFY on PostgreSQL or from a poll
   every ``CANCEL_POLL_INTERVAL`` seconds elsewhere (and while shutting down).
3. **Stop** (``Context._boundary``): the next ``ctx.step`` or ``ctx.checkpoint`` raises
   ``Cancelled`` before running anything.
4. **Final write** (``queries.finish_cancelled`` and the ``CASE`` in every other final
   write of ``queries``): a row with ``cancelled=True`` always ends ``cancelled`` with
   its reason kept, whatever the handler did afterwards, and is never retried.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.db import connections, router, transaction
from django.utils import timezone

from . import queries
from .definitions.values import as_uuid
from .exceptions import DEFAULT_REASON
from .models import Execution
from .transactions import retry_locked, write_transaction

if TYPE_CHECKING:
    from .context import Context

CANCEL_CHANNEL = "conductor_cancel"


def cancel(execution_id: Any, reason: str | None = None, *, using: str | None = None) -> bool:
    """Request cancellation; ``True`` if it took effect, ``False`` if already finished."""
    eid = as_uuid(execution_id)
    if eid is None:
        return False
    reason = reason or DEFAULT_REASON
    db = using or router.db_for_write(Execution)
    rows = Execution.objects.using(db).filter(pk=eid)
    # A status may change between the two updates (pending -> running -> pending on a
    # retry); a few rounds settle it, each update being atomic on its own.
    for _ in range(5):
        # Running (the case that must be fast): flag it and tell its worker.
        if retry_locked(lambda: _request_running(db, eid, reason), db):
            return True
        if retry_locked(lambda: _stop_waiting(db, eid, reason), db):
            return True
        status = rows.values_list("status", flat=True).first()
        if status is None or status in Execution.FINAL:
            return False  # unknown or finished
        if status == Execution.Status.RUNNING:  # False: a cancel was accepted already
            return retry_locked(lambda: _request_running(db, eid, reason), db)
    return False


def _stop_waiting(db: str, eid: uuid.UUID, reason: str) -> bool:
    """A pending or suspended execution ends ``failed`` with ``reason``, never runs."""
    with write_transaction(db):
        waiting = Execution.objects.using(db).filter(pk=eid, status__in=Execution.RUNNABLE)
        woken = queries.wake_parents(waiting, db)  # parent first: see queries
        stopped = waiting.update(
            status=Execution.Status.FAILED,
            last_error=reason,
            finished_at=timezone.now(),
            resume=False,
        )
        if stopped:
            _cancel_children(eid, reason, db)
            return True
        if woken:
            transaction.set_rollback(True, using=db)  # it started meanwhile: no wake
    return False


#: Longest reason (in bytes) sent in the NOTIFY payload itself (PostgreSQL's limit for
#: a payload is 8000 bytes); a longer one is read from the row by the listener.
NOTIFY_REASON_BYTES = 7000


def _request_running(db: str, eid: uuid.UUID, reason: str) -> bool:
    """Set ``cancelled`` and the reason on a running execution and notify its worker
    (on PostgreSQL one statement does both: the NOTIFY goes out with the commit).

    The payload is the execution id, a newline and the reason (just the id when the
    reason is too long to send), so the handler's ``Cancelled`` carries the exact
    reason on every path.
    """
    connection = connections[db]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH r AS (UPDATE {Execution._meta.db_table} SET cancelled = true,"
                " last_error = %s WHERE id = %s AND status = 'running' AND NOT cancelled"
                " RETURNING id, last_error) SELECT pg_notify(%s, id::text || CASE WHEN"
                " octet_length(last_error) <= %s THEN E'\\n' || last_error ELSE '' END)"
                " FROM r",
                [reason, eid, CANCEL_CHANNEL, NOTIFY_REASON_BYTES],
            )
            return cursor.fetchone() is not None
    return bool(Execution.objects.using(db).filter(
        pk=eid, status=Execution.Status.RUNNING, cancelled=False
    ).update(cancelled=True, last_error=reason))


def _cancel_children(parent_id: uuid.UUID, reason: str, db: str) -> None:
    children = Execution.objects.using(db).filter(
        parent_id=parent_id, status__in=Execution.UNFINISHED
    )
    for child_id in children.values_list("pk", flat=True):
        cancel(child_id, reason, using=db)


def deliver(inflight: dict[str, Context], execution_id: str, reason: str | None = None) -> None:
    """Abort the running handler of ``execution_id`` if this worker holds it."""
    ctx = inflight.get(execution_id)
    if ctx is not None:
        ctx.signal.abort("cancelled", reason or DEFAULT_REASON)


def poll_cancellations(worker_id: uuid.UUID, inflight: dict[str, Context], using: str) -> None:
    """Deliver every cancel request for executions this worker is running."""
    if not inflight:
        return
    requested = Execution.objects.using(using).filter(
        status=Execution.Status.RUNNING, locked_by=worker_id, cancelled=True
    )
    for eid, reason in requested.values_list("pk", "last_error"):
        deliver(inflight, str(eid), reason)


def cancel_requested(execution_id: str, using: str) -> str | None:
    """The cancel reason if cancellation of this running execution was requested."""
    row = (
        Execution.objects.using(using)
        .filter(pk=execution_id, cancelled=True)
        .values_list("last_error", flat=True)
        .first()
    )
    return None if row is None else (row or DEFAULT_REASON)
