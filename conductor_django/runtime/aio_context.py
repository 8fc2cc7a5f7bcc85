"""The ``ctx`` of an ``async def`` handler.

``AsyncContext`` wraps the ``Context`` a thread-run handler gets and offers the same
members, with the ones that touch the database as coroutines: ``await ctx.step(...)``,
``await ctx.checkpoint()``, ``await ctx.sleep(...)``, ``await ctx.invoke(...)``,
``await ctx.wait_for_signal(...)``, ``await ctx.progress(...)``, ``await ctx.patched(...)``.
Their database work (the fenced step write, loading the steps, a lease check) runs on
the worker's database threads (``db``), never on the event loop; a step is stored
before ``await ctx.step`` returns.

``AsyncStopToken`` is the wrapped context's ``ctx.signal``: a cancel, a timeout or a lost
lease, delivered from any thread, also cancels the handler's ``asyncio`` task, so the
``await`` it is blocked in stops at once; the runner turns that into ``Cancelled``,
the timeout failure or the lost lease, exactly as at a step boundary.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from ..definitions.tasks import Task
from . import steps
from .context import Context, StopToken
from .retry import ensure_usable

T = TypeVar("T")

#: Runs a blocking database call off the event loop and returns its value.
DbCall = Callable[[Callable[[], Any]], Awaitable[Any]]


class AsyncStopToken(StopToken):
    """A ``StopToken`` that also interrupts the ``asyncio`` task of an async handler."""

    def __init__(self) -> None:
        super().__init__()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Future[Any] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Future[Any]) -> None:
        """Interrupt ``task`` on the next abort (at once if already aborted)."""
        with self._lock:
            self._loop, self._task = loop, task
        if self.aborted:
            loop.call_soon_threadsafe(task.cancel)

    def detach(self) -> None:
        with self._lock:
            self._loop = self._task = None

    def abort(self, reason: str, message: str | None = None) -> None:
        super().abort(reason, message)
        self.interrupt()

    def interrupt(self) -> None:
        """Cancel the handler's task at the ``await`` it is in (from any thread)."""
        with self._lock:
            loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)


_idle = threading.local()


def fresh_connection(using: str) -> None:
    """Before a call on a thread of the loop's pools: drop this thread's connection if it
    had errors, or sat idle and no longer works (as a handler thread does between
    executions), so that a killed session does not fail the next call."""
    now = time.monotonic()
    ensure_usable(using, now - getattr(_idle, "since", now))


def in_thread(fn: Callable[[], Any], using: str) -> Any:
    """Call ``fn`` on a pool thread, with a usable connection; mark when it ended."""
    fresh_connection(using)
    try:
        return fn()
    finally:
        _idle.since = time.monotonic()


async def contained(awaitable: Awaitable[T]) -> tuple[T | None, BaseException | None]:
    """``(value, None)`` or ``(None, the exception)`` of ``awaitable``: an ``asyncio`` task
    must not end in ``SystemExit`` or ``KeyboardInterrupt`` (the event loop lets those out
    and stops), so a task that may run handler code awaits it through this."""
    try:
        return await awaitable, None
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - handed back to whoever awaits the task
        return None, exc


async def settled(future: Awaitable[T]) -> T:
    """Await ``future`` to its end even if the awaiting task is cancelled meanwhile (then
    ``CancelledError`` is raised after it): a write in progress is never left half-known.
    An exception of ``future`` (a step function's ``sys.exit()``) is raised here."""
    inner = asyncio.ensure_future(contained(future))
    interrupted = False
    while True:
        try:
            value = await asyncio.shield(inner)
            break
        except asyncio.CancelledError:
            if inner.done():
                raise
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
    result, error = value
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


