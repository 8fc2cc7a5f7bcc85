"""Cron expressions: validation and DST-safe fire times (pure time arithmetic, no database).

Expressions are croniter's: five fields, or six with seconds last (seven, with a year,
are refused; ``second_field_trap`` names six-field expressions that fire every second of
a minute by mistake). They are read in
the wall-clock time of a timezone (``zoneinfo``) and turned into aware UTC instants
with these rules on the days the clocks change:

* A wall time skipped when the clocks go forward (02:30 on a spring-forward night in
  Europe) fires once, shifted by the jump (at 03:30 summer time), unless that instant
  is already a regular fire time: nothing is skipped, nothing fires twice.
* A wall time that occurs twice when the clocks go back fires once, at its first
  occurrence, so a daily job runs once. Expressions that fire every hour (hour field
  ``*``) also fire during the repeated hour, so they keep their rhythm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from .values import check_json, check_text, unstorable

_MAX_CANDIDATES = 100_000


def check_cron(expr: Any) -> str:
    """Return ``expr`` when croniter accepts it, else ``ValueError`` quoting it.

    Seven fields are refused: croniter would read the seventh as a year and the first
    as minutes, while the expressions with seven fields people copy (Quartz, Spring)
    start with seconds, so they would fire every second of some minute."""
    if (not isinstance(expr, str) or not expr.strip() or unstorable(expr)
            or not croniter.is_valid(expr)):
        raise ValueError(f"invalid cron expression {expr!r}")
    if len(expr.split()) > 6:
        raise ValueError(
            f"invalid cron expression {expr!r}: it has {len(expr.split())} fields; use five "
            "(minute hour day month weekday) or six with seconds last (Quartz and Spring "
            "put seconds first and a year last: not supported)")
    return expr


def second_field_trap(expr: str) -> str | None:
    """Why a valid six-field expression reads like a mistake, or ``None``.

    The seconds field comes last here: ``"0 */5 * * * *"`` (Quartz/Spring: every five
    minutes) means every second of minute 0 of every fifth hour, 60 runs in a row. An
    expression whose seconds field is every second while its other fields are not all
    ``*`` fires 60 times in each minute it matches, which is seldom what was meant
    (``"* * * * * *"``, every second, is taken as meant)."""
    fields = expr.split()
    if len(fields) != 6 or all(f == "*" for f in fields[:5]):
        return None
    try:
        seconds = croniter(expr).expanded[5]
    except (CroniterError, ValueError, IndexError):
        return None
    if seconds != ["*"] and len(seconds) < 60:
        return None
    return (f"cron expression {expr!r} fires every second of each minute it matches (60 "
            "runs in a row): the seconds field is the sixth, last one. For a "
            "seconds-first (Quartz, Spring) expression, move its first field to the end "
            f"(e.g. {' '.join([*fields[1:], fields[0]])!r}), or use five fields.")


def validate(expr: Any) -> str:
    """Return ``expr`` if it is a valid cron expression (at most 200 characters) that
    fires at some time.

    Raises ``ValueError`` quoting it otherwise (``"0 0 30 2 *"`` is well-formed but
    never fires, so it is refused too).
    """
    check_cron(expr)
    try:
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except (CroniterError, ValueError, OverflowError):
        raise ValueError(f"invalid cron expression {expr!r}: it never fires") from None
    if len(expr) > 200:
        raise ValueError(f"cron expression {expr!r} is longer than 200 characters")
    return expr


@lru_cache(maxsize=256)
def zone(name: str | None) -> ZoneInfo:
    """The ``ZoneInfo`` called ``name``; ``None`` or ``""`` means ``settings.TIME_ZONE``."""
    if not name:
        from django.conf import settings

        name = settings.TIME_ZONE or "UTC"
    if not isinstance(name, str):
        raise ValueError(f"timezone must be a str such as 'Europe/Paris', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None


def check_timezone(name: Any) -> str | None:
    """Return ``name`` if it is ``None``/``""`` or a known IANA timezone of at most 64
    characters, else ``ValueError``."""
    if name is None or name == "":
        return name
    if not isinstance(name, str):
        raise ValueError(f"timezone must be a str such as 'Europe/Paris', got {name!r}")
    if unstorable(name):
        raise ValueError(f"unknown timezone {name!r}")
    zone(name)
    if len(name) > 64:
        raise ValueError(f"timezone {name!r} is longer than 64 characters")
    return name


@lru_cache(maxsize=256)
def _every_hour(expr: str) -> bool:
    """Whether the hour field matches every hour (the job keeps its rhythm at night)."""
    hours = croniter(expr).expanded[1]
    return hours == ["*"] or len(hours) == 24


def _offset(local: datetime) -> timedelta:
    """The UTC offset of an aware datetime (never ``None``: a ``ZoneInfo`` is attached)."""
    return cast(timedelta, local.utcoffset())


def _ambiguous(naive: datetime, tz: ZoneInfo) -> bool:
    """Whether a wall time occurs twice (the clocks went back)."""
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    return _offset(first) > _offset(second)


def _instants(naive: datetime, tz: ZoneInfo, every_hour: bool) -> tuple[list[datetime], bool]:
    """The UTC instants a local wall time fires at, and whether it lies in a gap.

    A wall time that exists once has one instant. In a spring-forward gap it has one,
    shifted by the jump (``fold=0`` reads it with the old offset). In a repeated hour it
    has its first occurrence, and the second one too for every-hour expressions.
    """
    first = naive.replace(tzinfo=tz, fold=0)
    second = naive.replace(tzinfo=tz, fold=1)
    offset_first, offset_second = _offset(first), _offset(second)
    if offset_first == offset_second:
        return [first.astimezone(UTC)], False
    if offset_first < offset_second:
        return [first.astimezone(UTC)], True
    if every_hour:
        return [first.astimezone(UTC), second.astimezone(UTC)], False
    return [first.astimezone(UTC)], False


def _repeat_start(local: datetime, tz: ZoneInfo) -> datetime | None:
    """If ``local`` is in the first pass of a repeated hour: the wall time just before it."""
    naive = local.replace(tzinfo=None)
    if local.fold == 1 or not _ambiguous(naive, tz):
        return None
    repeat = _offset(local.replace(fold=0)) - _offset(local.replace(fold=1))
    lo, hi = naive - repeat, naive  # lo is before the repeated hour, hi inside it
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if _ambiguous(mid, tz):
            hi = mid
        else:
            lo = mid
    return lo


def next_fire(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first fire time of ``expr`` in ``tz`` strictly after ``after`` (aware, UTC)."""
    if after.tzinfo is None:
        raise ValueError("next_fire needs an aware datetime")
    every_hour = _every_hour(expr)
    local = after.astimezone(tz)
    best = _scan(expr, tz, after, local.replace(tzinfo=None), every_hour)
    start = _repeat_start(local, tz) if every_hour else None
    if start is not None:
        # In the first pass of a repeated hour, the wall times between its start and
        # ``after`` come back in the second pass; the earliest of them may come first.
        naive = croniter(expr, start).get_next(datetime)
        if _ambiguous(naive, tz):
            again = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
            if again > after and (best is None or again < best):
                best = again
    if best is None:
        raise ValueError(f"cron expression {expr!r} has no fire time after {after.isoformat()}")
    return best


