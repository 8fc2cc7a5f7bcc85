"""Cron schedules in the database: static ones from code, dynamic ones from ``schedule()``.

A schedule's next run is an ordinary pending execution with ``schedule_name`` and
``scheduled_for`` (its fire time) set, created ahead of time; workers claim it when its
``run_at`` comes. The rules:

* **One execution per fire time.** ``(task_name, schedule_name, scheduled_for)`` is
  unique in the database, so however many workers queue the same fire time at once,
  one insert wins and the others do nothing.
* **No overlap.** The next run is queued only when the schedule has no unfinished run
  (the check and the insert happen under a lock of the schedule's row), after each
  run, success or failure (``queue_next``, called by the worker right after a
  scheduled execution finishes and from its periodic ``tick``).
* **Missed runs run once.** A run is due at the first fire time after the previous
  run's fire time *and* start; fire times that passed while nothing ran (no worker up,
  or the previous run still going) are coalesced into one run, right away.
* **Paused** (``conductor.pause``): a queued run of a paused task or queue waits (its
  fire time runs after the resume), or with ``schedules="skip"`` is cancelled once its
  fire time has come, with a reason saying so (``skip_paused``).
* **Enabling, creating or replacing** a schedule starts from now: what was missed
  while it was disabled or did not exist does not run.

Static schedules are written by ``sync_static`` when a worker starts; a static
schedule whose ``Cron`` left the code is removed then. ``testing.drain`` does not
schedule anything.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, router
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone

from .definitions.cron import check_schedule as check_schedule_definition
from .definitions.cron import next_fire, second_field_trap, zone
from .definitions.registry import Task, all_tasks, get_task, not_found_message
from .definitions.values import NAME_LENGTH, check_text
from .exceptions import TaskNotFound
from .models import Control, Execution, Schedule
from .state import controls
from .state.birth import birth
from .store.transactions import retry_locked, write_transaction

logger = logging.getLogger("conductor_django.scheduler")

S = Execution.Status
_warned: set[tuple[str, str, str]] = set()


def _db(using: str | None) -> str:
    return using or router.db_for_write(Schedule)


def runs(schedule: Schedule, using: str) -> Any:
    """The executions a schedule queued (every one has its fire time set)."""
    return Execution.objects.using(using).filter(
        task_name=schedule.task_name, schedule_name=schedule.name, scheduled_for__isnull=False
    )


def _queued(schedule: Schedule, using: str) -> Any:
    """The queued next run: pending and never started (a retry waiting is a run going on)."""
    return runs(schedule, using).filter(status=S.PENDING, started_at__isnull=True)


def _locked(task_name: str, name: str, using: str) -> Schedule | None:
    return (
        Schedule.objects.using(using).select_for_update()
        .filter(task_name=task_name, name=name).first()
    )


def _floor(schedule: Schedule, using: str) -> tuple[datetime | None, datetime | None]:
    """The latest fire time and the latest start among the schedule's finished runs."""
    done = runs(schedule, using).filter(status__in=Execution.FINAL)
    agg = done.aggregate(fire=Max("scheduled_for"), start=Max("started_at"))
    return agg["fire"], agg["start"]


def _insert(schedule: Schedule, task: Task, fire: datetime, run_at: datetime,
            using: str) -> Execution | None:
    """Write the run of ``fire``; ``None`` if that fire time already has one."""
    row = birth(task, schedule.payload, run_at=run_at, schedule_name=schedule.name,
                scheduled_for=fire, event_name=schedule.name).row(Execution)
    try:
        with write_transaction(using):
            row.save(using=using, force_insert=True)
    except IntegrityError:
        return None
    return row


def _queue(schedule: Schedule, after: datetime, using: str) -> Execution | None:
    """Queue the first fire time after ``after`` (the caller holds the row lock)."""
    task = get_task(schedule.task_name)
    fire = next_fire(schedule.cron, zone(schedule.timezone), after)
    row = _insert(schedule, task, fire, fire, using)
    if row is not None:
        schedule.next_run_at = fire
        schedule.save(using=using, update_fields=["next_run_at"])
    return row


# --- the worker's side -------------------------------------------------------------------


