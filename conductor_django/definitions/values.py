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
