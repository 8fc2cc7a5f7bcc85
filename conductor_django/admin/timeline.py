"""Geometry of an execution's timeline, rendered as an inline SVG Gantt by a template.

One lane per attempt (coloured by how it ended; a running one reaches "now"), then one
lane per step of the page of steps shown (from its start to its end). The time axis
spans the whole execution when all its steps are shown; on one page of many it spans
that page's steps, so that fifty steps of ten thousand stay readable. No JavaScript:
each bar's ``<title>`` gives its exact times on hover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from ..models import Execution, Step
from ..state.attempts import AttemptView
from .cells import seconds, stamp_text

WIDTH = 960
LABEL_W = 180  # the lane names on the left
RIGHT = 12
LANE_H, BAR_H = 16, 11
TOP, AXIS_H = 6, 22


@dataclass(frozen=True)
class Lane:
    y: float
    label: str
    x: float
    width: float
    kind: str  # CSS class suffix: a step, or an attempt's outcome
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    label_w: int
    bar_h: int
    axis_y: float
    lanes: list[Lane]
    ticks: list[Tick]
    now_x: float | None
    span: str  # what the axis covers, in words


def _bounds(execution: Execution, steps: Sequence[Step], whole: bool,
            now: datetime) -> tuple[datetime, datetime]:
    if not whole and steps:
        start = min(s.started_at or s.created_at for s in steps)
        return start, max(s.created_at for s in steps)
    start = execution.started_at or execution.created_at
    if steps:
        start = min(start, *(s.started_at or s.created_at for s in steps))
    return start, execution.finished_at or now


def timeline(execution: Execution, attempts: Sequence[AttemptView], steps: Sequence[Step],
             *, whole: bool, now: datetime | None = None) -> Timeline | None:
    """The timeline of ``execution`` (``None`` before it ever started)."""
    now = now or timezone.now()
    if execution.started_at is None and not steps:
        return None
    start, end = _bounds(execution, steps, whole, now)
    total = max((end - start).total_seconds(), 0.001)
    plot_w = WIDTH - LABEL_W - RIGHT

    def x_of(moment: datetime) -> float:
        frac = (moment - start).total_seconds() / total
        return round(LABEL_W + plot_w * min(max(frac, 0.0), 1.0), 1)

    def bar(y: float, label: str, begin: datetime | None, finish: datetime | None,
            kind: str, what: str) -> Lane:
        finish = finish or now
        begin = begin or finish
        x0, x1 = x_of(begin), x_of(finish)
        title = (f"{what}: {stamp_text(begin, ms=True)} → {stamp_text(finish, ms=True)}"
                 f" ({seconds((finish - begin).total_seconds())})")
        return Lane(y=y, label=label, x=x0, width=max(round(x1 - x0, 1), 2.0), kind=kind,
                    title=title)

    lanes = []
    y = float(TOP)
    for a in attempts:
        lanes.append(bar(y, f"attempt {a.number}", a.started_at, a.finished_at,
                         a.outcome, f"attempt {a.number}, {a.how}"))
        y += LANE_H
    for s in steps:
        lanes.append(bar(y, s.name, s.started_at, s.created_at, "step", f"step {s.name}"))
        y += LANE_H
    axis_y = y + 4
    ticks = [Tick(x_of(start + (end - start) * frac),
                  stamp_text(start + (end - start) * frac, ms=total < 60, zone=False)[11:])
             for frac in (0, 0.25, 0.5, 0.75, 1)]
    running = execution.finished_at is None and whole and execution.started_at is not None
    span = (f"{stamp_text(start, ms=True)} to {stamp_text(end, ms=True)}"
            f" ({seconds(total)})")
    return Timeline(width=WIDTH, height=int(axis_y + AXIS_H), label_w=LABEL_W, bar_h=BAR_H,
                    axis_y=axis_y, lanes=lanes, ticks=ticks,
                    now_x=x_of(now) if running else None, span=span)
