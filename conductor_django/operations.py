"""The operator's run-time controls: pause and resume a queue or a task, change a
task's limits live (``conductor.pause``, ``resume``, ``paused``, ``set_limits``).

Each is a row of ``models.Control`` (one per queue or task), so it survives restarts
and reaches every worker: a worker reads the rows every few seconds
(``state.controls``) and its claims leave paused queues and tasks out and use the
changed limits. Nothing here stops a running handler, except ``pause(...,
cancel_running=True)``, which cancels them through the ordinary cancel (reason
``"Paused by operator"``). ``invoke`` is never refused: executions of a paused queue
or task wait as ``pending`` and start after the resume.

A queue is *known* if a registered task uses it, a live worker serves it by name, or
an execution was ever stored on it; a task is known if it is registered in this
process or an execution of it was ever stored. Pausing anything else raises
``ValueError`` (a typo would otherwise pause nothing, silently).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, router
from django.utils import timezone

from . import conf
from .definitions.controls import (
    Effective,
    Limits,
    check_limits,
    check_schedules,
    effective,
    rate_text,
)
from .definitions.registry import all_tasks, get_task, not_found_message
from .definitions.tasks import Task
from .definitions.values import NAME_LENGTH, QUEUE_LENGTH, check_text
from .models import Control, Execution, Worker
from .state import controls
from .store.transactions import retry_locked, write_transaction

#: The reason of the executions ``pause(..., cancel_running=True)`` cancels.
PAUSE_REASON = "Paused by operator"

#: ``set_limits``' default for an argument not given: leave that limit as it is.
KEEP: Any = type("Keep", (), {"__repr__": lambda self: "KEEP"})()


@dataclass(frozen=True, slots=True)
class Paused:
    """One entry of ``paused()``: a paused queue or task and since when."""

    scope: str  # "queue" or "task"
    name: str
    since: datetime
    by: str
    schedules: str  # "queue" or "skip"
    skipped_fire_times: int


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """A task's limits: its code's, the operator's overrides and what workers use."""

    task: str
    code: Effective
    override: Limits
    effective: Effective
    changed_at: datetime | None
    changed_by: str


def _db(using: str | None) -> str:
    return using or router.db_for_write(Control)


def _target(queue: Any, task: Any) -> tuple[str, str]:
    if (queue is None) == (task is None):
        raise TypeError("Give exactly one of queue=... or task=...")
    if queue is not None:
        return "queue", check_text(queue, "queue", QUEUE_LENGTH)
    name = task.name if isinstance(task, Task) else check_text(task, "task", NAME_LENGTH)
    return "task", name


def _check_known(scope: str, name: str, db: str) -> None:
    if scope == "task":
        if name not in all_tasks() and not Execution.objects.using(db).filter(
                task_name=name).exists():
            raise ValueError(not_found_message(name) + " and no execution of it is stored")
        return
    if any(t.get_queue() == name for t in all_tasks().values()):
        return
    if Execution.objects.using(db).filter(queue=name).exists():
        return
    alive = timezone.now() - timedelta(seconds=float(conf.get("WORKER_DEAD_AFTER")))
    served = Worker.objects.using(db).filter(last_heartbeat__gte=alive)
    if any(name in (queues or []) for queues in served.values_list("queues", flat=True)):
        return
    raise ValueError(f"No queue named {name!r} is known: no registered task uses it, no "
                     "live worker serves it and no execution was ever stored on it")


def _row(scope: str, name: str, db: str) -> Control:
    """The locked row of ``scope``/``name``, created if missing (caller's transaction)."""
    row = Control.objects.using(db).select_for_update().filter(scope=scope, name=name).first()
    if row is not None:
        return row
    try:
        with write_transaction(db):  # a savepoint: a concurrent insert loses only this
            return Control.objects.using(db).create(scope=scope, name=name)
    except IntegrityError:
        return Control.objects.using(db).select_for_update().get(scope=scope, name=name)


