"""Checks and conversions of plain values: seconds, JSON, text, integers, aware datetimes, ids.

This is the one validation layer for everything that reaches the database: every
public entry point (``invoke``, ``invoke_many``, ``emit``, ``schedule``, ``cancel``,
``wait``, ``task(...)``, the admin's forms, the worker's options) checks its values
here before it writes anything, so bad input gets a clear ``ValueError`` or
``TypeError`` naming the argument and never a database error (which would abort the
caller's transaction on PostgreSQL). The rules (docs/concepts.md, "What is refused"):

* **Integers** fit their column (``priority``: a 32-bit ``integer``).
* **Durations** are finite, not negative and at most ``MAX_SECONDS`` (100 years), so
  that now + the duration is a datetime every database can store.
* **Text** holds no NUL character and no lone surrogate (PostgreSQL stores neither)
  and fits its column (task and event names 200 characters, queues 100, dedupe keys
  and step names 255).
* **JSON** (payloads, results, step results) is JSON (no NaN or infinity), nests at
  most ``MAX_JSON_DEPTH`` levels and holds no NUL or lone surrogate in any string or
  key. Refused, not escaped: what is stored is exactly what was given.

What cannot be refused - an exception's message, a cancel reason raised by a handler,
a log line - is made storable instead (``storable_text``: a NUL becomes ``\\x00``, a
lone surrogate ``\\udXXX``).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

#: The range of a 32-bit ``integer`` column (``priority``).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Longest duration accepted anywhere (delay, throttle, debounce, timeout, backoff, sleep).
MAX_SECONDS = 100 * 366 * 86400
#: Deepest nesting of a stored JSON value: MariaDB's ``JSON_VALID`` (the check constraint
#: of a JSON column there) refuses 32 levels, so a deeper value would be a database
#: error on MariaDB only; the same limit holds on every database.
MAX_JSON_DEPTH = 31
#: Column lengths of the names conductor stores.
NAME_LENGTH = 200  # task names, event names, schedule names
QUEUE_LENGTH = 100
KEY_LENGTH = 255  # dedupe keys
FLOW_KEY_LENGTH = 200  # flow-control keys (invoke(key=...))
STEP_NAME_LENGTH = 255

#: ``json.dumps(value, allow_nan=False)`` without building an encoder per call.
_ENCODER = json.JSONEncoder(allow_nan=False)

#: A surrogate code point in a Python str is always "lone": UTF-8 cannot encode it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored (a NUL or a lone surrogate), or ``None``."""
    if "\x00" in text:
        return "contains a NUL character (\\x00)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone surrogate (not valid Unicode)"
    return None


def storable_text(text: str) -> str:
    """``text`` with every NUL written ``\\x00`` and every lone surrogate ``\\udXXX``."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def safe_str(value: Any) -> str:
    """``str(value)`` made storable; never raises (an ``__str__`` that raises is named)."""
    try:
        text = value if isinstance(value, str) else str(value)
    except BaseException as exc:  # noqa: BLE001 - any __str__ may fail in any way
        try:
            name = type(value).__name__
        except BaseException:  # noqa: BLE001
            name = "object"
        return f"<unprintable {name}: str() raised {type(exc).__name__}>"
    if not isinstance(text, str):  # a str subclass or a __str__ returning junk
        return "<unprintable value>"
    return storable_text(text)


def check_text(value: Any, what: str, max_length: int | None = None, *,
               allow_empty: bool = False) -> str:
    """``value`` if it is a storable str (``max_length`` at most), else ``ValueError``."""
    if (not isinstance(value, str) or (not value and not allow_empty)
            or (max_length is not None and len(value) > max_length)):
        kind = "a str" if allow_empty else "a non-empty str"
        limit = "" if max_length is None else f" of at most {max_length} characters"
        raise ValueError(f"{what} must be {kind}{limit}, got {_short(value)}")
    why = unstorable(value)
    if why is not None:
        raise ValueError(f"{what} {why}: {_short(storable_text(value))}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


#: ``repr(value)`` cut to 60 characters, for error messages that quote a value.
short_repr = _short


def check_int(value: Any, what: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    """``value`` if it is an int (not a bool) within ``low``..``high``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {_short(value)}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high}, got {_short(value)}")
    return value