def queue_next(task_name: str, name: str, using: str | None = None) -> Execution | None:
    """Queue the next run of a schedule unless one is queued or still going.

    The next fire time follows the last run's fire time and start, so fire times missed
    meanwhile run once, right away. Returns the new execution, or ``None``.
    """
    db = _db(using)
    with write_transaction(db):
        schedule = _locked(task_name, name, db)
        if schedule is None or not schedule.enabled:
            return None
        if runs(schedule, db).filter(status__in=Execution.UNFINISHED).exists():
            return None
        fire, start = _floor(schedule, db)
        now = timezone.now()
        after = max(d for d in (fire, start) if d is not None) if fire or start else now
        row = _queue(schedule, after, db)
        if start is not None and schedule.last_run_at != start:
            schedule.last_run_at = start
            schedule.save(using=db, update_fields=["last_run_at"])
        return row


def tick(using: str | None = None) -> int:
    """Queue the next run of every enabled schedule that has none; returns how many.

    One query when there is nothing to do; the worker calls this between claims. A
    schedule whose queued run was cancelled or deleted gets its next one once that
    run's fire time has passed (cancelling a queued run skips that fire time).
    """
    db = _db(using)
    skip_paused(db)
    going = Execution.objects.using(db).filter(
        task_name=OuterRef("task_name"),
        schedule_name=OuterRef("name"),
        scheduled_for__isnull=False,
        status__in=Execution.UNFINISHED,
    )
    # A schedule whose next fire time is ahead has its run queued already; the others
    # (fire time reached: a run is going on or just ended) are checked.
    due = (
        Schedule.objects.using(db)
        .filter(Q(next_run_at__isnull=True) | Q(next_run_at__lte=timezone.now()),
                enabled=True, task_name__in=list(all_tasks()))
        .exclude(Exists(going))
        .values_list("task_name", "name", "cron")
    )
    queued = 0
    for task_name, name, cron in due:
        try:
            queued += queue_next(task_name, name, db) is not None
        except ValueError as exc:  # a cron written to the table by hand that never fires
            if (task_name, name, cron) not in _warned:
                _warned.add((task_name, name, cron))
                logger.error("schedule %s/%s cannot be queued: %s", task_name, name, exc)
    return queued


def skip_paused(using: str) -> int:
    """Skip the fire times that came due while their task or queue is paused with
    ``schedules="skip"`` (``conductor.pause``): each queued run is cancelled with a
    reason that says so and counted on the pause; ``tick`` then queues the next fire
    time. Returns how many were skipped (no statement while nothing is paused so)."""
    skipping = [p for p in controls.current(Execution, using).pauses if p.schedules == "skip"]
    skipped = 0
    for pause in skipping:
        column = "queue" if pause.scope == "queue" else "task_name"
        due = Execution.objects.using(using).filter(
            status=S.PENDING, started_at__isnull=True, scheduled_for__isnull=False,
            scheduled_for__gte=pause.since, run_at__lte=timezone.now(), **{column: pause.name})
        reason = f"Fire time skipped: {pause.scope} {pause.name} is paused"
        count = sum(Execution.objects.cancel(pk, reason, using=using)
                    for pk in due.values_list("pk", flat=True))
        if count:
            Control.objects.using(using).filter(
                scope=pause.scope, name=pause.name, paused_at=pause.since
            ).update(skipped_fire_times=F("skipped_fire_times") + count)
            logger.info("%d fire time(s) of %s %s skipped while paused", count, pause.scope,
                        pause.name)
        skipped += count
    return skipped