def pause(queue: str | None = None, task: str | Task | None = None, *,
          cancel_running: bool = False, schedules: str = "queue", by: str = "",
          using: str | None = None) -> bool:
    """Pause a queue or a task: no worker starts an execution of it until ``resume``.

    ``schedules``: what happens to the fire times of its schedules that come due while
    paused: ``"queue"`` (they wait, and run after the resume - missed fire times run
    once, as always) or ``"skip"`` (each is cancelled with a reason saying so, and
    counted). ``cancel_running``: also cancel the executions running now. ``True`` if
    it was not paused before (pausing again keeps the first moment; its ``schedules``
    is updated).
    """
    scope, name = _target(queue, task)
    schedules = check_schedules(schedules)
    check_text(by, "by", 150, allow_empty=True)
    if not isinstance(cancel_running, bool):
        raise TypeError(f"cancel_running must be a bool, got {cancel_running!r}")
    db = _db(using)
    _check_known(scope, name, db)

    def write() -> bool:
        with write_transaction(db):
            row = _row(scope, name, db)
            changed = row.paused_at is None
            if changed:
                row.paused_at, row.paused_by, row.skipped_fire_times = timezone.now(), by, 0
            row.schedules = schedules
            row.save(using=db)
            return changed

    changed = retry_locked(write, db)
    controls.forget(db)
    if cancel_running:
        running = Execution.objects.using(db).filter(status=Execution.Status.RUNNING,
                                                     **{_column(scope): name})
        running.cancel_all(reason=PAUSE_REASON, using=db)
    return changed


def _column(scope: str) -> str:
    return "queue" if scope == "queue" else "task_name"


def resume(queue: str | None = None, task: str | Task | None = None, *,
           using: str | None = None) -> bool:
    """Resume a paused queue or task; ``True`` if it was paused."""
    scope, name = _target(queue, task)
    db = _db(using)

    def write() -> bool:
        with write_transaction(db):
            row = (Control.objects.using(db).select_for_update()
                   .filter(scope=scope, name=name, paused_at__isnull=False).first())
            if row is None:
                return False
            row.paused_at, row.paused_by = None, ""
            row.save(using=db)
            return True

    changed = retry_locked(write, db)
    controls.forget(db)
    return changed


def paused(using: str | None = None) -> list[Paused]:
    """What is paused now and since when, oldest first."""
    rows = Control.objects.using(_db(using)).filter(paused_at__isnull=False).order_by(
        "paused_at", "scope", "name")
    return [Paused(r.scope, r.name, r.paused_at, r.paused_by, r.schedules,
                   r.skipped_fire_times) for r in rows if r.paused_at is not None]


def set_limits(task: str | Task, *, concurrency: Any = KEEP, key_concurrency: Any = KEEP,
               rate_limit: Any = KEEP, by: str = "", using: str | None = None) -> Effective:
    """Override a task's ``concurrency``, ``key_concurrency`` or ``rate_limit`` on every
    worker (within ``max(POLL_INTERVAL, 5 s)``); ``None`` gives a limit back to the
    code's value, an argument not given is left as it is. ``rate_limit`` is a
    ``RateLimit`` or a text such as ``"10/m"``, ``"100/30s"``, ``"5/minute per key"``.
    Returns the limits workers use from now. Bad values raise before anything is
    written."""
    t = get_task(task)
    check_text(by, "by", 150, allow_empty=True)
    db = _db(using)
    current = limits(t, using=db).override
    wanted = {
        "concurrency": current.concurrency if concurrency is KEEP else concurrency,
        "key_concurrency": current.key_concurrency if key_concurrency is KEEP
        else key_concurrency,
        "rate_limit": current.rate_limit if rate_limit is KEEP else rate_limit,
    }
    new = check_limits(t, **wanted)

    def write() -> None:
        with write_transaction(db):
            row = _row("task", t.name, db)
            row.concurrency, row.key_concurrency = new.concurrency, new.key_concurrency
            row.rate_limit = rate_text(new.rate_limit)
            row.limits_changed_at, row.limits_changed_by = timezone.now(), by
            row.save(using=db)

    retry_locked(write, db)
    controls.forget(db)
    return effective(t, new)


def limits(task: str | Task, *, using: str | None = None) -> TaskLimits:
    """A task's limits: the code's, the operator's overrides, what workers use."""
    t = get_task(task)
    return _limits(t, Control.objects.using(_db(using)).filter(scope="task", name=t.name).first())


def all_limits(using: str | None = None) -> list[TaskLimits]:
    """``limits`` of every registered task, by name, in one query."""
    rows = {row.name: row for row in Control.objects.using(_db(using)).filter(scope="task")}
    return [_limits(t, rows.get(name)) for name, t in sorted(all_tasks().items())]


def _limits(t: Task, row: Control | None) -> TaskLimits:
    override = Limits()
    if row is not None:
        try:
            override = check_limits(t, row.concurrency, row.key_concurrency,
                                    row.rate_limit or None)
        except (TypeError, ValueError):
            pass  # written by hand, or the task became a batch task: workers ignore it too
    return TaskLimits(
        task=t.name, code=effective(t, None), override=override,
        effective=effective(t, override),
        changed_at=row.limits_changed_at if row is not None else None,
        changed_by=row.limits_changed_by if row is not None else "",
    )
