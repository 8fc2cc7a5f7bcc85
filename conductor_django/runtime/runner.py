"""Runs one claimed execution: builds ``ctx``, calls the handler, writes the outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from ..definitions.protocols import Event
from ..definitions.registry import Task, get_task
from ..definitions.values import check_json, safe_str
from ..exceptions import (
    AttemptTimedOut,
    Cancelled,
    LeaseLost,
    NonRetryableError,
    Released,
    Suspended,
    timed_out,
)
from ..models import Execution
from ..state import Claimed
from . import Runtime, custom_context, logs, telemetry
from .batch import ClaimedBatch, run_batch
from .context import Context, StopToken
from .unit import (
    TRANSIENT,
    ExecutionUnit,
    Outcome,
    error_message,
    fail,
    fail_unknown,
    final_write,
    unrecordable,
)

logger = logging.getLogger("conductor_django.worker")


def make_context(claimed: ExecutionUnit, runtime: Runtime,
                 signal: StopToken | None = None) -> Context | None:
    """The ``ctx`` of a claimed execution, registered so cancels reach it at once.

    ``None`` when the task is not registered in this process, and for batches (their
    items get contexts of their own in ``batch.py``). ``signal``: the cancellation
    signal to use instead of a plain one (async handlers pass one that also interrupts
    their ``await``); it is in place before a cancel can reach the context.
    """
    if not isinstance(claimed, Claimed):
        return None
    try:
        task = get_task(claimed.task_name, resolve=True)
    except LookupError:
        return None
    ctx = Context(
        execution_id=claimed.id,
        task_name=claimed.task_name,
        queue=claimed.queue,
        attempt=claimed.attempts,
        runtime=runtime,
        timeout=task.timeout,
        steps_may_exist=not claimed.fresh or claimed.attempts > 1,
        lease=claimed.lease,
    )
    if signal is not None:
        ctx.signal = signal
    runtime.inflight[claimed.id] = ctx
    return ctx


def run(claimed: ExecutionUnit, runtime: Runtime, ctx: Context | None = None) -> str:
    """Run ``claimed`` to the end of this attempt; returns the outcome for the log."""
    # flow control: the executions of a batch task run as one handler call
    if isinstance(claimed, ClaimedBatch):
        try:
            return telemetry.batch(claimed, lambda: run_batch(claimed, runtime))
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - see unrecordable
            return unrecordable(claimed.items, runtime, exc)
    assert isinstance(claimed, Claimed)
    started = time.monotonic()
    eid = claimed.id
    ctx = ctx or make_context(claimed, runtime)
    if ctx is None:
        outcome = fail_unknown(claimed, runtime)
        _log_finish(claimed, outcome, started)
        return outcome
    task = get_task(claimed.task_name, resolve=True)
    logger.info(
        "start %s %s attempt %d/%d", claimed.task_name, eid, claimed.attempts,
        claimed.max_attempts,
        extra={"execution_id": eid, "task_name": claimed.task_name},
    )
    run_telemetry = telemetry.start(ctx, runtime.using)  # counters; the attempt's span
    try:
        if ctx.signal.reason == "lost":
            _give_up(claimed, runtime)  # given up between the claim and the start
            outcome = Outcome.LOST
        elif ctx.signal.aborted and ctx.signal.reason == "cancelled":
            # Cancelled between the claim and the start: it does not start at all.
            reason, wid, db = ctx.signal.message or "", runtime.worker_id, runtime.using
            final_write(lambda: Execution.objects.finish_cancelled(
                eid, wid, claimed.lease, reason, db,
                may_have_parent=claimed.parent_id is not None), db, eid)
            outcome = Outcome.CANCELLED
        else:
            ctx.start()
            try:
                outcome = _call(task, claimed, ctx, runtime)
            except TRANSIENT:
                raise  # the worker releases it; it runs again on a fresh connection
            except Exception as exc:  # noqa: BLE001 - see unrecordable
                outcome = unrecordable([claimed], runtime, exc)
    finally:
        leave(claimed, ctx, runtime, run_telemetry)
    return conclude(claimed, ctx, outcome, run_telemetry, started)


def leave(claimed: Claimed, ctx: Context, runtime: Runtime, run: telemetry.Run) -> None:
    """The attempt's handler is done (or gone): detach its span, stop its ctx, and stop
    delivering cancels to it. The sync and the async runner end every attempt so."""
    run.detach()
    ctx.finish()
    if runtime.inflight.get(claimed.id) is ctx:
        del runtime.inflight[claimed.id]


def conclude(claimed: Claimed, ctx: Context, outcome: str, run: telemetry.Run,
             started: float) -> str:
    """The attempt's outcome as reported (an accepted cancel wins: the final write kept
    it), counted and logged."""
    if ctx.signal.reason == "cancelled" and outcome in (
            Outcome.COMPLETED, Outcome.FAILED, Outcome.RETRYING):
        outcome = Outcome.CANCELLED
    run.end(outcome)
    _log_finish(claimed, outcome, started)
    return outcome


def _call(task: Task, claimed: Claimed, ctx: Context, runtime: Runtime,
          handler: Callable[[Event, Any], Any] | None = None) -> str:
    """Call the handler (``handler`` in place of the task's function: the async runner
    replays an outcome reached on its event loop) and record the attempt's outcome."""
    eid, wid, db, lease = claimed.id, runtime.worker_id, runtime.using, claimed.lease
    event = Event(name=claimed.event_name, payload=claimed.payload, execution_id=eid)
    has_parent = claimed.parent_id is not None
    try:
        first = claimed.fresh and claimed.attempts == 1
        with logs.capture(ctx, db, first):  # stores the attempt's log lines before the outcome
            custom_context.apply(ctx)
            try:
                result = (handler or task.func)(event, ctx)
            finally:
                ctx.flush_progress()  # the last ctx.progress is kept, whatever the outcome
            check_json(result, f"result of task {task.name!r}")
    except LeaseLost:
        _give_up(claimed, runtime)
        logger.warning(
            "%s %s: stopped, this worker no longer holds it (%s)", task.name, eid,
            ctx.signal.message, extra={"execution_id": eid, "task_name": task.name},
        )
        return Outcome.LOST  # another worker holds it now: nothing of this attempt is written
    except Cancelled as exc:
        reason = safe_str(exc.reason)  # a handler may raise Cancelled(123)
        final_write(lambda: Execution.objects.finish_cancelled(
            eid, wid, lease, reason, db, may_have_parent=has_parent), db, eid)
        return Outcome.CANCELLED
    except AttemptTimedOut:
        return fail(claimed, runtime, task, timed_out(task.timeout), ended=Outcome.TIMED_OUT)
    except Released as exc:
        run_at = exc.run_at or timezone.now()
        shutdown = exc.why == "shutdown"
        final_write(lambda: Execution.objects.release(
            eid, wid, lease, run_at, db, may_have_parent=has_parent, shutdown=shutdown), db, eid)
        return Outcome.RELEASED
    except Suspended as exc:
        until, child_id, wakeable = exc.run_at, exc.child_id, exc.signal is not None
        final_write(
            lambda: Execution.objects.release(eid, wid, lease, until, db,
                                              status=Execution.Status.SUSPENDED,
                                              waiting_for=child_id, wakeable=wakeable,
                                              may_have_parent=has_parent),
            db, eid,
        )
        return Outcome.SUSPENDED
    except NonRetryableError as exc:
        return fail(claimed, runtime, task, error_message(exc), retry=False)
    except Exception as exc:
        logger.exception(
            "%s %s failed on attempt %d", task.name, eid, claimed.attempts,
            extra={"execution_id": eid, "task_name": task.name},
        )
        return fail(claimed, runtime, task, error_message(exc))
    except BaseException as exc:  # sys.exit(), KeyboardInterrupt, a BaseException of its own
        if isinstance(exc, runtime.passthrough):
            raise  # an engine's hard time limit: the engine records it
        # The handler's own doing (the worker's SIGINT and SIGTERM stop the worker and
        # never reach a handler thread): it fails the attempt like any error, and the
        # worker goes on, as Django's reference worker records them.
        logger.error(
            "%s %s failed on attempt %d: %s", task.name, eid, claimed.attempts,
            error_message(exc), exc_info=exc,
            extra={"execution_id": eid, "task_name": task.name},
        )
        return fail(claimed, runtime, task, error_message(exc))
    # Presumed dead while the handler returned: the result is still written if this
    # worker holds the execution under its lease (the write is fenced), else it is lost.
    # The first attempt completing in one go is the hot path: its attempt row is derived
    # from the execution (state.attempts); any other completion is recorded with it.
    record = not (claimed.fresh and claimed.attempts == 1)
    if record or claimed.parent_id is not None or claimed.schedule_name is not None:
        # A child wakes its parent in the same transaction; a scheduled run is written
        # at once so that its next run can be queued right after it.
        written = final_write(
            lambda: Execution.objects.complete(eid, wid, lease, result, db,
                                               may_have_parent=has_parent, record=record),
            db, eid)
    else:  # batched by the threaded worker (completer.py)
        written = runtime.write_result(eid, lease, result)
    if not written:
        return Outcome.LOST  # the lock was taken from this worker (it was presumed dead)
    return Outcome.COMPLETED


#: Records the outcome of an attempt whose handler ran elsewhere (``aio_runner``).
settle = _call


def _log_finish(claimed: Claimed, outcome: str, started: float) -> None:
    logger.info(
        "finish %s %s %s (ran %.3fs)", claimed.task_name, claimed.id, outcome,
        time.monotonic() - started,
        extra={"execution_id": claimed.id, "task_name": claimed.task_name},
    )


def _give_up(claimed: Claimed, runtime: Runtime) -> None:
    """The handler stopped because this worker was presumed dead. Executions recovered by
    others are theirs (nothing is written); one still held under this lease (its row was
    locked when the others recovered) is handed back as a recovery would."""
    db = runtime.using
    final_write(lambda: Execution.objects.give_up(claimed.id, runtime.worker_id, claimed.lease,
                                                  runtime.dead_after, db), db, claimed.id)
