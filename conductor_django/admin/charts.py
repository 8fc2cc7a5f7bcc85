"""Geometry of the dashboard's throughput chart, rendered as inline SVG by a template.

No JavaScript and nothing from a CDN: one stacked bar per minute (completed below,
failed on top), a y axis with three ticks and a time label every ten minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.utils import timezone

from .stats import Minute

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 28


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    completed_y: float
    completed_h: float
    failed_y: float
    failed_h: float
    title: str


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    bottom_y: int
    right_x: int
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total_completed: int
    total_failed: int


def nice_max(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^n that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def throughput_chart(minutes: list[Minute]) -> Chart:
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    top_value = nice_max(max((m.completed + m.failed for m in minutes), default=0))
    slot = plot_w / max(len(minutes), 1)
    bar_w = max(slot - 2, 1)
    bars, x_ticks = [], []
    for i, m in enumerate(minutes):
        x = LEFT + i * slot + 1
        ch = plot_h * m.completed / top_value
        fh = plot_h * m.failed / top_value
        local = timezone.localtime(m.start)
        bars.append(Bar(
            x=round(x, 1), width=round(bar_w, 1),
            completed_y=round(bottom - ch, 1), completed_h=round(ch, 1),
            failed_y=round(bottom - ch - fh, 1), failed_h=round(fh, 1),
            title=f"{local:%H:%M}: {m.completed} completed, {m.failed} failed",
        ))
        if local.minute % 10 == 0:
            x_ticks.append(Tick(round(x + bar_w / 2, 1), f"{local:%H:%M}"))
    y_ticks = [
        Tick(round(bottom - plot_h * frac, 1), str(int(top_value * frac)))
        for frac in (0, 0.5, 1)
        if frac != 0.5 or top_value % 2 == 0
    ]
    return Chart(
        width=WIDTH, height=HEIGHT, left=LEFT, bottom_y=bottom, right_x=WIDTH - RIGHT,
        bars=bars, y_ticks=y_ticks, x_ticks=x_ticks,
        total_completed=sum(m.completed for m in minutes),
        total_failed=sum(m.failed for m in minutes),
    )
