"""The claim/lock queries and every write the worker makes to an execution it holds.

Claiming is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` statement:
on PostgreSQL the inner select takes ``FOR UPDATE SKIP LOCKED`` so concurrent workers
on any number of machines never claim the same row and never wait for each other; on
SQLite a single statement holds the database write lock, which makes it safe for
several worker processes on one machine.

Every write after the claim is fenced by ``locked_by = <this worker>`` and
``status = 'running'``: a worker whose executions were recovered after it was
declared dead cannot overwrite what another worker did since. A row whose
cancellation was requested (``cancelled``) always ends ``cancelled``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.models import Case, CharField, DateTimeField, F, Q, TextField, Value, When
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from .models import Execution, Step, Worker

S = Execution.Status
TABLE = Execution._meta.db_table


@dataclass(slots=True)
class Claimed:
    """What the runner needs of a claimed execution."""

    id: str
    task_name: str
    queue: str
    payload: Any
    attempts: int
    max_attempts: int
    priority: int
    fresh: bool  # first start ever: no step can exist yet
    event_name: str
    schedule_name: str | None
    parent_id: str | None


def _uuid_param(connection, value: uuid.UUID | str) -> Any:
    field = Execution._meta.pk
    return field.get_db_prep_value(uuid.UUID(str(value)), connection)


def _uuid_out(value: Any) -> str | None:
    if value is None:
        return None
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def claim(
    worker_id: uuid.UUID, queues: Sequence[str] | None, limit: int, using: str
) -> list[Claimed]:
    """Lock up to ``limit`` runnable executions for ``worker_id``, best first."""
    connection = connections[using]
    now = timezone.now()
    dt = Execution._meta.get_field("run_at")
    now_param = dt.get_db_prep_value(now, connection)
    pg = connection.vendor == "postgresql"
    params: list[Any] = [now_param]
    queue_sql = ""
    if queues:
        queue_sql = f" AND queue IN ({', '.join(['%s'] * len(queues))})"
        params.extend(queues)
    params.append(limit)
    inner = (
        f"SELECT id FROM {TABLE} WHERE status IN ('pending', 'suspended')"
        f" AND run_at <= %s{queue_sql} ORDER BY priority DESC, run_at ASC LIMIT %s"
        + (" FOR UPDATE SKIP LOCKED" if pg else "")
    )
    sql = (
        f"UPDATE {TABLE} SET status = 'running', locked_by = %s, locked_at = %s,"
        " started_at = COALESCE(started_at, %s),"
        " attempts = CASE WHEN resume THEN attempts ELSE attempts + 1 END,"
        " resume = %s"
        f" WHERE id IN ({inner}) AND status IN ('pending', 'suspended')"
        " RETURNING id, task_name, queue, payload, attempts, max_attempts, priority,"
        " CASE WHEN started_at = locked_at THEN 1 ELSE 0 END, event_name, schedule_name,"
        " parent_id"
    )
    head = [_uuid_param(connection, worker_id), now_param, now_param, False]
    with connection.cursor() as cursor:
        cursor.execute(sql, head + params)
        rows = cursor.fetchall()
    payload_field = Execution._meta.get_field("payload")
    claimed = [
        Claimed(
            id=_uuid_out(r[0]),
            task_name=r[1],
            queue=r[2],
            payload=payload_field.from_db_value(r[3], None, connection),
            attempts=r[4],
            max_attempts=r[5],
            priority=r[6],
            fresh=bool(r[7]),
            event_name=r[8],
            schedule_name=r[9],
            parent_id=_uuid_out(r[10]),
        )
        for r in rows
    ]
    claimed.sort(key=lambda c: -c.priority)
    return claimed


def _held(eid: str, worker_id: uuid.UUID, using: str):
    return Execution.objects.using(using).filter(
        pk=eid, locked_by=worker_id, status=S.RUNNING
    )


_CANCELLED = When(cancelled=True, then=Value(S.CANCELLED))


def _keep_reason(error: Any) -> Case:
    """``last_error``: the cancel reason stays on a cancelled row, else ``error``."""
    error = error if hasattr(error, "resolve_expression") else Value(error)
    return Case(When(cancelled=True, then=F("last_error")), default=error, output_field=TextField())


def _finished(when: Q, now: datetime, otherwise: datetime | None = None) -> Case:
    return Case(When(when, then=Value(now)), default=Value(otherwise), output_field=DateTimeField())


def complete(eid: str, worker_id: uuid.UUID, result: Any, using: str) -> int:
    """The handler returned: ``completed`` (``cancelled`` if a cancel was accepted)."""
    return _held(eid, worker_id, using).update(
        status=Case(_CANCELLED, default=Value(S.COMPLETED)),
        result=result,
        finished_at=timezone.now(),
        locked_by=None,
        locked_at=None,
    )


def fail(
    eid: str, worker_id: uuid.UUID, error: str, retry_at: datetime | None, using: str
) -> int:
    """The attempt failed: back to ``pending`` at ``retry_at``, or ``failed`` for good."""
    now = timezone.now()
    final = retry_at is None
    return _held(eid, worker_id, using).update(
        status=Case(_CANCELLED, default=Value(S.FAILED if final else S.PENDING)),
        last_error=_keep_reason(error),
        finished_at=_finished(Q(cancelled=True), now, now if final else None),
        run_at=retry_at if retry_at is not None else F("run_at"),
        resume=False,
        locked_by=None,
        locked_at=None,
    )


def finish_cancelled(eid: str, worker_id: uuid.UUID, reason: str, using: str) -> int:
    """``Cancelled`` reached the runner: the execution ends ``cancelled``, never retried."""
    return _held(eid, worker_id, using).update(
        status=S.CANCELLED,
        last_error=_keep_reason(reason),
        cancelled=True,
        finished_at=timezone.now(),
        locked_by=None,
        locked_at=None,
    )


def release(
    eid: str, worker_id: uuid.UUID, run_at: datetime | None, using: str, status: str = S.PENDING
) -> int:
    """Give the execution back without ending its attempt (shutdown, window, sleep)."""
    now = timezone.now()
    return _held(eid, worker_id, using).update(
        status=Case(_CANCELLED, default=Value(status)),
        finished_at=_finished(Q(cancelled=True), now),
        run_at=run_at,
        resume=True,
        locked_by=None,
        locked_at=None,
    )


def release_all(worker_id: uuid.UUID, using: str) -> int:
    """Release whatever this worker still holds (its handlers did not stop in time)."""
    now = timezone.now()
    return Execution.objects.using(using).filter(locked_by=worker_id, status=S.RUNNING).update(
        status=Case(_CANCELLED, default=Value(S.PENDING)),
        finished_at=_finished(Q(cancelled=True), now),
        run_at=now,
        resume=True,
        locked_by=None,
        locked_at=None,
    )


def load_steps(eid: str, using: str) -> dict[str, Any]:
    rows = Step.objects.using(using).filter(execution_id=eid).values_list("name", "result")
    return dict(rows)


def save_step(eid: str, name: str, result: Any, started_at: datetime, using: str) -> Any:
    """Store a step's result; if the name was stored meanwhile, return the stored one."""
    _, created = Step.objects.using(using).get_or_create(
        execution_id=eid, name=name, defaults={"result": result, "started_at": started_at}
    )
    if created:
        return result
    return Step.objects.using(using).get(execution_id=eid, name=name).result


