"""Atomic steps write to one database only: the one that holds conductor's tables.

``ctx.step(name, fn, atomic=True)`` commits ``fn``'s writes and the step record in one
transaction, which can only span one database. While ``fn`` runs, ``only_database``
watches this thread's connections to every other database and stops the first write
to any of them with ``ImproperlyConfigured`` naming the model, before the statement
runs; the step's transaction then rolls back, so nothing is written anywhere.
Reads from other databases are allowed: they cannot happen twice in a way that shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

#: The table a data-changing statement writes to (Django quotes it with " or `).
_WRITE = re.compile(
    r"""^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+["`]?([\w.]+)""",
    re.IGNORECASE,
)


def written_table(sql: str) -> str | None:
    """The table ``sql`` writes to, or None for a statement that writes nothing."""
    match = _WRITE.match(sql)
    return match.group(1) if match else None


def model_label(table: str) -> str:
    """``app_label.Model`` of the model whose table is ``table`` (else the table name)."""
    for model in apps.get_models(include_auto_created=True):
        if model._meta.db_table == table:
            return model._meta.label
    return table


@contextmanager
def only_database(using: str, what: str) -> Iterator[None]:
    """Refuse writes to any database but ``using`` on this thread within the block."""

    def guard(alias: str):
        def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            table = written_table(sql)
            if table is not None:
                raise ImproperlyConfigured(
                    f"{what} writes to {model_label(table)}, which goes to database "
                    f"{alias!r}; an atomic step may only write to {using!r}, the database "
                    "of conductor's tables (check your database router)"
                )
            return execute(sql, params, many, context)

        return wrapper

    with ExitStack() as stack:
        for alias in connections.settings:
            if alias != using:
                stack.enter_context(connections[alias].execute_wrapper(guard(alias)))
        yield
