"""Read-only numbers for the admin: filter choices, counts, throughput per minute.

Every query here stays cheap on a table of millions of executions when the indexes of
migration 0003 exist (see docs/admin.md for the plans on PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, router
from django.db.models import Case, Count, IntegerField, Min, Q, Value, When
from django.db.models.functions import TruncMinute
from django.utils import timezone

from ..models import Execution
from ..store import stats as store_stats

S = Execution.Status
DISTINCT_COLUMNS = ("task_name", "queue")


def distinct_values(column: str, using: str | None = None, limit: int = 200) -> list[str]:
    """The distinct values of an indexed column, one index probe per value.

    A "loose index scan" (recursive CTE): ``SELECT DISTINCT`` would read every row.
    """
    if column not in DISTINCT_COLUMNS:
        raise ValueError(f"column must be one of {DISTINCT_COLUMNS}, not {column!r}")
    db = using or router.db_for_read(Execution)
    return store_stats.distinct_values(connections[db], Execution._meta.db_table, column, limit)


@dataclass(frozen=True)
class StatusCounts:
    """Counts per queue and status, with totals."""

    statuses: list[str]
    rows: list[tuple[str, list[int], int]]  # (queue, count per status, total)
    totals: list[int]
    total: int


def status_counts(using: str | None = None) -> StatusCounts:
    db = using or router.db_for_read(Execution)
    grouped = (
        Execution.objects.using(db).order_by().values_list("queue", "status")
        .annotate(n=Count("*"))
    )
    statuses = list(S.values)
    per_queue: dict[str, list[int]] = {}
    for queue, status, n in grouped:
        counts = per_queue.setdefault(queue, [0] * len(statuses))
        if status in statuses:
            counts[statuses.index(status)] += n
    rows = [(q, c, sum(c)) for q, c in sorted(per_queue.items())]
    totals = [sum(c[i] for _, c, _ in rows) for i in range(len(statuses))]
    return StatusCounts(statuses=statuses, rows=rows, totals=totals, total=sum(totals))


@dataclass(frozen=True)
class Minute:
    start: datetime
    completed: int
    failed: int


def throughput(
    minutes: int = 60, now: datetime | None = None, using: str | None = None
) -> list[Minute]:
    """Completed and failed executions per minute (by ``finished_at``), oldest first; an
    execution an operator cancelled before it finished is not counted as failed."""
    db = using or router.db_for_read(Execution)
    now = now or timezone.now()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    grouped = (
        Execution.objects.using(db).order_by()
        .filter(status__in=(S.COMPLETED, S.FAILED), finished_at__gte=first, finished_at__lte=now)
        # an operator's cancel of a pending or suspended execution is no failure of its task
        .exclude(status=S.FAILED, cancel_requested=True)
        .annotate(minute=TruncMinute("finished_at"))
        .values_list("minute", "status")
        .annotate(n=Count("*"))
    )
    counts: dict[tuple[int, str], int] = {}
    for minute, status, n in grouped:
        counts[(int(minute.timestamp()), status)] = n
    out = []
    for i in range(minutes):
        start = first + timedelta(minutes=i)
        key = int(start.timestamp())
        out.append(Minute(start, counts.get((key, S.COMPLETED), 0),
                          counts.get((key, S.FAILED), 0)))
    return out


# --- the dashboard of an operations console -------------------------------------------

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
QUANTILES = (0.5, 0.95)
#: At most this many rows are read to compute percentiles where the database has no
#: percentile function (SQLite, MySQL/MariaDB): the most recent ones of the window.
PERCENTILE_ROWS = 20_000


def quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly between the two nearest
    ranks (PostgreSQL's ``percentile_cont``)."""
    if not ordered:
        raise ValueError("no values")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class QueueRow:
    """One queue on the dashboard: what waits and runs now, and what finished in the
    last day."""

    queue: str
    pending: int  # runnable now (pending, due)
    scheduled: int  # pending with a future run_at (delayed, a retry's back-off, cron)
    running: int
    suspended: int
    completed: int  # in the last day, as the three below
    failed: int  # not by a cancel
    cancelled_before_finishing: int  # failed by a cancel while pending or suspended
    cancelled: int
    lag: float | None  # seconds since the oldest runnable execution was due

    @property
    def unfinished(self) -> int:
        return self.pending + self.scheduled + self.running + self.suspended


@dataclass(frozen=True)
class TaskRow:
    """One task on the dashboard (executions that started and finished, not counting
    those an operator cancelled while they waited)."""

    task_name: str
    runs_hour: int
    runs_day: int
    failed_day: int
    p50: float | None  # run time over the last hour, seconds
    p95: float | None

    @property
    def failure_rate(self) -> float:
        return self.failed_day / self.runs_day if self.runs_day else 0.0


@dataclass(frozen=True)
class Overview:
    queues: list[QueueRow]
    tasks: list[TaskRow]
    now: datetime


