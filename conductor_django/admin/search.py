"""Search by the first characters of an execution id (the short id the list shows).

A UUID prefix is a range of UUIDs: ``3f2a`` is every id from
``3f2a0000-0000-0000-0000-000000000000`` to ``3f2affff-ffff-ffff-ffff-ffffffffffff``,
so the search is a range scan of the primary key on every database (PostgreSQL orders
``uuid`` by its bytes; SQLite and MySQL store it as 32 hex characters), however big
the table.
"""

from __future__ import annotations

import re
import uuid

from django.db.models import Q

#: The shortest prefix searched for (shorter ones would match too many rows to mean
#: anything): four hex digits, as ``git`` does.
MIN_PREFIX = 4
_HEX = re.compile(r"[0-9a-f]+")


def id_range(term: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """The first and last UUID starting with ``term`` (hex digits, dashes anywhere,
    case ignored), or ``None`` when ``term`` is no such prefix."""
    digits = term.strip().lower().replace("-", "")
    if not (MIN_PREFIX <= len(digits) <= 32) or not _HEX.fullmatch(digits):
        return None
    return (uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f")))


def id_prefix(term: str, field: str = "pk") -> Q:
    """A filter on the ids starting with ``term``; matches nothing when ``term`` is no
    id prefix."""
    found = id_range(term)
    if found is None:
        return Q(pk__in=[])
    low, high = found
    return Q(**{f"{field}__gte": low, f"{field}__lte": high})
