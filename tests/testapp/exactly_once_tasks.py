"""Tasks of the fencing, atomic-step and drain-parity tests (tests/test_exactly_once.py)."""

import time

from conductor_django import Cancelled, task

from .models import Mark


@task(name="report-cancel-reason", max_attempts=1)
def report_cancel_reason(event, ctx):
    """Waits for its cancel and returns the reason the ``Cancelled`` it got carries."""
    Mark.add(f"{event.payload['key']}:started")
    ctx.signal.wait(30)
    try:
        ctx.checkpoint()
    except Cancelled as exc:
        return {"reason": exc.reason, "signal": ctx.signal.message}
    return {"reason": None}


@task(name="atomic-order", max_attempts=3)
def atomic_order(event, ctx):
    """Creates an order row in an atomic step; ``fail_after_write`` breaks attempt 1."""
    key = event.payload["key"]

    def create_order():
        Mark.add(f"{key}:order", str(ctx.attempt))
        if event.payload.get("fail_after_write") and ctx.attempt == 1:
            raise RuntimeError("payment provider said no")
        return {"attempt": ctx.attempt}

    first = ctx.step("create-order", create_order, atomic=True)
    again = ctx.step("create-order", create_order, atomic=True)  # memoized: runs nothing
    return {"order": first, "again": again}


@task(name="atomic-elsewhere", max_attempts=1)
def atomic_elsewhere(event, ctx):
    """Writes to another database inside an atomic step: refused before it is written."""
    key = event.payload["key"]

    def both():
        Mark.add(f"{key}:here")
        Mark.objects.using("other").create(key=f"{key}:there")

    return ctx.step("both", both, atomic=True)


@task(name="step-sees-cancel", max_attempts=1)
def step_sees_cancel(event, ctx):
    """A long step that returns early when aborted: that step must not be memoized."""
    key = event.payload["key"]

    def long_work():
        Mark.add(f"{key}:work-started")
        ctx.signal.wait(30)
        return "partial"

    ctx.step("long", long_work)
    Mark.add(f"{key}:after-step")
    return "done"


@task(name="timeout-wakes-wait", timeout=0.4, max_attempts=1)
def timeout_wakes_wait(event, ctx):
    """Records how long ``ctx.signal.wait`` slept before the timeout woke it."""
    began = time.monotonic()
    woke = ctx.signal.wait(10)
    Mark.add(f"{event.payload['key']}:woke", f"{woke}:{ctx.signal.reason}:"
             f"{time.monotonic() - began:.3f}")
    ctx.checkpoint()
    return "not reached"
