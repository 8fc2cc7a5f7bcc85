"""Runs one claimed execution of an ``async def`` handler, on an event loop.

The same attempt as ``runner.run``, in three phases: the checks before the start
(lost, cancelled before it started), the handler awaited on the loop as an ``asyncio``
task of its own, then the outcome recorded by ``runner.settle`` on a database thread,
through exactly the final writes of a thread-run handler (fenced by the lease). A
cancel, a timeout or a lost lease interrupts the handler's task at the ``await`` it
is blocked in (``AsyncStopToken``); that interruption is recorded as the ``Cancelled``,
the timeout failure or the lost lease it stands for. A shutdown that runs out of time
interrupts it too, and the execution is released to resume elsewhere.

``db`` runs a blocking call off the loop: the worker's database threads, or, in
``testing.drain``, the thread that called it (``run_here``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from ..definitions.protocols import Event
from ..definitions.registry import Task, get_task
from ..exceptions import Released
from ..models import Execution
from ..state import Claimed
from . import Runtime, custom_context, logs, runner, telemetry
from .aio_context import AsyncContext, AsyncStopToken, DbCall, contained
from .context import Context
from .unit import TRANSIENT, Outcome, error_message, fail, fail_unknown, final_write, unrecordable

logger = logging.getLogger("conductor_django.worker")


def is_async(task_name: str) -> bool:
    """Whether the registered task ``task_name`` has an ``async def`` handler."""
    try:
        return get_task(task_name, resolve=True).is_async
    except LookupError:
        return False


def make_context(claimed: Claimed, runtime: Runtime) -> Context | None:
    """The thread-side ``ctx`` of a claimed execution, with an ``AsyncStopToken``,
    registered so that cancels reach it from the claim on."""
    return runner.make_context(claimed, runtime, signal=AsyncStopToken())


async def run(claimed: Claimed, runtime: Runtime, ctx: Context | None, db: DbCall) -> str:
    """Run ``claimed`` to the end of this attempt; returns the outcome for the log."""
    started = time.monotonic()
    eid = claimed.id
    if ctx is None:
        ctx = make_context(claimed, runtime)
    if ctx is None:
        outcome = await db(lambda: fail_unknown(claimed, runtime))
        runner._log_finish(claimed, outcome, started)
        return outcome
    task = get_task(claimed.task_name, resolve=True)
    logger.info(
        "start %s %s attempt %d/%d", claimed.task_name, eid, claimed.attempts,
        claimed.max_attempts, extra={"execution_id": eid, "task_name": claimed.task_name},
    )
    run_telemetry = await db(lambda: telemetry.start(ctx, runtime.using))
    try:
        if ctx.signal.reason == "lost":
            await db(lambda: runner._give_up(claimed, runtime))
            outcome = Outcome.LOST
        elif ctx.signal.aborted and ctx.signal.reason == "cancelled":
            reason, wid, using = ctx.signal.message or "", runtime.worker_id, runtime.using
            await db(lambda: final_write(lambda: Execution.objects.finish_cancelled(
                eid, wid, claimed.lease, reason, using,
                may_have_parent=claimed.parent_id is not None), using, eid))
            outcome = Outcome.CANCELLED
        else:
            ctx.start()
            replay = await _handle(task, claimed, ctx, runtime, db)
            try:
                outcome = await db(lambda: runner.settle(task, claimed, ctx, runtime, replay))
            except TRANSIENT:
                raise  # the worker releases it; it runs again on a fresh connection
            except Exception as exc:  # noqa: BLE001 - see unrecordable
                error = exc
                outcome = await db(lambda: unrecordable([claimed], runtime, error))
    finally:
        runner.leave(claimed, ctx, runtime, run_telemetry)
    return runner.conclude(claimed, ctx, outcome, run_telemetry, started)


async def _handle(task: Task, claimed: Claimed, ctx: Context, runtime: Runtime,
                  db: DbCall) -> Callable[[Event, Any], Any]:
    """Await the handler as a task of its own; returns what ``runner.settle`` replays."""
    actx = AsyncContext(ctx, db, inline=runtime.inline)
    event = Event(name=claimed.event_name, payload=claimed.payload, execution_id=claimed.id)
    limit, level = logs.settings()
    early = logs.LogBuffer(limit, level) if limit > 0 else None
    if early is not None:  # ctx.logger lines of the handler, moved into the attempt's log
        plain = ctx.logger
        ctx.logger = logs.CapturingLoggerAdapter(plain.logger, plain.extra, early)
    signal = ctx.signal
    loop = asyncio.get_running_loop()
    handler = loop.create_task(contained(_start(task, event, actx)))
    if isinstance(signal, AsyncStopToken):
        signal.attach(loop, handler)
    try:
        await asyncio.wait([handler])
    finally:
        if isinstance(signal, AsyncStopToken):
            signal.detach()
    error: BaseException | None = None
    result: Any = None
    if handler.cancelled():
        error = _interruption(ctx, runtime)
    else:  # the handler's exception, whatever it is (``contained``): replayed in settle
        result, error = handler.result()

    def replay(event: Event, sync_ctx: Any) -> Any:
        capturing = getattr(sync_ctx.logger, "buffer", None)
        if early is not None and capturing is not None:
            capturing.absorb(early)
        if error is not None:
            raise error
        return result

    return replay


async def _start(task: Task, event: Event, actx: AsyncContext) -> Any:
    _apply_members(actx)
    return await task.func(event, actx)


def _interruption(ctx: Context, runtime: Runtime) -> BaseException:
    """What the cancelled ``asyncio`` task of a handler stands for."""
    if ctx.signal.aborted:
        try:
            ctx.signal.raise_if_aborted()
        except BaseException as exc:  # noqa: BLE001 - Cancelled, AttemptTimedOut, LeaseLost
            return exc
    if runtime.stopping.is_set():
        return Released()
    return asyncio.CancelledError("the handler's task was cancelled")


def _apply_members(actx: AsyncContext) -> None:
    """The custom members of ``CONDUCTOR["CONTEXT"]`` (see ``custom_context``)."""
    for name, value in custom_context.members().items():
        if hasattr(AsyncContext, name) or name in vars(actx):
            raise ImproperlyConfigured(f"CONDUCTOR['CONTEXT'] member {name!r} is already a "
                                       "member of ctx")
        setattr(actx, name, value)


def give_back(item: Claimed, runtime: Runtime) -> None:
    """A claimed execution that did not start (the worker stops): release it."""
    runtime.inflight.pop(item.id, None)
    Execution.objects.release(item.id, runtime.worker_id, item.lease, timezone.now(),
                              runtime.using)


async def _here_db(fn: Callable[[], Any]) -> Any:
    return await sync_to_async(fn, thread_sensitive=True)()


def run_here(claimed: Claimed, runtime: Runtime) -> str:
    """Run with the database calls (and plain step functions) on the calling thread, the
    handler on an event loop beside it (``testing.drain``: the caller's connection and
    transaction; a django-q2 cluster process)."""
    try:
        return async_to_sync(run)(claimed, runtime, None, _here_db)
    except (SystemExit, KeyboardInterrupt) as exc:
        if isinstance(exc, runtime.passthrough):
            raise
        # A task the handler created itself (``asyncio.gather`` of steps) ended in it:
        # asyncio let it out of the loop, which stopped with the attempt unrecorded.
        # Fenced by the lease: nothing is written if the attempt was recorded after all.
        runtime.inflight.pop(claimed.id, None)
        try:
            task: Task | None = get_task(claimed.task_name, resolve=True)
        except LookupError:
            task = None
        outcome = fail(claimed, runtime, task, error_message(exc))
        logger.error("%s %s failed: %s", claimed.task_name, claimed.id, error_message(exc),
                     extra={"execution_id": claimed.id, "task_name": claimed.task_name})
        return outcome
