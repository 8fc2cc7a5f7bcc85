"""Waiting for an execution to finish without blocking an event loop.

On PostgreSQL with psycopg 3, ``finished`` opens an async connection (psycopg's
``AsyncConnection``, found through Django's backend) that listens on
``conductor_done``, announced by the trigger of migration 0016 when an execution
finishes (on ``CONDUCTOR["LISTEN_DATABASE"]`` when that is set: ``store.pooling``);
elsewhere there is nothing to listen to and the caller polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from django.db import connections

from . import pooling
from .vendor import dialect

DONE_CHANNEL = "conductor_done"


class FinishedNotices:
    """The ``conductor_done`` notifications of one async connection."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    async def wait(self, execution_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``execution_id`` to be announced finished."""
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                async for note in self._raw.notifies():
                    if note.payload == execution_id:
                        return True
        except TimeoutError:
            pass
        return False


@asynccontextmanager
async def finished(using: str) -> AsyncIterator[FinishedNotices | None]:
    """Listen for finished executions on ``using``; ``None`` where LISTEN is not available
    (then poll)."""
    connection: Any = connections[using]
    alias = pooling.listen_alias(using)
    if not dialect(connection).listen_supported(connection) or alias is None:
        yield None
        return
    connection = connections[alias]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)  # Django's sync cursor classes
    raw = await connection.Database.AsyncConnection.connect(**params, autocommit=True)
    try:
        await raw.execute(f"LISTEN {DONE_CHANNEL}")
        yield FinishedNotices(raw)
    finally:
        await raw.close()
