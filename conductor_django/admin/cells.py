"""How the admin shows one value: timestamps, one-line cells, status badges.

Timestamps are local (the active time zone) to the second, or to the millisecond where
two events are close (steps, attempts), always with the zone's name; a ``<time>``
element carries the exact ISO value. A list cell stays on one line: CSS cuts it with an
ellipsis and the ``title`` holds the full text for the mouse.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from ..models import Execution
from .display import status_badge

S = Execution.Status
#: The longest text put in a list cell (the cell shows what fits, the title all of it).
CELL_TEXT = 500


def local(value: datetime) -> datetime:
    return timezone.localtime(value) if timezone.is_aware(value) else value


def stamp_text(value: datetime | None, *, ms: bool = False, zone: bool = True) -> str:
    """``2026-11-30 07:12:03.123 UTC`` (``ms``: with milliseconds; ``zone``: its name)."""
    if value is None:
        return "-"
    moment = local(value)
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:23] if ms \
        else moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} {moment.tzname() or ''}".rstrip() if zone else text


def short_text(value: datetime, now: datetime | None = None) -> str:
    """For a list cell: ``07:12:03`` today, ``11-29 07:12:03`` another day this year,
    ``2025-11-29 07:12`` before."""
    moment, today = local(value), local(now or timezone.now())
    if moment.date() == today.date():
        return moment.strftime("%H:%M:%S")
    if moment.year == today.year:
        return moment.strftime("%m-%d %H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def stamp(value: datetime | None, *, ms: bool = False, zone: bool = True,
          short: bool = False) -> str:
    """``stamp_text`` (``short``: ``short_text``) in a ``<time>`` whose ``datetime`` is
    the exact value and whose title is the full local time with its zone."""
    if value is None:
        return "-"
    exact = local(value).isoformat(timespec="microseconds")
    shown = short_text(value) if short else stamp_text(value, ms=ms, zone=zone)
    return format_html('<time datetime="{}" title="{}">{}</time>', exact,
                       stamp_text(value, ms=True), shown)


def one_line(text: str | None, *, css: str = "") -> str:
    """A list cell's text on one line, all of it in the title (the CSS cuts it)."""
    flat = " ".join((text or "").split())
    if not flat:
        return "-"
    full = flat if len(flat) <= CELL_TEXT else flat[: CELL_TEXT - 1] + "…"
    return format_html('<span class="cdj-cell {}" title="{}">{}</span>', css, full, full)


def seconds(value: float | None) -> str:
    """A duration: ``850 ms``, ``12.4 s``, ``3 min 05 s``, ``2 h 01 min``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    minutes, secs = divmod(int(round(value)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def is_scheduled(obj: Execution, now: datetime | None = None) -> bool:
    """Pending with a future ``run_at``: a delayed run, a retry's back-off, a cron run."""
    return obj.status == S.PENDING and obj.run_at is not None \
        and obj.run_at > (now or timezone.now())


def cancelled_before_finishing(obj: Execution) -> bool:
    """Failed because an operator cancelled it while pending or suspended (§5)."""
    return obj.status == S.FAILED and obj.cancel_requested


def execution_status(obj: Execution, now: datetime | None = None) -> str:
    """The status badge, told apart where one status covers two situations: a pending
    execution due later is *scheduled*, a failed one that an operator cancelled was
    *cancelled before start* (it never ran) or *cancelled before finishing* (it waited),
    a running one whose cancel was accepted is *cancelling…*."""
    if is_scheduled(obj, now):
        return format_html('<span class="cdj-status cdj-status-scheduled" title="pending, '
                           'runs at {}">Scheduled</span>', stamp_text(obj.run_at))
    if cancelled_before_finishing(obj):
        if obj.started_at is None:
            return mark_safe('<span class="cdj-status cdj-status-unstarted" title="status '
                             'failed: cancelled while pending, it never ran">Cancelled '
                             'before start</span>')
        return mark_safe('<span class="cdj-status cdj-status-unstarted" title="status '
                         'failed: cancelled while waiting, not a failure">Cancelled before '
                         'finishing</span>')
    badge = status_badge(obj.status)
    if obj.cancelled and obj.status == S.RUNNING:
        return format_html('{} <span class="cdj-note cdj-cancelling">cancelling…</span>', badge)
    return badge
