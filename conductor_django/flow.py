"""Flow-control options of ``task(...)`` and what they mean for the claim.

``concurrency``, ``window`` and ``batch`` are validated here when a task is defined.
``claim_rules`` turns the registered tasks into what one claim needs: tasks the plain
claim must skip (batch tasks, tasks whose window is closed now) and the per-task
concurrency limits (see ``queries.claim`` for how they are enforced).

This module is imported with the package, before Django's app registry is ready, so
it must not import models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .utils import to_seconds
from .window import Window


@dataclass(frozen=True, slots=True)
class Batch:
    """``task(batch=Batch(size=10, timeout=5.0))``: the handler gets up to ``size`` events.

    A batch starts when ``size`` executions are runnable, or when the oldest runnable
    one has waited ``timeout`` seconds (whichever comes first).
    """

    size: int = 10
    timeout: float | timedelta = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Batch size must be an int >= 1, got {self.size!r}")
        seconds = to_seconds(self.timeout, "Batch timeout")
        object.__setattr__(self, "timeout", seconds)

    @property
    def timeout_seconds(self) -> float:
        return float(self.timeout)  # type: ignore[arg-type]  # normalized in __post_init__


def check_concurrency(value: Any, task_name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"concurrency of task {task_name!r} must be an int >= 1 or None, "
                         f"got {value!r}")
    return value


def check_window(value: Any, task_name: str) -> Window | None:
    return None if value is None else Window.parse(value, task_name)


def check_batch(value: Any, task_name: str, concurrency: int | None) -> Batch | None:
    if value is None:
        return None
    if not isinstance(value, Batch):
        raise TypeError(f"batch of task {task_name!r} must be a Batch(size, timeout), "
                        f"got {value!r}")
    if concurrency is not None:
        raise ValueError(f"task {task_name!r}: concurrency cannot be combined with batch "
                         "(a batch already runs as one unit)")
    return value


@dataclass(frozen=True, slots=True)
class ClaimRules:
    """What the plain claim must respect right now, derived from the registered tasks."""

    skip: tuple[str, ...] = ()  # never claimed one by one: batch tasks, closed windows
    limits: dict[str, int] = field(default_factory=dict)  # task name -> max running

    @property
    def plain(self) -> bool:
        return not self.skip and not self.limits


def claim_rules(now: datetime) -> ClaimRules:
    from .registry import all_tasks

    skip: list[str] = []
    limits: dict[str, int] = {}
    for name, t in sorted(all_tasks().items()):
        if t.batch is not None or (t.window is not None and not t.window.is_open(now)):
            skip.append(name)
        elif t.concurrency is not None:
            limits[name] = t.concurrency
    return ClaimRules(skip=tuple(skip), limits=limits)


def batch_tasks(now: datetime) -> dict[str, Batch]:
    """Batch tasks whose window (if any) is open at ``now``."""
    from .registry import all_tasks

    return {
        name: t.batch
        for name, t in sorted(all_tasks().items())
        if t.batch is not None and (t.window is None or t.window.is_open(now))
    }
