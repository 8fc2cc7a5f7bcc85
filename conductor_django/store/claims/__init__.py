"""The claim: the statements that pick runnable executions and mark them running.

One module per database says its whole claim - plain, with task limits and keys, and
a batch - and ``fragments`` holds what they share. ``home(connection)`` picks the
module by the dialect's name; the entry points below are what the state machine calls
(``state/execution.py``). Every claim takes a new fencing token (``lease = lease +
1``) and returns raw rows (``CLAIMED_COLUMNS``), which ``state.execution`` turns into
``Claimed``.

* ``sqlite``: one ``UPDATE ... WHERE id IN (SELECT ...) RETURNING`` under the
  database write lock.
* ``postgresql``: one ``UPDATE ... WHERE id = ANY(ARRAY(SELECT ... FOR UPDATE SKIP
  LOCKED)) RETURNING``; with task limits, one call of the PL/pgSQL function
  ``conductor_django_claim`` (``store/sql/claim_function.sql``).
* ``mysql`` (MySQL 8, MariaDB): ``SELECT ... FOR UPDATE SKIP LOCKED``, then ``UPDATE``
  by id in one transaction; task limits under named locks (``GET_LOCK``).

With task limits (``concurrency=N``, ``key_concurrency=N``, ``rate_limit``) the count
and the claim must not interleave with another worker's claim of the same task, or both
could see N-1 running and start one each; each module says how it prevents that.
Finishing executions only lower the count, so a stale count errs on the safe side.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from ...definitions.registry import KeyRule
from ..vendor import dialect
from . import mysql, postgresql, sqlite
from .fragments import CLAIMED_COLUMNS

__all__ = ["CLAIMED_COLUMNS", "HOMES", "claim", "claim_batch", "claim_limited", "home"]


class Home(Protocol):
    """What each database's module provides (its signatures: ``claim``,
    ``claim_limited`` and ``claim_batch`` below)."""

    def claim(self, connection: Any, table: str, worker_id: uuid.UUID,
              queues: Sequence[str] | None, limit: int, now: datetime,
              skip: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[tuple]: ...

    def claim_limited(self, connection: Any, table: str, worker_id: uuid.UUID,
                      queues: Sequence[str] | None, limit: int, now: datetime,
                      skip: Sequence[str], limits: dict[str, int],
                      exclude: Sequence[str] = (),
                      keyed: dict[str, KeyRule] | None = None) -> list[tuple]: ...

    def claim_batch(self, connection: Any, table: str, worker_id: uuid.UUID,
                    queues: Sequence[str] | None, name: str, size: int,
                    timeout_seconds: float, now: datetime, fill: bool,
                    exclude: Sequence[str] = ()) -> list[tuple]: ...


#: Each database's claim, by the dialect's name.
HOMES: dict[str, Home] = {"sqlite": sqlite, "postgresql": postgresql, "mysql": mysql}


def home(connection: Any) -> Home:
    """The module of the claim on ``connection``'s database."""
    return HOMES[dialect(connection).vendor]


def claim(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str] = (), exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``limit`` runnable rows for ``worker_id`` (no task limits apply), best
    priority first, then the oldest; ``skip``: task names left out; ``exclude``:
    execution ids left out."""
    return home(connection).claim(connection, table, worker_id, queues, limit, now,
                                  skip, exclude)


def claim_limited(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    limit: int, now: datetime, skip: Sequence[str], limits: dict[str, int],
    exclude: Sequence[str] = (), keyed: dict[str, KeyRule] | None = None,
) -> list[tuple]:
    """The claim when some tasks have limits: ``limits``, tasks with ``concurrency=N``
    alone; ``keyed``, tasks claimed key by key (``key_concurrency``, ``rate_limit``,
    with or without ``concurrency``). The plain candidates (every task without a
    limit, as in ``claim``) and, per limited task, its best runnable rows within what
    its limits leave; the best ``limit`` of those are claimed, the first rows of every
    key before the second rows of any key (the round-robin across keys)."""
    return home(connection).claim_limited(connection, table, worker_id, queues, limit, now,
                                          skip, limits, exclude, keyed)


def claim_batch(
    connection: Any, table: str, worker_id: uuid.UUID, queues: Sequence[str] | None,
    name: str, size: int, timeout_seconds: float, now: datetime, fill: bool,
    exclude: Sequence[str] = (),
) -> list[tuple]:
    """Lock up to ``size`` runnable rows of the batch task ``name``; with ``fill``, only
    when the batch is ready: ``size`` rows are runnable, or the oldest has waited
    ``timeout_seconds``."""
    return home(connection).claim_batch(connection, table, worker_id, queues, name, size,
                                        timeout_seconds, now, fill, exclude)
