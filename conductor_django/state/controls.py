"""What the operator's controls (``models.Control``) mean for a worker's claims.

Each worker process reads the rows at most every ``refresh_seconds()`` (a small table:
one row per paused queue or task and per task with changed limits) and keeps them in
``_cache``, so the claim costs no extra statement in between: a pause, a resume or a
change of limits reaches every worker within ``max(POLL_INTERVAL, 5 s)`` (the worker
claims at least every ``POLL_INTERVAL``). A process that writes a control forgets its
own cache at once (``forget``).

How the claim honours them, without SQL of its own (``ExecutionQuerySet.claim``):

* a paused task joins the claim's skipped task names (``registry.claim_rules``);
* a paused queue leaves the worker's list of queues; a worker that serves every queue
  claims, while some queue is paused, from the queues the executions' table knows
  (``served_queues``: one index probe per queue, refreshed with the controls) minus the
  paused ones;
* changed limits replace the code's in ``registry.claim_rules``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connections

from .. import conf
from ..definitions.controls import Limits, parse_rate
from ..store.stats import distinct_values

#: At most this many queues are looked up for a worker serving every queue while some
#: queue is paused (one index probe each).
MAX_QUEUES = 10_000


@dataclass(frozen=True, slots=True)
class Pause:
    scope: str  # "queue" or "task"
    name: str
    since: datetime
    by: str
    schedules: str  # "queue" or "skip"
    skipped_fire_times: int


@dataclass(frozen=True, slots=True)
class Controls:
    """The controls as one worker saw them at ``read_at`` (``time.monotonic()``)."""

    read_at: float = -1e18
    pauses: tuple[Pause, ...] = ()
    limits: dict[str, Limits] = field(default_factory=dict)
    #: every queue of the executions' table, read only while some queue is paused
    queues: tuple[str, ...] = ()
    paused_queues: frozenset[str] = frozenset()
    paused_tasks: frozenset[str] = frozenset()


_cache: dict[str, Controls] = {}
_lock = threading.Lock()


def refresh_seconds() -> float:
    """How long a worker keeps what it read: the claim runs at least every
    ``POLL_INTERVAL``, so a change is seen within ``max(POLL_INTERVAL, 5 s)``."""
    poll = float(conf.get("POLL_INTERVAL"))
    return max(0.5, max(poll, 5.0) - poll)


def forget(using: str | None = None) -> None:
    """Read the controls again at the next claim (after this process changed them)."""
    with _lock:
        if using is None:
            _cache.clear()
        else:
            _cache.pop(using, None)


def current(execution_model: Any, using: str) -> Controls:
    """The controls as of at most ``refresh_seconds()`` ago."""
    now = time.monotonic()
    seen = _cache.get(using)
    if seen is not None and now - seen.read_at < refresh_seconds():
        return seen
    seen = _read(execution_model, using, now)
    with _lock:
        _cache[using] = seen
    return seen


def read(execution_model: Any, using: str) -> Controls:
    """The controls as they are now (no cache: the admin's and ``conductor.paused``)."""
    return _read(execution_model, using, time.monotonic())


def _read(execution_model: Any, using: str, now: float) -> Controls:
    model = execution_model._meta.apps.get_model(execution_model._meta.app_label, "Control")
    pauses: list[Pause] = []
    limits: dict[str, Limits] = {}
    for row in model.objects.using(using).all():
        if row.paused_at is not None:
            pauses.append(Pause(row.scope, row.name, row.paused_at, row.paused_by,
                                row.schedules, row.skipped_fire_times))
        if row.scope == "task":
            try:
                rate = parse_rate(row.rate_limit) if row.rate_limit else None
            except (TypeError, ValueError):
                rate = None  # written by hand and unreadable: the code's value holds
            override = Limits(row.concurrency or None, row.key_concurrency or None, rate)
            if not override.empty:
                limits[row.name] = override
    queues: tuple[str, ...] = ()
    if any(p.scope == "queue" for p in pauses):
        queues = tuple(distinct_values(connections[using], execution_model._meta.db_table,
                                       "queue", MAX_QUEUES))
    return Controls(
        read_at=now, pauses=tuple(pauses), limits=limits, queues=queues,
        paused_queues=frozenset(p.name for p in pauses if p.scope == "queue"),
        paused_tasks=frozenset(p.name for p in pauses if p.scope == "task"),
    )


def served_queues(controls: Controls, queues: Sequence[str] | None) -> list[str] | None:
    """The queues a worker of ``queues`` (empty or ``None``: every queue) claims from
    now: ``None`` for every queue, ``[]`` for none (all of its queues are paused)."""
    paused = controls.paused_queues
    if not paused:
        return list(queues) if queues else None
    if queues:
        return [q for q in queues if q not in paused]
    return [q for q in controls.queues if q not in paused]