def _unfinished(db: str, now: datetime) -> dict[str, dict[str, Any]]:
    """Per queue: counts of the unfinished rows and the oldest due ``run_at``; every
    column read is in ``cdj_exec_open_idx`` (an index-only scan of the unfinished rows)."""
    due = Q(status__in=Execution.RUNNABLE, run_at__lte=now)
    rows = (
        Execution.objects.using(db).order_by()
        .filter(status__in=Execution.UNFINISHED)
        .values_list("queue", "status")
        .annotate(n=Count("*"), due=Count("run_at", filter=due),
                  oldest=Min("run_at", filter=due))
    )
    queues: dict[str, dict[str, Any]] = {}
    for queue, status, n, n_due, oldest in rows:
        q = queues.setdefault(queue, {"pending": 0, "scheduled": 0, "running": 0,
                                      "suspended": 0, "oldest": None})
        if status == S.PENDING:
            q["pending"] += n_due
            q["scheduled"] += n - n_due
        elif status in (S.RUNNING, S.SUSPENDED):
            q[status] += n
        if oldest is not None and (q["oldest"] is None or oldest < q["oldest"]):
            q["oldest"] = oldest
    return queues


def _finished(db: str, now: datetime) -> list[tuple[str, str, str, bool, bool, bool, int]]:
    """(queue, task, status, started, cancel requested, in the last hour, count) of the
    executions finished in the last day: an index-only scan of ``cdj_exec_finished_idx``."""
    recent = Case(When(finished_at__gte=now - HOUR, then=Value(1)), default=Value(0),
                  output_field=IntegerField())
    unstarted = Case(When(started_at__isnull=True, then=Value(1)), default=Value(0),
                     output_field=IntegerField())
    rows = (
        Execution.objects.using(db).order_by()
        .filter(status__in=Execution.FINAL, finished_at__gte=now - DAY,
                finished_at__lte=now)
        .annotate(recent=recent, unstarted=unstarted)
        .values_list("queue", "task_name", "status", "unstarted", "cancel_requested", "recent")
        .annotate(n=Count("*"))
    )
    return [(q, t, s, not u, bool(c), bool(r), n) for q, t, s, u, c, r, n in rows]


def percentiles(db: str, since: datetime) -> dict[str, list[float]]:
    """Per task, the run time quantiles (``QUANTILES``) of the executions that started
    and finished since ``since``: the database's ``percentile_cont`` where it has one,
    else computed here from the most recent ``PERCENTILE_ROWS`` rows."""
    connection = connections[db]
    found = store_stats.duration_percentiles(connection, Execution._meta.db_table, since,
                                             QUANTILES)
    if found is not None:
        return found
    rows = (
        Execution.objects.using(db).order_by("-finished_at")
        .filter(status__in=Execution.FINAL, finished_at__gte=since, started_at__isnull=False)
        .values_list("task_name", "started_at", "finished_at")[:PERCENTILE_ROWS]
    )
    runs: dict[str, list[float]] = {}
    for task, started, finished in rows:
        runs.setdefault(task, []).append((finished - started).total_seconds())
    return {task: [quantile(sorted(values), q) for q in QUANTILES]
            for task, values in runs.items()}


def overview(now: datetime | None = None, using: str | None = None) -> Overview:
    """The numbers of the dashboard: per queue and per task (see ``QueueRow``,
    ``TaskRow``). Each is one query whose cost follows the unfinished rows and the rows
    finished in the last day, not the size of the table."""
    db = using or router.db_for_read(Execution)
    now = now or timezone.now()
    open_rows = _unfinished(db, now)
    done: dict[str, dict[str, int]] = {}
    tasks: dict[str, list[int]] = {}
    for queue, task, status, started, by_cancel, recent, n in _finished(db, now):
        d = done.setdefault(queue, {"completed": 0, "failed": 0,
                                    "cancelled_before_finishing": 0, "cancelled": 0})
        waiting_cancelled = status == S.FAILED and by_cancel
        if waiting_cancelled:
            d["cancelled_before_finishing"] += n
        elif status in d:
            d[status] += n
        if started and not waiting_cancelled:
            t = tasks.setdefault(task, [0, 0, 0])
            t[0] += n if recent else 0
            t[1] += n
            t[2] += n if status == S.FAILED else 0
    queues = []
    for queue in sorted(set(open_rows) | set(done)):
        o = open_rows.get(queue, {})
        d = done.get(queue, {})
        oldest = o.get("oldest")
        queues.append(QueueRow(
            queue=queue, pending=o.get("pending", 0), scheduled=o.get("scheduled", 0),
            running=o.get("running", 0), suspended=o.get("suspended", 0),
            completed=d.get("completed", 0), failed=d.get("failed", 0),
            cancelled_before_finishing=d.get("cancelled_before_finishing", 0),
            cancelled=d.get("cancelled", 0),
            lag=max(0.0, (now - oldest).total_seconds()) if oldest else None,
        ))
    quantiles = percentiles(db, now - HOUR)
    task_rows = [
        TaskRow(task, *counts, *(quantiles.get(task) or (None, None)))
        for task, counts in sorted(tasks.items())
    ]
    return Overview(queues=queues, tasks=task_rows, now=now)


def recent_failures(limit: int = 10, using: str | None = None) -> list[Execution]:
    """The last executions that failed after starting, not by an operator's cancel
    (newest first), from ``cdj_exec_status_fin_idx`` read backwards."""
    db = using or router.db_for_read(Execution)
    return list(
        Execution.objects.using(db).filter(status=S.FAILED, started_at__isnull=False,
                                           cancel_requested=False)
        .order_by("-finished_at")
        .only("id", "task_name", "queue", "finished_at", "last_error", "attempts",
              "max_attempts")[:limit]
    )