def to_seconds(value: float | int | timedelta | None, what: str) -> float | None:
    """Seconds from a number or a timedelta; ``ValueError`` when negative, not finite
    or longer than ``MAX_SECONDS``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, "
                        f"not {_short(value)}")
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    if math.isnan(seconds):
        raise ValueError(f"{what} must be a number of seconds, got NaN")
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {_short(value)}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"{what} must be at most {MAX_SECONDS} seconds (100 years), "
                         f"got {_short(value)}")
    return seconds


def check_json(value: Any, what: str = "payload") -> Any:
    """Raise ``TypeError`` naming the offending type when ``value`` is not JSON, and
    ``ValueError`` when it nests too deep or holds text that cannot be stored."""
    check_json_text(value, what)
    return value


def check_json_text(value: Any, what: str = "payload") -> str:
    """``value`` as JSON text, checked as ``check_json`` says."""
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise ValueError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    except TypeError as exc:
        bad = _first_non_json(value)
        name = type(bad).__name__ if bad is not None else str(exc)
        raise TypeError(f"{what} is not JSON-serializable: {name} ({exc})") from None
    except ValueError as exc:
        if "Circular reference" in str(exc):
            raise ValueError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels "
                             "(it contains itself)") from None
        raise TypeError(f"{what} is not JSON-serializable: {exc}") from None
    # The text is ASCII (non-ASCII is escaped): only \u escapes can hide a NUL or a
    # surrogate, and only as many brackets as there are can nest.
    if "\\u0000" in text or "\\ud" in text or text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        problem = _json_problem(value)
        if problem is not None:
            raise ValueError(f"{what} {problem}")
    return text


def _json_problem(value: Any) -> str | None:
    """Why the JSON value ``value`` cannot be stored (depth, text), walked without recursion."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            why = unstorable(item)
            if why is not None:
                return f"{'at ' + where + ' ' if where else ''}{why}"
        elif isinstance(item, list | tuple | dict):
            if depth >= MAX_JSON_DEPTH:
                return f"nests deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, dict):
                for key, sub in item.items():
                    if isinstance(key, str):
                        why = unstorable(key)
                        if why is not None:
                            return f"has a key at {where or 'the top'} that {why}"
                    stack.append((sub, depth + 1, f"{where}[{key!r}]"))
            else:
                stack.extend((sub, depth + 1, f"{where}[{n}]") for n, sub in enumerate(item))
    return None


def _first_non_json(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return None
    if isinstance(value, list | tuple):
        for item in value:
            bad = _first_non_json(item)
            if bad is not None:
                return bad
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return key
            bad = _first_non_json(item)
            if bad is not None:
                return bad
        return None
    return value


def check_aware(value: datetime, what: str = "run_at") -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime (got naive {value.isoformat()})")
    try:
        value.astimezone(UTC)  # what the database stores
    except OverflowError:
        raise ValueError(f"{what} is out of the range of storable datetimes: "
                         f"{value.isoformat()}") from None
    return value


def as_uuid(execution_id: Any) -> uuid.UUID | None:
    if isinstance(execution_id, uuid.UUID):
        return execution_id
    try:
        return uuid.UUID(str(execution_id))
    except (ValueError, TypeError, AttributeError):
        return None


#: The longest signal name (``Signal.name``) and the longest entry of ``choices``.
SIGNAL_NAME_LENGTH = 200
CHOICE_LENGTH = 100
MAX_CHOICES = 20


def check_signal_name(name: Any) -> str:
    """A signal's name: a non-empty storable str of at most ``SIGNAL_NAME_LENGTH``
    characters (no NUL, no lone surrogate)."""
    if isinstance(name, str) and len(name) > SIGNAL_NAME_LENGTH:
        raise ValueError(f"signal name must be at most {SIGNAL_NAME_LENGTH} characters, "
                         f"got {len(name)}")
    return check_text(name, "signal name")


def check_choices(choices: Any) -> list[str] | None:
    """``None``, or a list of 1 to ``MAX_CHOICES`` distinct non-empty short storable
    strings."""
    if choices is None:
        return None
    if not isinstance(choices, list | tuple) or not choices:
        raise ValueError(f"choices must be a non-empty list of short strings, got "
                         f"{_short(choices)}")
    if len(choices) > MAX_CHOICES:
        raise ValueError(f"choices may have at most {MAX_CHOICES} entries, got {len(choices)}")
    for choice in choices:
        if not isinstance(choice, str) or not choice.strip() or len(choice) > CHOICE_LENGTH:
            raise ValueError(f"every choice must be a non-empty str of at most {CHOICE_LENGTH} "
                             f"characters, got {_short(choice)}")
        check_text(choice, "choice")  # no NUL, no lone surrogate: it is sent back as text
    if len(set(choices)) != len(choices):
        raise ValueError(f"choices must be distinct, got {_short(list(choices))}")
    return list(choices)
