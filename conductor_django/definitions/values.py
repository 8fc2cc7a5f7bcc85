"""Checks and conversions of plain values: seconds, JSON, aware datetimes, ids."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any


def to_seconds(value: float | int | timedelta | None, what: str) -> float | None:
    """Seconds from a number or a timedelta; ``ValueError`` when negative."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, not {value!r}")
    else:
        seconds = float(value)
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return seconds


def check_json(value: Any, what: str = "payload") -> Any:
    """Raise ``TypeError`` naming the offending type when ``value`` is not JSON."""
    check_json_text(value, what)
    return value


def check_json_text(value: Any, what: str = "payload") -> str:
    """``value`` as JSON text; ``TypeError`` naming the offending type when it is not JSON."""
    try:
        return json.dumps(value, allow_nan=False)
    except TypeError as exc:
        bad = _first_non_json(value)
        name = type(bad).__name__ if bad is not None else str(exc)
        raise TypeError(f"{what} is not JSON-serializable: {name} ({exc})") from None
    except ValueError as exc:
        raise TypeError(f"{what} is not JSON-serializable: {exc}") from None


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
    """A signal's name: a non-empty str of at most ``SIGNAL_NAME_LENGTH`` characters."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"signal name must be a non-empty str, got {name!r}")
    if len(name) > SIGNAL_NAME_LENGTH:
        raise ValueError(f"signal name must be at most {SIGNAL_NAME_LENGTH} characters, "
                         f"got {len(name)}")
    return name


def check_choices(choices: Any) -> list[str] | None:
    """``None``, or a list of 1 to ``MAX_CHOICES`` distinct non-empty short strings."""
    if choices is None:
        return None
    if not isinstance(choices, list | tuple) or not choices:
        raise ValueError(f"choices must be a non-empty list of short strings, got {choices!r}")
    if len(choices) > MAX_CHOICES:
        raise ValueError(f"choices may have at most {MAX_CHOICES} entries, got {len(choices)}")
    for choice in choices:
        if not isinstance(choice, str) or not choice.strip() or len(choice) > CHOICE_LENGTH:
            raise ValueError(f"every choice must be a non-empty str of at most {CHOICE_LENGTH} "
                             f"characters, got {choice!r}")
    if len(set(choices)) != len(choices):
        raise ValueError(f"choices must be distinct, got {list(choices)!r}")
    return list(choices)
