"""Why a runnable execution is not starting: the flow-control limits it waits for.

A read, not a transition: ``ExecutionQuerySet.why_waiting`` (the admin's execution page
shows it). Each reason names the limit and, for a rate limit, when the window allows
the next start: ``"rate limited until 10:42:07"``, ``"key tenant-7 at its limit 2/2"``,
``"task sync at its limit 5/5"``, ``"outside its window until 22:00:00"``,
``"queue mail paused since 2026-01-05 10:40:00"``. The limits are the ones the workers
use: the code's, or an operator's (``set_limits``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from ..definitions.controls import effective
from ..definitions.registry import get_task
from ..exceptions import TaskNotFound
from . import controls
from .status import RUNNABLE, Status


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S")


def _since(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def why_waiting(queryset: QuerySet, execution: Any, now: datetime | None = None) -> list[str]:
    """The limits that hold ``execution`` back right now (empty: none, or it is not
    runnable yet, or not runnable at all)."""
    now = now or timezone.now()
    if execution.status not in RUNNABLE or execution.run_at is None or execution.run_at > now:
        return []
    seen = controls.read(queryset.model, queryset.db)
    reasons = [
        f"{pause.scope} {pause.name} paused since {_since(pause.since)}"
        for pause in seen.pauses
        if (pause.scope, pause.name) in (("task", execution.task_name), ("queue", execution.queue))
    ]
    try:
        t = get_task(execution.task_name)
    except TaskNotFound:
        return reasons
    name = t.name
    rows = queryset.filter(task_name=name)
    if t.window is not None and not t.window.is_open(now):
        reasons.append(f"outside its window until {_clock(t.window.next_open(now))}")
    lim = effective(t, seen.limits.get(name))  # with the limits an operator set, if any
    running = rows.filter(status=Status.RUNNING)
    if lim.concurrency is not None:
        n = running.count()
        if n >= lim.concurrency:
            reasons.append(f"task {name} at its limit {n}/{lim.concurrency}")
    key = execution.key
    if lim.key_concurrency is not None and key is not None:
        n = running.filter(key=key).count()
        if n >= lim.key_concurrency:
            reasons.append(f"key {key} at its limit {n}/{lim.key_concurrency}")
    rate = lim.rate_limit
    if rate is not None and (key is not None or not rate.per_key):
        window = timedelta(seconds=rate.seconds)
        starts = rows.filter(started_at__gte=now - window)
        if rate.per_key:
            starts = starts.filter(key=key)
        latest = list(starts.order_by("-started_at").values_list("started_at", flat=True)
                      [:rate.count])
        if len(latest) >= rate.count:
            whose = f"key {key} " if rate.per_key else ""
            reasons.append(f"{whose}rate limited until {_clock(latest[-1] + window)}")
    return reasons
