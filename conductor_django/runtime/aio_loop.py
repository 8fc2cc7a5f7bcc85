"""The worker's event loop: runs ``async def`` handlers beside the handler threads.

One thread runs one ``asyncio`` event loop with up to ``--async-concurrency``
handlers at once (``AsyncLoop.free``). Everything that blocks runs off the loop: the
database calls of ``ctx`` and of the runner on a small pool of database threads (each
with its own connection, enrolled like the handler threads: ``sessions.enroll``), a
plain step function on ``asyncio``'s default thread pool. So the loop only ever waits
in ``await``, and thousands of handlers sleeping in ``await asyncio.sleep(...)`` or an
HTTP call cost no thread each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import DatabaseError, InterfaceError, connections

from ..state import Claimed
from . import Runtime, aio_runner
from .aio_context import AsyncStopToken, in_thread
from .context import Context
from .sessions import enroll

logger = logging.getLogger("conductor_django.worker")

#: Most database threads of the loop: its handlers' database calls are short.
DB_THREADS = 8


class AsyncLoop(threading.Thread):
    """The event loop thread of a worker.

    ``after(item, outcome)``: called on a database thread when a run ends (the next run
    of a schedule); ``done(item, error)``: called on the loop when a handler slot is free
    again (``error``: the run ended on a database fault or a bug, so the worker releases
    the execution later).
    """

    def __init__(self, runtime: Runtime, concurrency: int, *,
                 after: Callable[[Claimed, str], None],
                 done: Callable[[Claimed, bool], None]) -> None:
        super().__init__(name="conductor-async", daemon=True)
        self.runtime = runtime
        self.concurrency = concurrency
        self._after = after
        self._done = done
        self.loop = asyncio.new_event_loop()
        using, dead_after = runtime.using, runtime.dead_after
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(concurrency, DB_THREADS)),
                                       thread_name_prefix="conductor-async-db",
                                       initializer=enroll, initargs=(using, dead_after))
        self._lock = threading.Lock()
        self._busy = 0
        self._started = threading.Event()

    # --- the worker's side (any thread) ---------------------------------------------------

    def start(self) -> None:
        super().start()
        self._started.wait()

    def busy(self) -> int:
        with self._lock:
            return self._busy

    def free(self) -> int:
        """How many more async executions may be claimed now."""
        with self._lock:
            return self.concurrency - self._busy

    def submit(self, item: Claimed, ctx: Context | None) -> None:
        """Run ``item`` on the loop (``ctx``: made at the claim, see ``make_context``)."""
        with self._lock:
            self._busy += 1
        asyncio.run_coroutine_threadsafe(self._one(item, ctx), self.loop)

    def interrupt_all(self) -> int:
        """Interrupt every handler on the loop (a shutdown out of time): each is released."""
        contexts = [ctx for ctx in list(self.runtime.inflight.values())
                    if isinstance(ctx.signal, AsyncStopToken)]
        for ctx in contexts:
            ctx.signal.interrupt()
        return len(contexts)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.busy()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the loop and its database threads (closing their connections)."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.join(timeout)
        threads = len(self.pool._threads)  # the ones started so far: each has a connection
        if threads:
            everyone = threading.Barrier(threads)  # one job per thread: each waits for all
            for _ in range(threads):
                self.pool.submit(_close_connections, everyone)
        self.pool.shutdown(wait=True, cancel_futures=False)

    # --- the loop's side ----------------------------------------------------------------

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        try:
            while True:
                try:
                    self.loop.run_forever()
                    return  # stopped by close()
                except BaseException as exc:  # noqa: BLE001 - the loop must go on
                    # A task of a handler (``asyncio.gather`` of steps, a task it created)
                    # ended in SystemExit or KeyboardInterrupt: asyncio lets those out of
                    # the loop, and the task keeps it for whoever awaits it. Go on.
                    logger.error("an async handler's task raised %s; the event loop goes on",
                                 type(exc).__name__, exc_info=exc)
        finally:
            self.loop.close()

    async def db(self, fn: Callable[[], Any]) -> Any:
        """Run the blocking ``fn`` on a database thread."""
        return await self.loop.run_in_executor(self.pool, _guarded, fn, self.runtime.using)

    async def _one(self, item: Claimed, ctx: Context | None) -> None:
        failed = False
        try:
            if self.runtime.stopping.is_set():  # claimed but not started: give it back
                await self.db(lambda: aio_runner.give_back(item, self.runtime))
                return
            outcome = await aio_runner.run(item, self.runtime, ctx, self.db)
            await self.db(lambda: self._after(item, outcome))
        except (DatabaseError, InterfaceError):
            logger.warning("database error finishing %s", item.id, exc_info=True)
            failed = True
        except BaseException:  # noqa: BLE001 - the loop must go on
            logger.exception("unexpected error running %s", item.id)
            failed = True
        finally:
            with self._lock:
                self._busy -= 1
            self._done(item, failed)


def _guarded(fn: Callable[[], Any], using: str) -> Any:
    """``in_thread``; after a fault of the connection, close it (the next call reconnects)."""
    try:
        return in_thread(fn, using)
    except (DatabaseError, InterfaceError):
        connections[using].close_if_unusable_or_obsolete()
        raise


def _close_connections(everyone: threading.Barrier) -> None:
    connections.close_all()
    try:
        everyone.wait(timeout=5.0)
    except threading.BrokenBarrierError:
        pass
