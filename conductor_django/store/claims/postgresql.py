"""PostgreSQL's claim: one statement per claim, row locks with ``SKIP LOCKED``.

The plain claim and a batch are one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR
UPDATE SKIP LOCKED)) RETURNING``: concurrent workers on any number of machines never
claim the same row and never wait for each other.

The claim with task limits is one call of the PL/pgSQL function
``conductor_django_claim`` (its text: ``store/sql/claim_function.sql``, installed by
the newest migration that copies it). It try-locks the limited tasks with runnable
rows (``pg_try_advisory_xact_lock(CLAIM_LOCK_CLASS, hashtext(name))``), then picks and
marks running the best rows of the plain and the locked tasks. A *try* lock never
waits and never deadlocks: a task another worker is claiming right now is left out of
this round, like a row under ``SKIP LOCKED``; tasks without a limit take no lock. Every
statement of a ``VOLATILE`` PL/pgSQL function takes a new snapshot under READ
COMMITTED, so what it counts after the locks includes every claim committed by the
locks' previous holders. The statements are static SQL, so the server plans them once
per connection, not once per claim. Called in autocommit mode the call is its own
transaction and the locks are released when it returns; inside a caller's transaction
they are kept until its end. The parameters that change only with the registered
tasks are passed as array literals built once (``_static``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from functools import lru_cache
from typing import Any

from django.db import transaction

from ...definitions.registry import KeyRule
from ..prepared import execute_prepared
from ..vendor import EXECUTION_TABLE
from .fragments import (
    CLAIMED_COLUMNS,
    NO_LIMIT,
    batch_pick,
    mark_running,
    plain_pick,
    take_turns,
    turn,
)

#: Appended to the pick: the picked rows stay locked until the commit, and rows another
#: claim holds are skipped.
SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

#: The executions' table the function reads (it is static SQL).
FUNCTION_TABLE = EXECUTION_TABLE

#: First key of the advisory locks that serialize claims of a limited task (the second
#: key is ``hashtext(task_name)``); any int4 unlikely to clash with yours.
CLAIM_LOCK_CLASS = 0x43444A31

CALL = (
    "SELECT * FROM conductor_django_claim(%s, %s, %s, %s::text[], %s::text[], %s::uuid[],"
    " %s::text[], %s::int[], %s::boolean[], %s::int[], %s::int[], %s::int[],"
    " %s::timestamptz[], %s::text[], %s)"
)


def lock_rows(
    connection: Any, table: str, worker_id: uuid.UUID, inner: str, params: list[Any],
    now: datetime,
) -> list[tuple]:
    """Mark the rows selected by ``inner`` (a ``SELECT id ... FOR UPDATE SKIP LOCKED``)
    running for ``worker_id``.

    ``id = ANY(ARRAY(subquery))`` evaluates the pick once and then reads the picked rows
    by primary key, whatever the planner's statistics say. (As ``id IN (subquery)`` or a
    join, stale statistics - a table that just grew from empty - could make it scan the
    whole table once per picked row.) The picked rows are locked and rechecked by the
    pick itself, so the outer statement filters on the id alone: a status condition
    there would tempt the planner into the partial claim index instead of the primary
    key.
    """
    update, head = mark_running(connection, table, worker_id, now)
    sql = f"{update} WHERE id = ANY(ARRAY({inner})) RETURNING {CLAIMED_COLUMNS}"
    return list(execute_prepared(connection, sql, head + params, fetch=True))


def claim(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str] = (), exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``limit`` runnable rows (no task limits apply), best first (the
    planner's statistics choose the claim index)."""
    inner, params = plain_pick(connection, table, queues, limit, now, skip, exclude,
                               lock=SKIP_LOCKED)
    return lock_rows(connection, table, worker_id, inner, params, now)


def claim_limited(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str], limits: dict[str, int],
    exclude: Sequence[str] = (), keyed: dict[str, KeyRule] | None = None,
) -> list[tuple]:
    """Claim up to ``limit`` rows (``CLAIMED_COLUMNS``) in one call of the claim function.

    ``limits``: tasks with ``concurrency=N`` alone; ``keyed``: tasks claimed key by key
    (each round across a task's keys begins after the key the previous claim ended on).
    """
    keyed = keyed or {}
    assert table == FUNCTION_TABLE, table
    turns = {name: turn(connection, table, name) for name in keyed}
    names = [*limits, *keyed]
    skipped, *static = _static(tuple(skip), tuple(limits.items()),
                               tuple((name, _static_rule(rule)) for name, rule in keyed.items()))
    params = [
        worker_id, now, limit, _literal(queues) if queues else None, skipped,
        _literal(exclude), *static,
        _literal([rule.since.isoformat() if rule is not None and rule.since is not None
                  else None for rule in (keyed.get(name) for name in names)]),
        _literal([turns.get(n, "") for n in names]),
        CLAIM_LOCK_CLASS,
    ]
    # The snapshot of each statement must follow the locks: READ COMMITTED.
    repeatable = not connection.in_atomic_block and _isolation(connection) != "read committed"
    with transaction.atomic(using=connection.alias) if repeatable else nullcontext():
        if repeatable:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        rows = list(execute_prepared(connection, CALL, params, fetch=True))
    take_turns(connection, table, keyed, rows)
    return rows


def claim_batch(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    name: str, size: int, timeout_seconds: float, now: datetime, fill: bool,
    exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``size`` runnable rows of the batch task ``name`` (``fill``: only a
    ready batch, see ``fragments.batch_pick``)."""
    inner, params = batch_pick(connection, table, queues, name, size, timeout_seconds, now,
                               fill, exclude, lock=SKIP_LOCKED)
    return lock_rows(connection, table, worker_id, inner, params, now)


# --- the claim function's parameters -----------------------------------------------------


def _static_rule(rule: KeyRule) -> tuple[int | None, int | None, int | None, int | None]:
    """What of a key rule stays the same from claim to claim (not ``since``)."""
    return (rule.concurrency, rule.key_concurrency, rule.task_starts, rule.key_starts)


@lru_cache(maxsize=64)
def _static(
    skip: tuple[str, ...], limits: tuple[tuple[str, int], ...],
    keyed: tuple[tuple[str, tuple[int | None, ...]], ...],
) -> tuple[str, ...]:
    """The parameters that change only with the registered tasks, as array literals
    (built once: adapting Python lists costs more per claim than the literals' text)."""
    names = [name for name, _ in limits] + [name for name, _ in keyed]
    rules = [None] * len(limits) + [rule for _, rule in keyed]
    return (
        _literal([*skip, *names]),
        _literal(names),
        _literal([*(cap for _, cap in limits),
                  *(rule[0] or NO_LIMIT for _, rule in keyed)]),
        _literal([rule is not None for rule in rules]),
        _literal([rule[1] if rule else None for rule in rules]),
        _literal([rule[2] if rule else None for rule in rules]),
        _literal([rule[3] if rule else None for rule in rules]),
    )


def _literal(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal of ``values`` (strings quoted; ``None``: NULL)."""
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        elif isinstance(value, bool):
            items.append("t" if value else "f")
        elif isinstance(value, int):
            items.append(str(value))
        else:
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            items.append(f'"{text}"')
    return "{" + ",".join(items) + "}"


def _isolation(connection: Any) -> str:
    """The configured isolation level of a PostgreSQL connection, e.g. ``"read committed"``."""
    level = getattr(connection, "isolation_level", None)
    return getattr(level, "name", "READ_COMMITTED").replace("_", " ").lower()
