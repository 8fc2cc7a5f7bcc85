"""Tasks of the chaos tests (tests/test_chaos*.py), run by real worker subprocesses.

Every step function appends what it does to the file named by the payload's ``log``,
OUTSIDE every database transaction (one ``os.write`` of one JSON line per event, on a
file opened with ``O_APPEND``), so that a run the database never heard of, or a second
run of a step whose record was committed, is still visible to the test. Events:

* ``start`` / ``end`` of a step function: ``eid``, ``step``, ``attempt``, ``pid``, ``t``;
* ``handler``: the handler body started (``eid``, ``attempt``);
* ``cancelled``: the handler caught ``Cancelled`` (``reason`` is what it carried);
* ``wrote``: the atomic step created its order row (not committed yet).

The step functions block in plain ``time.sleep`` on purpose: user code that ignores
``ctx.signal``, as most real side effects do.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from conductor_django import Cancelled, task

from .models import ChaosOrder


def record(path: str, event: str, **fields: Any) -> None:
    """Append one event line to ``path``; one ``write`` call, so lines never interleave."""
    line = json.dumps({"ev": event, "pid": os.getpid(), "t": time.time(), **fields})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def recorded_step(ctx: Any, log: str, name: str, pause: float, value: Any = None) -> Any:
    """``ctx.step(name, fn)`` where ``fn`` records its start and end around a pause."""
    eid, attempt = ctx.execution_id, ctx.attempt

    def fn() -> Any:
        record(log, "start", eid=eid, step=name, attempt=attempt)
        if pause:
            time.sleep(pause)
        record(log, "end", eid=eid, step=name, attempt=attempt)
        return value if value is not None else name

    return ctx.step(name, fn)


@task(name="chaos-steps", max_attempts=50)
def chaos_steps(event, ctx):
    """``steps`` recorded steps of ``pause`` seconds each; with ``log_lines`` one
    ``ctx.logger`` line after each step (stored with the attempt's log lines)."""
    p = event.payload
    for n in range(p.get("steps", 3)):
        recorded_step(ctx, p["log"], f"s{n}", p.get("pause", 0.0))
        if p.get("log_lines"):
            ctx.logger.warning("after step s%d", n)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@task(name="chaos-cancellable", max_attempts=3)
def chaos_cancellable(event, ctx):
    """Ticks (short interruptible steps) until cancelled; records the reason it saw."""
    p = event.payload
    log = p["log"]
    record(log, "handler", eid=ctx.execution_id, attempt=ctx.attempt)
    try:
        for n in range(p.get("ticks", 3000)):
            ctx.step(f"tick-{n}", lambda: ctx.signal.wait(p.get("tick", 0.05)) and None)
    except Cancelled as exc:
        record(log, "cancelled", eid=ctx.execution_id, attempt=ctx.attempt, reason=exc.reason)
        raise
    return "never cancelled"


@task(name="chaos-atomic", max_attempts=10)
def chaos_atomic(event, ctx):
    """An atomic step creates this execution's order row, then (on attempt 1) blocks for
    ``hold`` seconds before returning, so that its worker can be killed in between."""
    p = event.payload
    log, eid, attempt = p["log"], ctx.execution_id, ctx.attempt

    def create_order() -> int:
        record(log, "start", eid=eid, step="order", attempt=attempt)
        order = ChaosOrder.objects.create(execution_id=eid, attempt=attempt)
        record(log, "wrote", eid=eid, step="order", attempt=attempt)
        if attempt == 1:
            time.sleep(p.get("hold", 60))
        record(log, "end", eid=eid, step="order", attempt=attempt)
        return order.pk

    order_id = ctx.step("order", create_order, atomic=True)
    recorded_step(ctx, log, "after", 0.0)
    return {"order": order_id, "attempt": attempt, "pid": os.getpid()}


@task(name="chaos-noop", invocable=False)
def chaos_noop(event, ctx):
    """The target of the schedules that the SQLite locking scenario creates and removes."""
    return None


@task(name="chaos-scheduler", max_attempts=1)
def chaos_scheduler(event, ctx):
    """Creates and removes a schedule from inside a handler, around a step."""
    p = event.payload
    name = f"h-{ctx.execution_id}"
    ctx.schedule("chaos-noop", name, "0 0 1 1 *", payload={"by": ctx.execution_id})
    recorded_step(ctx, p["log"], "between", 0.0)
    removed = ctx.unschedule("chaos-noop", name)
    return {"removed": removed}


@task(name="chaos-restart", max_attempts=50)
def chaos_restart(event, ctx):
    """What a database restart can interrupt: a recorded step, a durable sleep, (with
    ``signal``) a wait for the signal "go", then another recorded step."""
    p = event.payload
    recorded_step(ctx, p["log"], "s0", p.get("pause", 0.0))
    ctx.sleep("nap", p.get("nap", 0.2))
    if p.get("signal"):
        ctx.wait_for_signal("go")
    recorded_step(ctx, p["log"], "s1", p.get("pause", 0.0))
    return {"attempt": ctx.attempt, "pid": os.getpid()}
