"""The API for async code (async views, ASGI consumers): ``ainvoke``, ``acancel``,
``aget`` and ``await_result``.

Starting and cancelling are single writes, run through ``asgiref``'s
``sync_to_async`` as Django's own async ORM calls are. ``await_result`` never holds a
thread while it waits: on PostgreSQL it listens for the execution's end on an async
connection (``store.wakeup.finished``: the NOTIFY of a finished execution) and reads
the row when it is announced (and every ``RECHECK`` seconds in case a notification
was missed); on other databases it reads the row at growing intervals, sleeping with
``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.db import router

from . import api
from .definitions.tasks import Task
from .definitions.values import to_seconds
from .models import Execution
from .store import wakeup

#: Seconds between reads of the row while listening (a missed notification costs this).
RECHECK = 5.0
#: The first and the longest pause between two reads of the row when polling.
FIRST_PAUSE, LONGEST_PAUSE = 0.01, 0.25


async def ainvoke(task: str | Task, payload: Any = None, **options: Any) -> str:
    """Start an execution; see ``conductor_django.invoke`` (same options and errors)."""
    return await sync_to_async(api.invoke)(task, payload, **options)


async def acancel(execution_id: Any, reason: str | None = None) -> bool:
    """Cancel an execution; see ``conductor_django.cancel``."""
    return await sync_to_async(Execution.objects.cancel)(execution_id, reason)


async def aget(execution_id: Any) -> Execution:
    """The ``Execution`` row (``Execution.DoesNotExist`` if absent)."""
    return await sync_to_async(api.get)(execution_id)


async def await_result(execution_id: Any, timeout: float | None = 30) -> Any:
    """Wait for the execution to finish and return its result; raises ``ExecutionFailed``
    / ``ExecutionCancelled`` as ``conductor_django.wait`` does, ``TimeoutError`` when
    ``timeout`` seconds (``None``: no limit) pass first, ``Execution.DoesNotExist`` for
    an unknown id."""
    seconds = to_seconds(timeout, "timeout")
    deadline = None if seconds is None else time.monotonic() + seconds
    using = router.db_for_read(Execution)
    async with wakeup.finished(using) as announced:
        pause = FIRST_PAUSE
        while True:
            row = await aget(execution_id)
            if row.status in Execution.FINAL:
                return api.outcome(row)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"execution {row.pk} did not finish within {seconds} s "
                                   f"(status {row.status})")
            if announced is not None:
                wait = RECHECK if remaining is None else min(RECHECK, remaining)
                await announced.wait(str(row.pk), wait)
            else:
                await asyncio.sleep(pause if remaining is None else min(pause, remaining))
                pause = min(pause * 1.5, LONGEST_PAUSE)
