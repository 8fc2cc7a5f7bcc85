"""Runs one claimed execution: builds ``ctx``, calls the handler, writes the outcome."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.utils import timezone

from . import custom_context, logs, queries
from .context import Context, Event
from .exceptions import (
    AttemptTimedOut,
    Cancelled,
    NonRetryableError,
    Released,
    Suspended,
)
from .queries import Claimed
from .registry import Task, get_task
from .runtime import Runtime
from .utils import check_json

logger = logging.getLogger("conductor_django.worker")


def error_message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def run(claimed: Claimed, runtime: Runtime) -> str:
    """Run ``claimed`` to the end of this attempt; returns the outcome for the log."""
    started = time.monotonic()
    eid = claimed.id
    try:
        task = get_task(claimed.task_name)
    except LookupError:
        outcome = _fail(claimed, runtime, None, f"Task {claimed.task_name!r} is not registered "
                        "in this worker")
        _log_finish(claimed, outcome, started)
        return outcome
    ctx = Context(
        execution_id=eid,
        task_name=claimed.task_name,
        queue=claimed.queue,
        attempt=claimed.attempts,
        runtime=runtime,
        timeout=task.timeout,
        steps_may_exist=not claimed.fresh or claimed.attempts > 1,
    )
    runtime.inflight[eid] = ctx
    logger.info(
        "start %s %s attempt %d/%d", claimed.task_name, eid, claimed.attempts,
        claimed.max_attempts,
        extra={"execution_id": eid, "task_name": claimed.task_name},
    )
    try:
        outcome = _call(task, claimed, ctx, runtime)
    finally:
        runtime.inflight.pop(eid, None)
    if ctx.signal.reason == "cancelled" and outcome in ("completed", "failed", "retrying"):
        outcome = "cancelled"  # the final write kept the accepted cancel
    _log_finish(claimed, outcome, started)
    return outcome


def _call(task: Task, claimed: Claimed, ctx: Context, runtime: Runtime) -> str:
    eid, wid, db = claimed.id, runtime.worker_id, runtime.using
    event = Event(name=claimed.event_name, payload=claimed.payload, execution_id=eid)
    try:
        first = claimed.fresh and claimed.attempts == 1
        with logs.capture(ctx, db, first):  # stores the attempt's log lines before the outcome
            custom_context.apply(ctx)
            result = task.func(event, ctx)
            check_json(result, f"result of task {task.name!r}")
    except Cancelled as exc:
        queries.finish_cancelled(eid, wid, exc.reason, db)
        return "cancelled"
    except AttemptTimedOut:
        return _fail(claimed, runtime, task, f"Timed out after {task.timeout:g} seconds")
    except Released as exc:
        queries.release(eid, wid, exc.run_at or timezone.now(), db)
        return "released"
    except Suspended as exc:
        queries.release(eid, wid, exc.run_at, db, status=queries.S.SUSPENDED)
        return "suspended"
    except NonRetryableError as exc:
        return _fail(claimed, runtime, task, error_message(exc), retry=False)
    except Exception as exc:
        logger.exception(
            "%s %s failed on attempt %d", task.name, eid, claimed.attempts,
            extra={"execution_id": eid, "task_name": task.name},
        )
        return _fail(claimed, runtime, task, error_message(exc))
    if not queries.complete(eid, wid, result, db):
        return "lost"  # the lock was taken from this worker (it was presumed dead)
    return "completed"


def _fail(
    claimed: Claimed, runtime: Runtime, task: Task | None, error: str, *, retry: bool = True
) -> str:
    retry_at = None
    if retry and claimed.attempts < claimed.max_attempts:
        delay = task.retry_delay(claimed.attempts) if task is not None else 60.0
        retry_at = timezone.now() + timedelta(seconds=delay)
    queries.fail(claimed.id, runtime.worker_id, error, retry_at, runtime.using)
    return "failed" if retry_at is None else "retrying"


def _log_finish(claimed: Claimed, outcome: str, started: float) -> None:
    logger.info(
        "finish %s %s %s in %.3fs", claimed.task_name, claimed.id, outcome,
        time.monotonic() - started,
        extra={"execution_id": claimed.id, "task_name": claimed.task_name},
    )