# --- workers -------------------------------------------------------------------------


def register_worker(worker: Worker, using: str) -> None:
    worker.save(using=using, force_insert=True)


def heartbeat(worker: Worker, using: str) -> None:
    """Refresh the heartbeat; re-create the row if it was removed as dead meanwhile."""
    now = timezone.now()
    if not Worker.objects.using(using).filter(pk=worker.pk).update(last_heartbeat=now):
        worker.last_heartbeat = now
        worker.save(using=using, force_insert=True)


def unregister_worker(worker_id: uuid.UUID, using: str) -> None:
    Worker.objects.using(using).filter(pk=worker_id).delete()


def recover(dead_after: float, using: str) -> int:
    """Release executions held by dead workers; a recovery counts as an attempt.

    A worker is dead when its heartbeat is older than ``dead_after`` seconds, or when a
    running execution's lock is that old and names no registered worker.
    """
    now = timezone.now()
    limit = now - timedelta(seconds=dead_after)
    dead = list(
        Worker.objects.using(using).filter(last_heartbeat__lt=limit).values_list("pk", flat=True)
    )
    live = Worker.objects.using(using).filter(last_heartbeat__gte=limit).values("pk")
    orphans = Execution.objects.using(using).filter(status=S.RUNNING).filter(
        Q(locked_by__in=dead) | (Q(locked_at__lt=limit) & ~Q(locked_by__in=live))
    )
    lost = Concat(
        Value(f"Worker lost (no heartbeat for {dead_after:g} s) during attempt "),
        Cast("attempts", CharField()),
        Value(" of "),
        Cast("max_attempts", CharField()),
        output_field=TextField(),
    )
    out_of_attempts = Q(attempts__gte=F("max_attempts"))
    count = orphans.update(
        status=Case(
            _CANCELLED, When(out_of_attempts, then=Value(S.FAILED)), default=Value(S.PENDING)
        ),
        last_error=_keep_reason(lost),
        finished_at=_finished(Q(cancelled=True) | out_of_attempts, now),
        run_at=now,
        resume=False,
        locked_by=None,
        locked_at=None,
    )
    if dead:
        Worker.objects.using(using).filter(pk__in=dead).delete()
    return count


