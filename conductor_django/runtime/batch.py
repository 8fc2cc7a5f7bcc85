"""Batch tasks: ``task(batch=Batch(size, timeout))`` runs many executions in one call.

Every invocation is still its own ``Execution`` (own id, result, status, retries,
cancellation). Readiness is decided in the database, so it holds across workers and
no worker holds rows while a batch fills: a batch task is claimed when ``size`` of
its executions are runnable, or when the oldest runnable one has waited ``timeout``
seconds (a draining worker, ``--drain`` or ``testing.drain``, takes partial batches at
once). One claim locks up to ``size`` rows, best priority first, and they run as one
job on one handler thread: ``handler(events, ctx)`` gets the list of ``Event`` and
returns a list of results of the same length, in order.

Outcomes, per item: a result is stored like a plain task's (an exception *instance*
in the list fails just that item, retried like any failure); a list of the wrong
length, or an exception raised by the handler, fails every item of the batch with
that message; an item whose cancellation was requested while the batch ran ends
``cancelled`` whatever the handler returned for it (``ctx.cancelled(event)`` tells
the handler, to skip work). ``ctx.checkpoint()`` raises ``Cancelled`` only once every
item is cancelled, and also stops the batch on timeout, shutdown or a closed window.
Steps are per execution and a batch is regrouped on every attempt, so ``ctx.step`` is
not available in batch tasks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from ..definitions.protocols import Event
from ..definitions.registry import Task, batch_tasks, get_task
from ..definitions.values import check_json, safe_str
from ..exceptions import (
    DEFAULT_REASON,
    AttemptTimedOut,
    Cancelled,
    LeaseLost,
    NonRetryableError,
    Released,
    timed_out,
)
from ..models import Execution
from ..state import Claimed
from .context import BaseContext, StopToken, TaskLoggerAdapter
from .unit import Outcome, error_message, fail, final_write, unknown_task_error

if TYPE_CHECKING:
    from . import Runtime

logger = logging.getLogger("conductor_django.worker")
task_logger = logging.getLogger("conductor_django.task")


@dataclass(slots=True)
class ClaimedBatch:
    """Executions of one batch task claimed together; they run as one handler call."""

    task_name: str
    items: list[Claimed] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    @property
    def id(self) -> str:  # for log lines that name one execution
        return f"batch[{', '.join(self.ids)}]"

    @property
    def size(self) -> int:
        return len(self.items)


def claim_batches(
    worker_id: uuid.UUID, queues: Sequence[str] | None, slots: int, using: str, *,
    fill: bool = True, exclude: Sequence[str] = (),
) -> list[ClaimedBatch]:
    """Claim at most one ready batch per batch task, ``slots`` batches in all."""
    if slots <= 0:
        return []
    now = timezone.now()
    batches: list[ClaimedBatch] = []
    for name, spec in batch_tasks(now).items():
        if len(batches) >= slots:
            break
        items = Execution.objects.claim_batch(worker_id, queues, name, spec, using, now,
                                             fill, exclude)
        if items:
            batches.append(ClaimedBatch(task_name=name, items=items))
    return batches


# --- running a batch -------------------------------------------------------------------


class _ItemStopToken(StopToken):
    """One item's signal; its aborts reach the batch (timeouts at once, cancels when all)."""

    def __init__(self, ctx: BatchContext) -> None:
        super().__init__()
        self._ctx = ctx

    def abort(self, reason: str, message: str | None = None) -> None:
        super().abort(reason, message)
        self._ctx._item_aborted(reason, message)


@dataclass(slots=True)
class _Item:
    """What the worker sees of one item in ``runtime.inflight``: cancels and timeouts."""

    signal: StopToken
    deadline: float | None
    timeout: float | None
    lease: int


class BatchContext(BaseContext):
    """The ``ctx`` of a batch handler: identity, ``signal``, ``cancelled``, ``checkpoint``
    (which stops when every item is cancelled or lost)."""

    def __init__(self, batch: ClaimedBatch, task: Task, runtime: Runtime) -> None:
        self.execution_ids = batch.ids
        self.task_name = batch.task_name
        self.queue = batch.items[0].queue
        self.attempt = max(item.attempts for item in batch.items)
        self.signal = StopToken()
        self.timeout = task.timeout
        self.deadline = time.monotonic() + task.timeout if task.timeout else None
        self._runtime = runtime
        self.items = {
            item.id: _Item(signal=_ItemStopToken(self), deadline=self.deadline,
                           timeout=self.timeout, lease=item.lease)
            for item in batch.items
        }
        self.logger = TaskLoggerAdapter(task_logger, {
            "execution_id": ",".join(self.execution_ids), "task_name": self.task_name,
            "queue": self.queue, "attempt": self.attempt,
        })

    def __repr__(self) -> str:
        return f"<BatchContext {self.task_name} {len(self.execution_ids)} executions>"

    def _item_aborted(self, reason: str, message: str | None) -> None:
        if reason not in ("cancelled", "lost"):
            self.signal.abort(reason, message)
        elif all(item.signal.reason == reason for item in self.items.values()):
            self.signal.abort(reason, message)

    def cancelled(self, event: Event | str) -> bool:
        """Whether cancellation of this item (an ``Event`` or execution id) was requested."""
        eid = event.execution_id if isinstance(event, Event) else str(event)
        if self._runtime.inline:
            self._poll_cancel(eid)
        return self.items[eid].signal.reason == "cancelled"

    def _poll_cancel(self, eid: str) -> None:
        item = self.items[eid]
        if not item.signal.aborted:
            reason = Execution.objects.cancel_requested(eid, self._runtime.using)
            if reason is not None:
                item.signal.abort("cancelled", reason)

    def _verify_leases(self) -> None:
        for eid, item in self.items.items():  # every item lost: the batch stops
            self._runtime.verify_lease(eid, item)

    def _poll_cancels(self) -> None:
        for eid in self.execution_ids:
            self._poll_cancel(eid)

    def step(self, name: str, fn: Any) -> Any:
        raise TypeError(f"ctx.step is not available in batch task {self.task_name!r}: steps "
                        "are memoized per execution and a batch is regrouped on every attempt")