class AsyncContext:
    """What an ``async def`` handler receives as ``ctx``.

    Steps may run concurrently (``asyncio.gather`` of ``ctx.step`` calls with
    different names). A sync ``fn`` given to ``ctx.step`` runs in a thread; an ``async``
    one (or a callable returning an awaitable) runs on the event loop.
    """

    def __init__(self, ctx: Context, db: DbCall, *, inline: bool = False) -> None:
        self.sync = ctx  # the thread-side context: the worker delivers cancels to it
        self._db = db
        self._inline = inline

    def __repr__(self) -> str:
        return f"<AsyncContext {self.task_name} {self.execution_id} attempt {self.attempt}>"

    # --- identity, as in ``Context`` ------------------------------------------------------

    @property
    def execution_id(self) -> str:
        return self.sync.execution_id

    @property
    def task_name(self) -> str:
        return self.sync.task_name

    @property
    def queue(self) -> str:
        return self.sync.queue

    @property
    def attempt(self) -> int:
        return self.sync.attempt

    @property
    def lease(self) -> int:
        return self.sync.lease

    @property
    def signal(self) -> StopToken:
        return self.sync.signal

    @property
    def timeout(self) -> float | None:
        return self.sync.timeout

    @property
    def logger(self) -> Any:
        return self.sync.logger

    # --- step boundaries ----------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Stop here if cancelled (``Cancelled``), timed out, the worker shuts down, the
        window closed or the lease was lost; see ``Context.checkpoint``."""
        if steps.lease_surely_holds(self.sync):
            self.sync.checkpoint()
        else:
            await self._db(self.sync.checkpoint)

    async def step(self, name: str, fn: Callable[[], Any], *, atomic: bool = False) -> Any:
        """Run ``fn`` once for this execution and memoize its JSON result under ``name``.

        ``fn``: an ``async def`` function (awaited on the event loop), or a plain
        function (run in a thread; if it returns an awaitable, that is awaited). The step
        is stored, fenced by the lease, before this returns. ``atomic=True`` (a plain
        ``fn`` only) runs ``fn`` and the step's record in one transaction, as in
        ``Context.step``.
        """
        steps.check_name(name)
        if not callable(fn):
            raise TypeError(f"step {name!r} needs a callable, got {type(fn).__name__}")
        if atomic and inspect.iscoroutinefunction(fn):
            raise TypeError(f"atomic step {name!r} needs a plain function: its writes run in "
                            "one transaction on a database thread")
        return await self._drive(steps.plan(self.sync, name, fn, atomic))

    async def _drive(self, plan: steps.Plan) -> Any:
        """Drive a step's plan (the algorithm, written once: ``runtime/steps.py``) from
        the event loop: database work on a database thread, ``fn`` as ``_call`` runs it."""
        effect = next(plan)
        while True:
            try:
                value = await self._perform(effect)
            except BaseException as exc:  # noqa: BLE001 - the plan's span sees it, re-raised
                effect = plan.throw(exc)
                continue
            try:
                effect = plan.send(value)
            except StopIteration as done:
                return done.value

    async def _perform(self, effect: steps.Effect) -> Any:
        if isinstance(effect, steps.Call):
            return await self._call(effect.fn)
        if effect.local is not None and effect.local():
            return effect.work()  # nothing to ask the database
        if effect.settle:  # a write in progress is never left half-known
            return await settled(self._db(effect.work))
        return await self._db(effect.work)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn()
        # inline (testing.drain): on the caller's thread, which sees its test data
        using = self.sync._runtime.using
        value = await (self._db(fn) if self._inline
                       else asyncio.to_thread(in_thread, fn, using))
        if inspect.isawaitable(value):
            value = await value
        return value

    # --- durable suspension (``durable.py``, on a database thread) -----------------------

    async def sleep(self, name: str, duration: float | timedelta) -> None:
        """Durable sleep: release the worker and resume after ``duration`` on any worker."""
        await self._db(lambda: self.sync.sleep(name, duration))

    async def invoke(self, step_name: str, task: str | Task, payload: Any = None,
                     timeout: float | timedelta | None = None) -> Any:
        """Run ``task`` as a child execution (once) and return its result; see
        ``Context.invoke``."""
        return await self._db(lambda: self.sync.invoke(step_name, task, payload, timeout))

    async def wait_for_signal(self, name: str, timeout: float | timedelta | None = None,
                              choices: list[str] | None = None) -> Any:
        """Wait, holding no worker, for the signal ``name``; see ``Context.wait_for_signal``."""
        return await self._db(lambda: self.sync.wait_for_signal(name, timeout, choices))

    async def patched(self, change_id: str) -> bool:
        """Whether this execution takes the new code path of ``change_id``; see
        ``Context.patched``."""
        return bool(await self._db(lambda: self.sync.patched(change_id)))

    async def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        """Report progress (``Execution.progress``); throttled, the last value always kept."""
        await self._db(lambda: self.sync.progress(done, total, message))

    async def schedule(self, task: Any, schedule_name: str, cron: str, payload: Any = None,
                       timezone: str | None = None) -> Any:
        """Create or replace a dynamic cron schedule; see ``conductor_django.schedule``."""
        return await self._db(
            lambda: self.sync.schedule(task, schedule_name, cron, payload, timezone))

    async def unschedule(self, task: Any, schedule_name: str) -> bool:
        """Delete a schedule; see ``Context.unschedule``."""
        return bool(await self._db(lambda: self.sync.unschedule(task, schedule_name)))
