"""What an operator may change at run time: pauses and a task's limits, as plain values.

``conductor.pause``/``resume`` stop and restart the claims of a queue or a task;
``conductor.set_limits`` overrides a task's ``concurrency``, ``key_concurrency`` and
``rate_limit`` (``None``: the code's value). The rows live in the database
(``models.Control``); this module holds what they mean without it: the checks of an
operator's values (a bad value is refused before anything is written) and the limits a
task has once its overrides are applied (``effective``, read by
``registry.claim_rules``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .options import RateLimit
from .tasks import Task

#: The largest limit an operator may set: a larger one is almost surely a typo (and
#: "no limit" is the code's ``None``, which ``None`` restores).
MAX_LIMIT = 1_000_000
#: The longest rate-limit window an operator may set, in seconds (one year).
MAX_RATE_SECONDS = 366 * 86400

#: What a pause does to the fire times of schedules that come due while it lasts.
SCHEDULE_MODES = ("queue", "skip")

#: The words a rate limit's period may use, in seconds.
UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}

_RATE = re.compile(
    r"^\s*(?P<count>\d+)\s*/\s*(?P<number>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)?"
    r"(?P<per_key>\s+per\s+key)?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """A task's overrides; ``None``: the code's value."""

    concurrency: int | None = None
    key_concurrency: int | None = None
    rate_limit: RateLimit | None = None

    @property
    def empty(self) -> bool:
        return self.concurrency is None and self.key_concurrency is None \
            and self.rate_limit is None


@dataclass(frozen=True, slots=True)
class Effective:
    """The limits a task runs with: its code's, each overridden where an operator set one."""

    concurrency: int | None
    key_concurrency: int | None
    rate_limit: RateLimit | None

    @property
    def keyed(self) -> bool:
        return self.key_concurrency is not None or self.rate_limit is not None


def effective(t: Task, limits: Limits | None) -> Effective:
    if limits is None:
        return Effective(t.concurrency, t.key_concurrency, t.rate_limit)
    return Effective(
        concurrency=t.concurrency if limits.concurrency is None else limits.concurrency,
        key_concurrency=(t.key_concurrency if limits.key_concurrency is None
                         else limits.key_concurrency),
        rate_limit=t.rate_limit if limits.rate_limit is None else limits.rate_limit,
    )


def check_limit(value: Any, what: str) -> int | None:
    """An operator's ``concurrency``/``key_concurrency``: ``None`` or an int in
    1..``MAX_LIMIT`` (a digit string from a form is accepted)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be a whole number from 1 to {MAX_LIMIT:,} or None, "
                        f"got {value!r}")
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"{what} must be from 1 to {MAX_LIMIT:,}, got {value!r}")
    return value


def parse_rate(value: Any) -> RateLimit | None:
    """An operator's ``rate_limit``: ``None``, a ``RateLimit`` or a text such as
    ``"10/m"``, ``"100/30s"``, ``"5/minute per key"``."""
    if value is None or isinstance(value, RateLimit):
        rate = value
    elif isinstance(value, str):
        match = _RATE.match(value)
        unit = (match.group("unit") or "s").lower() if match else ""
        if match is None or unit not in UNITS:
            raise ValueError(f"rate_limit {value!r} is not a rate such as '10/m', "
                             "'100/30s' or '5/minute per key' (units: s, m, h, d)")
        number = float(match.group("number") or 1)
        try:
            rate = RateLimit(int(match.group("count")), number * UNITS[unit],
                             per_key=bool(match.group("per_key")))
        except ValueError as exc:
            raise ValueError(f"rate_limit {value!r}: {exc}") from None
    else:
        raise TypeError(f"rate_limit must be a RateLimit, a text such as '10/m' or None, "
                        f"got {value!r}")
    if rate is not None:
        if rate.count > MAX_LIMIT:
            raise ValueError(f"rate_limit count must be at most {MAX_LIMIT:,}, "
                             f"got {rate.count}")
        if not math.isfinite(rate.seconds) or rate.seconds > MAX_RATE_SECONDS:
            raise ValueError(f"rate_limit window must be at most {MAX_RATE_SECONDS} seconds, "
                             f"got {rate.seconds}")
    return rate


def rate_text(rate: RateLimit | None) -> str:
    """``RateLimit(10, 60)`` as ``"10/60s"`` (``parse_rate`` reads it back); ``""``: none."""
    if rate is None:
        return ""
    seconds = f"{rate.seconds:g}"
    return f"{rate.count}/{seconds}s" + (" per key" if rate.per_key else "")


def check_limits(t: Task, concurrency: Any, key_concurrency: Any, rate_limit: Any) -> Limits:
    """The overrides ``set_limits`` may store for ``t``; raises before anything is written."""
    limits = Limits(
        concurrency=check_limit(concurrency, f"concurrency of task {t.name!r}"),
        key_concurrency=check_limit(key_concurrency, f"key_concurrency of task {t.name!r}"),
        rate_limit=parse_rate(rate_limit),
    )
    if t.batch is not None and not limits.empty:
        raise ValueError(f"task {t.name!r} is a batch task: it has no concurrency, "
                         "key_concurrency or rate_limit to change (a batch runs as one unit)")
    return limits


def check_schedules(value: Any) -> str:
    if value not in SCHEDULE_MODES:
        raise ValueError(f"schedules must be 'queue' (fire times wait for the resume) or "
                         f"'skip' (fire times that come due are skipped), got {value!r}")
    return str(value)