def sync_static(using: str | None = None, tasks: Iterable[Task] | None = None) -> None:
    """Write the ``cron=`` schedules of ``tasks`` (default: every registered task).

    New ones are created and queued, changed ones updated (their queued run moves),
    and static schedules no longer in the code are removed. ``enabled`` is left as the
    admin set it.
    """
    db = _db(using)
    tasks = list(all_tasks().values() if tasks is None else tasks)
    wanted = {(t.name, c.schedule_name): c for t in tasks for c in t.cron}
    for (task_name, name), cron in wanted.items():
        fields = {"cron": cron.expr, "payload": cron.payload, "timezone": cron.timezone or "",
                  "static": True}
        with write_transaction(db):
            schedule = _locked(task_name, name, db)
            if schedule is None:
                schedule = Schedule(task_name=task_name, name=name, **fields)
                try:
                    with write_transaction(db):
                        schedule.save(using=db, force_insert=True)
                except IntegrityError:
                    continue  # another worker is creating it right now
            elif any(getattr(schedule, k) != v for k, v in fields.items()):
                for key, value in fields.items():
                    setattr(schedule, key, value)
                schedule.save(using=db, update_fields=list(fields))
            else:
                continue
            _reschedule(schedule, db)
            logger.info("static schedule %s/%s: %s", task_name, name, cron.expr)
    for schedule in Schedule.objects.using(db).filter(static=True):
        if (schedule.task_name, schedule.name) not in wanted:
            logger.info("static schedule %s/%s left the code: removed", schedule.task_name,
                        schedule.name)
            unschedule(schedule.task_name, schedule.name, using=db,
                       reason=f"Schedule {schedule.name!r} was removed from the code")


# --- dynamic schedules and the admin -----------------------------------------------------


def _reschedule(schedule: Schedule, using: str) -> None:
    """After a change of cron, timezone or payload: move the queued run, or queue one."""
    if not schedule.enabled:
        return
    now = timezone.now()
    fire_floor, _ = _floor(schedule, using)
    after = max(now, fire_floor) if fire_floor else now
    queued = _queued(schedule, using).values_list("pk", flat=True).first()
    if queued is not None:
        fire = next_fire(schedule.cron, zone(schedule.timezone), after)
        moved = Execution.objects.using(using).filter(
            pk=queued, status=S.PENDING, started_at__isnull=True
        ).update(scheduled_for=fire, run_at=fire, payload=schedule.payload,
                 event_name=schedule.name)
        if moved:
            schedule.next_run_at = fire
            schedule.save(using=using, update_fields=["next_run_at"])
            return
    if not runs(schedule, using).filter(status__in=Execution.UNFINISHED).exists():
        _queue(schedule, after, using)


def _drop_queued(schedule: Schedule, reason: str, using: str) -> int:
    """Cancel the queued run; its fire time is freed (it never ran)."""
    ids = list(_queued(schedule, using).values_list("pk", flat=True))
    for eid in ids:
        Execution.objects.cancel(eid, reason, using=using)
    Execution.objects.using(using).filter(pk__in=ids, started_at__isnull=True).exclude(
        status__in=Execution.UNFINISHED
    ).update(scheduled_for=None)
    return len(ids)


def check_schedule(task: str | Task, name: Any, cron: Any, payload: Any = None,
                   tz: Any = None) -> Task:
    """Validate a dynamic schedule; raises before anything is written."""
    t = get_task(task)
    check_schedule_definition(name, cron, payload, tz)
    return t


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside conductor_django (the caller of
    ``conductor.schedule`` or ``scheduler.schedule``), counted from the warning's caller."""
    level, frame = 1, sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
            "conductor_django"):
        level, frame = level + 1, frame.f_back  # type: ignore[assignment]
    return level + 1


def schedule(
    task: str | Task,
    name: str,
    cron: str,
    payload: Any = None,
    timezone: str | None = None,
    *,
    using: str | None = None,
) -> Schedule:
    """Create the dynamic schedule ``name`` of ``task``, or replace the one of that name.

    Its next run is queued at once; replacing moves the queued run to the new cron's
    next fire time (a run going on finishes first). An expression that fires every
    second of a minute by a likely mistake (``"0 */5 * * * *"`` written seconds-first)
    is saved, with a ``UserWarning`` saying so.
    """
    t = check_schedule(task, name, cron, payload, timezone)
    trap = second_field_trap(cron)
    if trap is not None:
        warnings.warn(f"schedule {name!r} of task {t.name!r}: {trap}", UserWarning,
                      stacklevel=_caller_level())
    db = _db(using)
    fields = {"cron": cron, "payload": payload, "timezone": timezone or "", "static": False}
    return retry_locked(lambda: _replace(t, name, fields, db), db)


