"""How long finished executions are kept, and the cleanup that deletes the rest.

A task's ``retention=Retention(...)`` wins over the global ``CONDUCTOR["RETENTION"]``
for that task's executions; a field left ``None`` keeps those executions forever.
``completed`` applies to completed executions, ``failed`` to failed and cancelled ones;
the age is measured from ``finished_at``. Unfinished executions and children whose
parent is still unfinished (it may still read their result) are never deleted.

``cleanup()`` deletes in batches of ``CLEANUP_BATCH_SIZE`` rows, each batch one short
transaction (its steps and log lines go with it), so a large backlog never holds a long
lock. The worker calls it at most every ``CLEANUP_INTERVAL`` seconds (hourly by
default) with a time budget; ``manage.py conductor_cleanup`` calls it on demand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .store.transactions import write_transaction

__all__ = ["KINDS", "CleanupResult", "Retention", "cleanup", "policies"]
from django.db import router
from django.db.models import Q, QuerySet
from django.utils import timezone

from . import conf
from .definitions.options import Retention
from .definitions.registry import all_tasks
from .models import Execution

#: (label used in reports, statuses, the ``Retention`` field that covers them)
KINDS = (
    ("completed", ("completed",), "completed"),
    ("failed", ("failed", "cancelled"), "failed"),
)


@dataclass
class CleanupResult:
    """What a cleanup deleted (or, in a dry run, would delete)."""

    deleted: dict[tuple[str, str], int] = field(default_factory=dict)  # (task, kind) -> rows
    batches: int = 0
    finished: bool = True  # False when the time budget ran out with more to delete
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.deleted.values())

    def by_kind(self) -> dict[str, int]:
        out = {kind: 0 for kind, _, _ in KINDS}
        for (_, kind), n in self.deleted.items():
            out[kind] += n
        return out


def policies(now: Any | None = None) -> list[tuple[str, str, QuerySet]]:
    """Every (task or ``"*"``, kind, queryset of deletable executions) the settings define."""
    now = now or timezone.now()
    # The parent of a deletable child must be finished too (a suspended parent reads it).
    free = Q(parent__isnull=True) | Q(parent__status__in=Execution.FINAL)
    own = {name: t.retention for name, t in sorted(all_tasks().items())
           if t.retention is not None}
    out: list[tuple[str, str, QuerySet]] = []
    for name, retention in own.items():
        for kind, statuses, attr in KINDS:
            age = getattr(retention, attr)
            if age is not None:
                qs = Execution.objects.filter(free, task_name=name, status__in=statuses,
                                              finished_at__lt=now - age)
                out.append((name, kind, qs))
    default = Retention.coerce(conf.get("RETENTION"))
    if default is not None:
        for kind, statuses, attr in KINDS:
            age = getattr(default, attr)
            if age is not None:
                qs = Execution.objects.filter(free, status__in=statuses,
                                              finished_at__lt=now - age)
                out.append(("*", kind, qs.exclude(task_name__in=list(own))))
    return out


def cleanup(
    *,
    dry_run: bool = False,
    batch_size: int | None = None,
    time_budget: float | None = None,
    using: str | None = None,
) -> CleanupResult:
    """Delete finished executions older than their retention, ``batch_size`` rows at a time.

    With ``time_budget`` (seconds) it stops after the batch that exhausts it and
    returns ``finished=False``; the worker then comes back soon instead of blocking.
    """
    if batch_size is None:
        batch_size = conf.get("CLEANUP_BATCH_SIZE")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    using = using or router.db_for_write(Execution)
    deadline = None if time_budget is None else time.monotonic() + time_budget
    result = CleanupResult(dry_run=dry_run)
    for name, kind, qs in policies():
        qs = qs.using(using)
        if dry_run:
            count = qs.count()
            if count:
                result.deleted[(name, kind)] = count
            continue
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                result.finished = False
                return result
            ids = list(qs.order_by().values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            with write_transaction(using):
                _, per_model = Execution.objects.using(using).filter(pk__in=ids).delete()
            deleted = per_model.get(Execution._meta.label, 0)
            result.batches += 1
            result.deleted[(name, kind)] = result.deleted.get((name, kind), 0) + deleted
            if len(ids) < batch_size:
                break
    return result