def next_fire_times(
    expr: str, timezone: str | None = None, *, start: datetime | None = None, count: int = 3
) -> list[datetime]:
    """The next ``count`` fire times of ``expr`` after ``start`` (default: now), aware UTC.

    What the admin shows beside an expression, so that a user sees what it means:
    ``"* * * * * */10"`` gives three instants ten seconds apart, ``"*/10 * * * * *"``
    three instants one second apart. ``timezone`` is a zoneinfo name (default
    ``settings.TIME_ZONE``). Raises ``ValueError`` for an invalid expression or timezone.
    """
    validate(expr)
    tz = zone(check_timezone(timezone))
    after = start or datetime.now(UTC)
    times: list[datetime] = []
    for _ in range(count):
        after = next_fire(expr, tz, after)
        times.append(after)
    return times


def _scan(
    expr: str, tz: ZoneInfo, after: datetime, start: datetime, every_hour: bool
) -> datetime | None:
    """The earliest instant after ``after`` of the wall times following ``start``."""
    candidates = croniter(expr, start)
    best: datetime | None = None
    for _ in range(_MAX_CANDIDATES):
        try:
            naive = candidates.get_next(datetime)
        except (CroniterError, ValueError, OverflowError):
            break
        instants, in_gap = _instants(naive, tz, every_hour)
        for instant in instants:
            if instant > after and (best is None or instant < best):
                best = instant
        # Outside gaps each kind of instant (first or second occurrence) grows with the
        # wall time, and one already behind ``after`` (a first occurrence while ``after``
        # is in the repeated hour's second pass) only comes back after the repeated hour:
        # once this wall time has nothing before ``best``, no later one has.
        if not in_gap and best is not None and all(i >= best or i <= after for i in instants):
            return best
    return best


# --- the one schedule validator (Cron, conductor.schedule, the admin's form) -----------


def check_schedule_name(name: Any, what: str = "schedule") -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"{what} name must be a non-empty str of at most 200 characters, "
                         f"got {name!r}")
    return check_text(name, f"{what} name")


def check_schedule(name: Any, expr: Any, payload: Any = None, tz: Any = None, *,
                   what: str = "schedule") -> None:
    """Validate a schedule (a ``Cron`` has an optional name); raises ``ValueError`` or
    ``TypeError`` before anything is written."""
    if name is not None or what != "Cron":
        check_schedule_name(name, what)
    validate(expr)
    check_json(payload, f"{what} payload")
    check_timezone(tz)


# --- cron schedules of a task (see conductor_django.scheduler) ---------------------------


@dataclass(frozen=True)
class Cron:
    """A static cron schedule of a task: ``task(cron=[Cron("0 9 * * *", name="morning")])``.

    ``expr`` is a croniter expression (five fields, or six with seconds last), read in
    ``timezone`` (default ``settings.TIME_ZONE``). ``name`` is the schedule's name and
    the handler's ``event.name`` (default: the expression); ``payload`` its
    ``event.payload``. Invalid values raise ``ValueError``/``TypeError`` at once.
    """

    expr: str
    name: str | None = None
    payload: Any = None
    timezone: str | None = None

    def __post_init__(self) -> None:
        check_schedule(self.name, self.expr, self.payload, self.timezone, what="Cron")

    @property
    def schedule_name(self) -> str:
        return self.name or self.expr


def as_crons(cron: str | Cron | Sequence[str | Cron] | None, task_name: str) -> tuple[Cron, ...]:
    """Normalize ``task(cron=...)``; ``ValueError`` on bad expressions or repeated names."""
    if cron is None:
        return ()
    items = [cron] if isinstance(cron, str | Cron) else list(cron)
    crons = tuple(c if isinstance(c, Cron) else Cron(c) for c in items)
    names = [c.schedule_name for c in crons]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"task {task_name!r} has several cron schedules named {repeated}; "
                         "give each Cron its own name")
    return crons