def _replace(t: Task, name: str, fields: dict[str, Any], db: str) -> Schedule:
    for _ in range(3):
        with write_transaction(db):
            row = _locked(t.name, name, db)
            if row is None:
                row = Schedule(task_name=t.name, name=name, enabled=True, **fields)
                try:
                    with write_transaction(db):
                        row.save(using=db, force_insert=True)
                except IntegrityError:
                    continue  # created meanwhile: lock it and replace it
            else:
                for key, value in fields.items():
                    setattr(row, key, value)
                row.save(using=db, update_fields=list(fields))
            _reschedule(row, db)
            return row
    raise IntegrityError(f"could not create or replace schedule {t.name}/{name}")


def unschedule(
    task: str | Task, name: str, *, reason: str | None = None, using: str | None = None
) -> bool:
    """Delete a schedule and cancel its queued run; ``False`` if it did not exist.

    A run already going on is left alone (``ctx.unschedule`` cancels its own).
    """
    task_name = task.name if isinstance(task, Task) else task
    if not isinstance(task_name, str) or not isinstance(name, str):
        raise TypeError("unschedule needs a task (name) and a schedule name (str)")
    check_text(task_name, "task name", NAME_LENGTH)  # before any query
    check_text(name, "schedule name", NAME_LENGTH)
    if reason is not None:
        check_text(reason, "reason", allow_empty=True)
    db = _db(using)

    def delete() -> bool:
        with write_transaction(db):
            row = _locked(task_name, name, db)
            if row is None:
                if task_name not in all_tasks():
                    raise TaskNotFound(not_found_message(task_name))
                return False
            _drop_queued(row, reason or f"Schedule {name!r} was removed", db)
            row.delete()
        return True

    return retry_locked(delete, db)


def set_enabled(schedule: Schedule, enabled: bool, using: str | None = None) -> bool:
    """Enable (queue the next run from now) or disable (cancel the queued run).

    Returns ``False`` if the schedule was already in that state.
    """
    db = _db(using)
    with write_transaction(db):
        row = _locked(schedule.task_name, schedule.name, db)
        if row is None or row.enabled == enabled:
            return False
        row.enabled = enabled
        if enabled:
            row.save(using=db, update_fields=["enabled"])
            _reschedule(row, db)
        else:
            row.next_run_at = None
            row.save(using=db, update_fields=["enabled", "next_run_at"])
            _drop_queued(row, f"Schedule {row.name!r} was disabled", db)
    schedule.refresh_from_db(using=db)
    return True


def save_changes(schedule: Schedule, using: str | None = None) -> None:
    """The admin saved ``schedule`` (new, or cron/timezone/payload/enabled changed)."""
    db = _db(using)
    with write_transaction(db):
        row = _locked(schedule.task_name, schedule.name, db)
        if row is None:
            return
        if row.enabled:
            _reschedule(row, db)
        else:
            row.next_run_at = None
            row.save(using=db, update_fields=["next_run_at"])
            _drop_queued(row, f"Schedule {row.name!r} was disabled", db)
    schedule.refresh_from_db(using=db)


def run_now(schedule: Schedule, using: str | None = None) -> str | None:
    """Run the schedule now: its queued run moves to now (or a run is added when none is
    queued). ``None`` when a run is going on (no overlap) or the task is unknown."""
    db = _db(using)
    with write_transaction(db):
        row = _locked(schedule.task_name, schedule.name, db)
        if row is None or row.task_name not in all_tasks():
            return None
        going = runs(row, db).filter(status__in=Execution.UNFINISHED)
        if going.exclude(pk__in=_queued(row, db).values("pk")).exists():
            return None
        now = timezone.now()
        queued = _queued(row, db).values_list("pk", flat=True).first()
        # The run's fire time becomes now: the fire time it was queued for is not used up.
        if queued is not None and Execution.objects.using(db).filter(
            pk=queued, status=S.PENDING, started_at__isnull=True
        ).update(run_at=now, scheduled_for=now, payload=row.payload):
            eid = str(queued)
        else:
            added = _insert(row, get_task(row.task_name), now, now, db)
            if added is None:
                return None
            eid = str(added.pk)
        row.next_run_at = now
        row.save(using=db, update_fields=["next_run_at"])
    return eid
