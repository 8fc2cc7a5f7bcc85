"""PostgreSQL: the claim with task limits as one call of ``conductor_django_claim``.

The function (migration 0017_claim_function) does in one round trip what
``claim.claim_limited`` describes: it try-locks the limited tasks with runnable rows
(``pg_try_advisory_xact_lock(CLAIM_LOCK_CLASS, hashtext(name))``), then picks and marks
running the best rows of the plain and the locked tasks. Every statement of a
``VOLATILE`` PL/pgSQL function takes a new snapshot under READ COMMITTED, so what it
counts after the locks includes every claim committed by the locks' previous holders.
The statements are static SQL, so the server plans them once per connection, not once
per claim. Called in autocommit mode the call is its own transaction and the locks are
released when it returns; inside a caller's transaction they are kept until its end.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.db import transaction

from ..definitions.registry import KeyRule
from .prepared import execute_prepared

#: The executions' table the function reads (it is static SQL).
FUNCTION_TABLE = "conductor_django_execution"

#: First key of the advisory locks that serialize claims of a limited task (the second
#: key is ``hashtext(task_name)``); any int4 unlikely to clash with yours.
CLAIM_LOCK_CLASS = 0x43444A31

#: A limit that never binds (the int4 maximum), where a task has none.
NO_LIMIT = 2**31 - 1

CALL = (
    "SELECT * FROM conductor_django_claim(%s, %s, %s, %s::text[], %s::text[], %s::uuid[],"
    " %s::text[], %s::int[], %s::boolean[], %s::int[], %s::int[], %s::int[],"
    " %s::timestamptz[], %s::text[], %s)"
)


def claim_by_function(
    connection: Any, worker_id: uuid.UUID, queues: Sequence[str] | None, limit: int,
    now: datetime, skip: Sequence[str], limits: dict[str, int], exclude: Sequence[str],
    keyed: dict[str, KeyRule], turns: dict[str, str],
) -> list[tuple]:
    """Claim up to ``limit`` rows (``claim.CLAIMED_COLUMNS``) in one statement.

    ``limits``: tasks with ``concurrency=N`` alone; ``keyed``: tasks claimed key by key;
    ``turns``: per keyed task, the key after which its round across keys begins."""
    names = [*limits, *keyed]
    rules = [keyed.get(name) for name in names]
    params = [
        worker_id, now, limit, list(queues) if queues else None,
        [*skip, *names], [uuid.UUID(str(i)) for i in exclude],
        names,
        [*limits.values(), *(r.concurrency or NO_LIMIT for r in keyed.values())],
        [r is not None for r in rules],
        [r.key_concurrency if r else None for r in rules],
        [r.task_starts if r else None for r in rules],
        [r.key_starts if r else None for r in rules],
        [r.since if r else None for r in rules],
        [turns.get(n, "") for n in names],
        CLAIM_LOCK_CLASS,
    ]
    # The snapshot of each statement must follow the locks: READ COMMITTED.
    repeatable = not connection.in_atomic_block and _isolation(connection) != "read committed"
    with transaction.atomic(using=connection.alias) if repeatable else nullcontext():
        if repeatable:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return list(execute_prepared(connection, CALL, params, fetch=True))


def _isolation(connection: Any) -> str:
    """The configured isolation level of a PostgreSQL connection, e.g. ``"read committed"``."""
    level = getattr(connection, "isolation_level", None)
    return getattr(level, "name", "READ_COMMITTED").replace("_", " ").lower()