def run_batch(batch: ClaimedBatch, runtime: Runtime) -> str:
    """Run a claimed batch to the end of this attempt; returns the outcome for the log."""
    started = time.monotonic()
    logger.info("start %s batch of %d: %s", batch.task_name, batch.size, ", ".join(batch.ids),
                extra={"task_name": batch.task_name})
    try:
        task = get_task(batch.task_name, resolve=True)
    except LookupError:
        message = unknown_task_error(batch.task_name)
        logger.warning("%s batch of %d: %s", batch.task_name, batch.size, message,
                       extra={"task_name": batch.task_name})
        outcome = _fail_all(batch, runtime, None, message)
    else:
        ctx = BatchContext(batch, task, runtime)
        runtime.inflight.update(ctx.items)  # cancels and timeouts
        try:
            outcome = _call(task, batch, ctx, runtime)
        finally:
            for eid in batch.ids:
                runtime.inflight.pop(eid, None)
    logger.info("finish %s batch of %d %s in %.3fs", batch.task_name, batch.size, outcome,
                time.monotonic() - started, extra={"task_name": batch.task_name})
    return outcome


def _call(task: Task, batch: ClaimedBatch, ctx: BatchContext, runtime: Runtime) -> str:
    wid, db = runtime.worker_id, runtime.using
    events = [Event(name=c.event_name, payload=c.payload, execution_id=c.id)
              for c in batch.items]
    leases = {item.id: item.lease for item in batch.items}
    try:
        results = task.func(events, ctx)
    except LeaseLost:
        # Presumed dead: items recovered by others are theirs (nothing is written); one
        # still held under its lease (locked when they recovered) is handed back.
        for item in batch.items:
            final_write(partial(Execution.objects.give_up, item.id, wid, item.lease,
                                runtime.dead_after, db), db, item.id)
        return Outcome.LOST
    except Cancelled as exc:
        reason = safe_str(exc.reason) or DEFAULT_REASON
        for eid in batch.ids:
            final_write(partial(Execution.objects.finish_cancelled, eid, wid, leases[eid],
                                reason, db), db, eid)
        return Outcome.CANCELLED
    except AttemptTimedOut:
        return _fail_all(batch, runtime, task, timed_out(task.timeout))
    except Released as exc:
        run_at = exc.run_at or timezone.now()
        for eid in batch.ids:
            final_write(partial(Execution.objects.release, eid, wid, leases[eid], run_at, db),
                        db, eid)
        return Outcome.RELEASED
    except NonRetryableError as exc:
        return _fail_all(batch, runtime, task, error_message(exc), retry=False)
    except Exception as exc:
        logger.exception("batch of %s failed", task.name, extra={"task_name": task.name})
        return _fail_all(batch, runtime, task, error_message(exc))
    except BaseException as exc:  # sys.exit(), KeyboardInterrupt: as in runner._call
        if isinstance(exc, runtime.passthrough):
            raise
        logger.error("batch of %s failed: %s", task.name, error_message(exc), exc_info=exc,
                     extra={"task_name": task.name})
        return _fail_all(batch, runtime, task, error_message(exc))
    if not isinstance(results, list | tuple) or len(results) != batch.size:
        got = (f"{len(results)} results" if isinstance(results, list | tuple)
               else f"{type(results).__name__}, not a list")
        return _fail_all(batch, runtime, task, f"Batch task {task.name!r} returned {got} for "
                         f"{batch.size} events; it must return one result per event, in order")
    outcomes = []
    for item, result in zip(batch.items, results, strict=True):
        if isinstance(result, BaseException):
            outcomes.append(fail(item, runtime, task, error_message(result),
                                  retry=not isinstance(result, NonRetryableError)))
            continue
        try:
            check_json(result, f"result of task {task.name!r} for execution {item.id}")
        except (TypeError, ValueError) as exc:
            outcomes.append(fail(item, runtime, task, str(exc)))
            continue
        done = final_write(partial(Execution.objects.complete, item.id, wid, item.lease,
                                   result, db), db, item.id)
        outcomes.append(Outcome.COMPLETED if done else Outcome.LOST)
    return ",".join(sorted(set(outcomes)))


def _fail_all(batch: ClaimedBatch, runtime: Runtime, task: Task | None, error: str, *,
              retry: bool = True) -> str:
    outcomes = {fail(item, runtime, task, error, retry=retry) for item in batch.items}
    return ",".join(sorted(outcomes))
