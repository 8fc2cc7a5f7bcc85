"""The runtime's observability hooks: metrics (``metrics.py``) and spans (``tracing.py``).

The runner calls ``start(...)`` when a handler is about to run and ``Run.end(outcome)``
when its outcome is known; ``ctx.step`` wraps each step in ``step(...)``. With neither
``prometheus_client`` nor an OpenTelemetry SDK the hooks do nothing but a few attribute
reads; see docs/observability.md for what they cost when on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from .. import conf, metrics, tracing
from ..models import Execution

if TYPE_CHECKING:
    from .context import Context
    from .unit import ExecutionUnit

#: Span events for the reasons an attempt stopped early (``ctx.signal.reason``).
SIGNAL_EVENTS = {"cancelled": "conductor.cancelled", "timeout": "conductor.timeout",
                 "lost": "conductor.lost"}
OUTCOME_EVENTS = {"released": "conductor.released", "suspended": "conductor.suspended"}
ERROR_OUTCOMES = ("failed", "retrying")
#: What ``step`` returns without tracing (``nullcontext`` is reusable and reentrant).
NO_SPAN = nullcontext()


class Run:
    """One run of a claimed execution on this worker: its counters and its span."""

    __slots__ = ("ctx", "began", "span")

    def __init__(self, ctx: Context, span: tracing.Attempt | None) -> None:
        self.ctx = ctx
        self.began = time.monotonic()
        self.span = span

    def detach(self) -> None:
        """The handler returned or raised: its thread leaves the span's context."""
        if self.span is not None:
            self.span.detach()

    def end(self, outcome: str, error: str | None = None) -> None:
        ctx = self.ctx
        metrics.finished(ctx.task_name, ctx.queue, outcome, time.monotonic() - self.began)
        span = self.span
        if span is None:
            return
        reason = ctx.signal.reason
        if reason in SIGNAL_EVENTS:
            span.event(SIGNAL_EVENTS[reason], {"conductor.reason": ctx.signal.message or ""})
        if outcome in OUTCOME_EVENTS:
            span.event(OUTCOME_EVENTS[outcome])
        span.end(outcome, error or (outcome if outcome in ERROR_OUTCOMES else None))


def start(ctx: Context, using: str) -> Run:
    """A handler of ``ctx``'s execution starts on this thread."""
    metrics.started(ctx.task_name, ctx.queue)
    span = None
    if tracing.enabled():  # one primary-key read: the invoker's trace context
        parent = (Execution.objects.using(using).filter(pk=ctx.execution_id)
                  .values_list("trace_context", flat=True).first())
        span = tracing.start_attempt(f"conductor.run {ctx.task_name}", parent, {
            "conductor.execution_id": str(ctx.execution_id),
            "conductor.task": ctx.task_name,
            "conductor.queue": ctx.queue,
            "conductor.attempt": ctx.attempt,
        }, baggage=conf.get("TRACE_BAGGAGE") is True)
    return Run(ctx, span)


def step(ctx: Context, name: str, memoized: bool) -> Any:
    """A context manager around one ``ctx.step``: its span (a child of the attempt's)."""
    if not tracing.enabled():
        return NO_SPAN  # the hot path without tracing: no attributes to build
    return tracing.step(f"conductor.step {name}", {
        "conductor.step": name, "conductor.step.memoized": memoized,
        "conductor.execution_id": str(ctx.execution_id),
    })


def batch(claimed: ExecutionUnit, run: Callable[[], str]) -> str:
    """Count the items of a batch task's run (one handler call): started, then finished
    with the batch's outcome and duration. A batch gets no spans."""
    for item in claimed.items:
        metrics.started(item.task_name, item.queue)
    began = time.monotonic()
    outcome = run()
    seconds = time.monotonic() - began
    for item in claimed.items:
        metrics.finished(item.task_name, item.queue, outcome, seconds)
    return outcome
