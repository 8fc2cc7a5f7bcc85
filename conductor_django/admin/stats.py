"""Read-only numbers for the admin: filter choices, counts, throughput per minute.

Every query here stays cheap on a table of millions of executions when the indexes of
migration 0003 exist (see docs/admin.md for the plans on PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections, router
from django.db.models import Count
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
    """Completed and failed executions per minute (by ``finished_at``), oldest first."""
    db = using or router.db_for_read(Execution)
    now = now or timezone.now()
    first = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    grouped = (
        Execution.objects.using(db).order_by()
        .filter(status__in=(S.COMPLETED, S.FAILED), finished_at__gte=first, finished_at__lte=now)
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
