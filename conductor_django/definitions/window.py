"""Daily time windows: ``task(window=("22:00", "06:00"))`` runs only inside the window.

A window is read in the project's ``TIME_ZONE`` (Django's default time zone, not the
time zone activated for a request). ``start < end`` is a window inside one day;
``start > end`` crosses midnight (``("22:00", "06:00")`` is open from 22:00 until 06:00
the next morning). The start is inclusive, the end exclusive.

Outside the window the claim skips the task (``registry.claim_rules``), and a running
execution is released at its next step boundary (``raise_if_closed``) with ``run_at`` at the
next opening, resuming there without counting a new attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from django.utils import timezone

from ..exceptions import Released


def parse_time(value: Any, what: str) -> time:
    """``"HH:MM"``, ``"HH:MM:SS"`` or a ``datetime.time``; ``ValueError`` otherwise."""
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise ValueError(f"{what} must be a naive time (the window uses TIME_ZONE)")
        return value
    if isinstance(value, str):
        parts = value.strip().split(":")
        if len(parts) in (2, 3) and all(p.isdigit() and len(p) <= 2 for p in parts):
            numbers = [int(p) for p in parts]
            try:
                return time(numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else 0)
            except ValueError:
                pass
    raise ValueError(f"{what} must be a time like '22:00' or '06:30:00', got {value!r}")


@dataclass(frozen=True, slots=True)
class Window:
    """A daily window ``[start, end)`` in ``TIME_ZONE``; crosses midnight if start > end."""

    start: time
    end: time

    @classmethod
    def parse(cls, value: Any, task_name: str = "") -> Window:
        """From ``("22:00", "06:00")`` (or a ``Window``); ``ValueError`` naming the task."""
        if isinstance(value, Window):
            return value
        label = f"window of task {task_name!r}" if task_name else "window"
        if isinstance(value, str | bytes) or not isinstance(value, tuple | list) or len(value) != 2:
            raise ValueError(f"{label} must be a pair (start, end) like ('22:00', '06:00'), "
                             f"got {value!r}")
        start = parse_time(value[0], f"{label} start")
        end = parse_time(value[1], f"{label} end")
        if start == end:
            raise ValueError(f"{label} is empty: start and end are both {start.isoformat()}")
        return cls(start, end)

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end

    def contains(self, moment: time) -> bool:
        """Whether the local wall-clock time ``moment`` is inside the window."""
        if self.crosses_midnight:
            return moment >= self.start or moment < self.end
        return self.start <= moment < self.end

    def is_open(self, now: datetime | None = None, tz: tzinfo | None = None) -> bool:
        local = timezone.localtime(now or timezone.now(), tz or timezone.get_default_timezone())
        return self.contains(local.time().replace(tzinfo=None))

    def next_open(self, now: datetime | None = None, tz: tzinfo | None = None) -> datetime:
        """``now`` when open, else the next moment the window opens (an aware datetime)."""
        now = now or timezone.now()
        tz = tz or timezone.get_default_timezone()
        if self.is_open(now, tz):
            return now
        local = timezone.localtime(now, tz)
        for days in range(3):  # today's or tomorrow's start
            day = local.date() + timedelta(days=days)
            candidate = self._start_on(day, tz)
            if candidate > now:
                return candidate
        raise AssertionError("unreachable: a daily window opens within two days")

    def _start_on(self, day: date, tz: tzinfo) -> datetime:
        """When the window opens on ``day``: the start's first occurrence, or, when a DST
        gap skips the start, the instant the clock jumps into the window."""
        first = datetime.combine(day, self.start, tzinfo=tz).astimezone(UTC)
        second = datetime.combine(day, self.start, tzinfo=tz).replace(fold=1).astimezone(UTC)
        lo, hi = min(first, second), max(first, second)
        if lo.astimezone(tz).time().replace(tzinfo=None) == self.start:
            return lo.astimezone(tz)  # exists (the earlier one when the hour repeats)
        while hi - lo > timedelta(seconds=1):  # a gap: find the jump, to the second
            mid = lo + (hi - lo) / 2
            if self.is_open(mid, tz):
                hi = mid
            else:
                lo = mid
        return hi.astimezone(tz).replace(microsecond=0)

    def raise_if_closed(self, now: datetime | None = None) -> None:
        """``Released(run_at=<next opening>)`` if the window is closed at ``now``."""
        now = now or timezone.now()
        if not self.is_open(now):
            raise Released(run_at=self.next_open(now), why="window")

    def __str__(self) -> str:
        return f"{self.start.isoformat('minutes' if not self.start.second else 'seconds')}-" \
               f"{self.end.isoformat('minutes' if not self.end.second else 'seconds')}"