def runnable_exists(queues: Sequence[str] | None, using: str) -> bool:
    qs = Execution.objects.using(using).filter(
        status__in=Execution.RUNNABLE, run_at__lte=timezone.now()
    )
    if queues:
        qs = qs.filter(queue__in=queues)
    return qs.exists()


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


# --- django_q engine: a dispatcher holds executions while their ids are in the broker ---
# (conductor_django.engines.django_q). The dispatcher claims with ``claim`` above, so
# priorities, queues and every other claim rule hold; a qcluster process then takes
# the row over with ``handover``, fenced on the holder being a dispatcher.


def handover(eid: str, worker_id: uuid.UUID, using: str) -> tuple[Claimed, str | None] | None:
    """Take over ``eid`` from the dispatcher that holds it; None if no dispatcher does.

    Returns the claimed execution and, if its cancellation was requested meanwhile,
    the reason. A duplicate or stale broker message finds the row held by a runner (or
    no longer running) and changes nothing.
    """
    if _uuid_out_or_none(eid) is None:
        return None
    dispatchers = Worker.objects.using(using).filter(role=Worker.Role.DISPATCHER).values("pk")
    moved = Execution.objects.using(using).filter(
        pk=eid, status=S.RUNNING, locked_by__in=dispatchers
    ).update(locked_by=worker_id, locked_at=timezone.now())
    if not moved:
        return None
    row = _held(eid, worker_id, using).values(
        "task_name", "queue", "payload", "attempts", "max_attempts", "priority", "event_name",
        "schedule_name", "parent_id", "cancelled", "last_error",
    ).first()
    if row is None:
        return None
    claimed = Claimed(
        id=str(uuid.UUID(str(eid))),
        task_name=row["task_name"],
        queue=row["queue"],
        payload=row["payload"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        fresh=False,
        event_name=row["event_name"],
        schedule_name=row["schedule_name"],
        parent_id=_uuid_out(row["parent_id"]),
    )
    return claimed, (row["last_error"] or "Cancelled by user") if row["cancelled"] else None


def _uuid_out_or_none(value: Any) -> str | None:
    try:
        return _uuid_out(value)
    except (ValueError, TypeError, AttributeError):
        return None


def held_count(worker_id: uuid.UUID, using: str) -> int:
    """How many executions this dispatcher holds (sent, not yet taken over)."""
    return Execution.objects.using(using).filter(status=S.RUNNING, locked_by=worker_id).count()


def finish_cancelled_held(worker_id: uuid.UUID, using: str) -> int:
    """Held executions whose cancellation was requested end ``cancelled`` without running."""
    return Execution.objects.using(using).filter(
        status=S.RUNNING, locked_by=worker_id, cancelled=True
    ).update(status=S.CANCELLED, finished_at=timezone.now(), locked_by=None, locked_at=None)


def stale_held(worker_id: uuid.UUID, older_than: datetime, limit: int, using: str) -> list[str]:
    """Held executions sent before ``older_than`` and not taken over: to be sent again.

    Their ``locked_at`` (the time they were sent) is moved to now.
    """
    rows = Execution.objects.using(using).filter(
        status=S.RUNNING, locked_by=worker_id, locked_at__lt=older_than
    )
    ids = list(rows.order_by("-priority", "locked_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return []
    Execution.objects.using(using).filter(
        pk__in=ids, status=S.RUNNING, locked_by=worker_id
    ).update(locked_at=timezone.now())
    return [str(i) for i in ids]
