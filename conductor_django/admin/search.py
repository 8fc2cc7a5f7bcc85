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

from django.db import connections
from django.db.models import CharField, Q, QuerySet
from django.db.models.functions import Cast

from ..models import Execution
from ..store.stats import uuid_ranges_are_prefixes

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


def id_prefix(term: str, using: str = "default") -> Q:
    """A filter on the ids starting with ``term``; matches nothing when ``term`` is no
    id prefix.

    Where the database orders UUIDs otherwise (MariaDB's native UUID type), it compares
    the id's text instead: correct, but a scan of the table.
    """
    found = id_range(term)
    if found is None:
        return Q(pk__in=[])
    low, high = found
    if uuid_ranges_are_prefixes(connections[using]):
        return Q(pk__gte=low, pk__lte=high)
    text = str(low)[: len(_dashed(term))]
    return Q(pk__in=_ids_starting_with(text, using))


def _dashed(term: str) -> str:
    """``term``'s hex digits as the start of a UUID's text (with its dashes)."""
    digits = term.strip().lower().replace("-", "")
    parts, at = [], 0
    for size in (8, 4, 4, 4, 12):
        if at >= len(digits):
            break
        parts.append(digits[at:at + size])
        at += size
    return "-".join(parts)


def _ids_starting_with(text: str, using: str) -> QuerySet:
    return (Execution.objects.using(using).order_by()
            .annotate(id_text=Cast("id", CharField(max_length=36)))
            .filter(id_text__startswith=text).values("pk"))


def search(queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
    """The execution list's search: exact matches only, so that every search is an index
    lookup (an id, an id prefix, a task name, a dedupe key or a key)."""
    term = search_term.strip()
    if not term:
        return queryset, False
    try:
        return queryset.filter(pk=uuid.UUID(term)), False
    except ValueError:
        return queryset.filter(Q(task_name=term) | Q(dedupe_key=term) | Q(key=term)
                               | id_prefix(term, queryset.db)), False
