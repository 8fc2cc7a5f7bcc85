"""Tasks the test suite runs, in-process and in real worker subprocesses."""

import time

from conductor_django import NonRetryableError, task

from .models import Mark


@task(name="echo")
def echo(event, ctx):
    return {"payload": event.payload, "attempt": ctx.attempt, "queue": ctx.queue}


@task(name="not-invocable", invocable=False)
def not_invocable(event, ctx):
    return None


@task(name="on-other-queue", queue="other")
def on_other_queue(event, ctx):
    Mark.add("other", str(event.payload))


@task(name="steps-then-fail", max_attempts=3)
def steps_then_fail(event, ctx):
    """Step a runs once; step b fails on the first two attempts."""
    key = event.payload["key"]
    a = ctx.step("a", lambda: Mark.add(f"{key}:a") or "A")

    def b():
        Mark.add(f"{key}:b")
        if ctx.attempt < 3:
            raise RuntimeError(f"b fails on attempt {ctx.attempt}")
        return "B"

    return [a, ctx.step("b", b)]


@task(name="always-fails", max_attempts=2)
def always_fails(event, ctx):
    raise ValueError("boom")


@task(name="non-retryable", max_attempts=5)
def non_retryable(event, ctx):
    raise NonRetryableError("bad input, do not retry")


@task(name="loop-until-cancelled", max_attempts=3)
def loop_until_cancelled(event, ctx):
    """Mark the start, then run numbered steps until cancellation stops it."""
    key = event.payload["key"]
    Mark.add(f"{key}:started")
    n = 0
    while True:
        n += 1
        ctx.step(f"tick-{n}", lambda: ctx.signal.wait(0.05) and None)
        if n > 2000:
            return "not cancelled"


@task(name="wait-for-signal", max_attempts=3)
def wait_for_signal(event, ctx):
    """Waits on ctx.signal, records what it saw, then checkpoints."""
    key = event.payload["key"]
    Mark.add(f"{key}:started")
    seen = ctx.signal.wait(event.payload.get("seconds", 30))
    Mark.add(f"{key}:aborted", f"{seen}:{ctx.signal.reason}")
    ctx.checkpoint()
    Mark.add(f"{key}:after-checkpoint")
    return "finished"


@task(name="swallow-and-return", max_attempts=3)
def swallow_and_return(event, ctx):
    """Catches Exception around a step: Cancelled still gets through."""
    key = event.payload["key"]
    Mark.add(f"{key}:started")
    ctx.signal.wait(30)
    try:
        ctx.step("after", lambda: Mark.add(f"{key}:step-ran"))
    except Exception:  # noqa: BLE001 - the point of the test
        Mark.add(f"{key}:swallowed")
    return "returned"


@task(name="return-after-cancel", max_attempts=3)
def return_after_cancel(event, ctx):
    """Notices the cancel and returns a value instead of reaching a boundary."""
    key = event.payload["key"]
    Mark.add(f"{key}:started")
    ctx.signal.wait(30)
    return {"stopped": ctx.signal.aborted}


@task(name="raise-after-cancel", max_attempts=3)
def raise_after_cancel(event, ctx):
    key = event.payload["key"]
    Mark.add(f"{key}:started")
    ctx.signal.wait(30)
    raise RuntimeError("cleanup failed")


@task(name="sleepy", max_attempts=1)
def sleepy(event, ctx):
    """Blocks without step boundaries for a while (for shutdown tests)."""
    key = event.payload["key"]
    Mark.add(f"{key}:started")
    time.sleep(event.payload.get("seconds", 1))
    Mark.add(f"{key}:done")
    return "slept"


@task(name="timeout-task", timeout=0.3, max_attempts=2)
def timeout_task(event, ctx):
    Mark.add(f"{event.payload['key']}:attempt", str(ctx.attempt))
    ctx.signal.wait(5)
    ctx.checkpoint()
    return "never"


@task(name="record-run")
def record_run(event, ctx):
    """Records the run with the worker's pid, for double-run checks."""
    import os

    Mark.add(f"run:{event.payload['n']}", str(os.getpid()))
    time.sleep(event.payload.get("sleep", 0))


# --- durable suspension and resilience (tests/test_durable.py, tests/test_resilience.py)


@task(name="nap", max_attempts=1)
def nap(event, ctx):
    """A step, a durable sleep, a step."""
    key = event.payload["key"]
    ctx.step("before", lambda: Mark.add(f"{key}:before"))
    ctx.sleep("nap", event.payload.get("seconds", 1))
    ctx.step("after", lambda: Mark.add(f"{key}:after"))
    return {"attempt": ctx.attempt}


@task(name="parent", max_attempts=2)
def parent(event, ctx):
    """Invokes ``child_task`` as a child; with ``catch`` returns the timeout instead."""
    p = event.payload
    key = p["key"]
    ctx.step("before", lambda: Mark.add(f"{key}:before"))
    try:
        result = ctx.invoke("child", p["child_task"], p.get("child_payload"),
                            timeout=p.get("timeout"))
    except TimeoutError as exc:
        if not p.get("catch"):
            raise
        result = {"timed_out": str(exc)}
    ctx.step("after", lambda: Mark.add(f"{key}:after"))
    return {"child": result, "attempt": ctx.attempt}


@task(name="steady-steps", max_attempts=3)
def steady_steps(event, ctx):
    """``count`` steps, each recorded with its attempt and taking ``pause`` seconds."""
    p = event.payload
    key = p["key"]
    for n in range(p.get("count", 5)):
        def one(n=n):
            Mark.add(f"{key}:step-{n}", str(ctx.attempt))
            ctx.signal.wait(p.get("pause", 0.2))
            return n
        ctx.step(f"step-{n}", one)
    return {"attempt": ctx.attempt}


@task(name="hang-in-step", max_attempts=3)
def hang_in_step(event, ctx):
    """Step ``a``, then step ``b`` hangs on the first attempt (until its worker is killed)."""
    key = event.payload["key"]
    ctx.step("a", lambda: Mark.add(f"{key}:a"))

    def b():
        Mark.add(f"{key}:b", str(ctx.attempt))
        if ctx.attempt == 1:
            time.sleep(60)
        return "B"

    return ctx.step("b", b)


@task(name="kill-own-worker", max_attempts=2)
def kill_own_worker(event, ctx):
    """Kills the worker process that runs it, on every attempt."""
    import os
    import signal as signals

    Mark.add(f"{event.payload['key']}:attempt", str(ctx.attempt))
    os.kill(os.getpid(), signals.SIGKILL)


@task(name="timeout-reason", timeout=0.5, max_attempts=2)
def timeout_reason(event, ctx):
    """Records what ``ctx.signal`` says when the timeout fires, then reaches a boundary."""
    key = event.payload["key"]
    aborted = ctx.signal.wait(10)
    Mark.add(f"{key}:signal", f"{aborted}:{ctx.signal.reason}:{ctx.attempt}")
    ctx.step("after-timeout", lambda: Mark.add(f"{key}:step-ran"))
    return "not reached"


# --- scheduling ----------------------------------------------------------------------


@task(name="scheduled-mark", invocable=False)
def scheduled_mark(event, ctx):
    """Records one run per execution: key ``sched:<schedule>``, value the execution id."""
    Mark.add(f"sched:{event.name}", ctx.execution_id)
    if isinstance(event.payload, dict) and event.payload.get("seconds"):
        ctx.signal.wait(event.payload["seconds"])
    return {"schedule": event.name, "payload": event.payload}


@task(name="unschedule-self", max_attempts=1)
def unschedule_self(event, ctx):
    """Removes the schedule that started it; the next step boundary stops it."""
    Mark.add(f"unsched:{event.name}:started", ctx.execution_id)
    removed = ctx.unschedule("unschedule-self", event.name)
    Mark.add(f"unsched:{event.name}:removed", str(removed))
    ctx.step("after-unschedule", lambda: Mark.add(f"unsched:{event.name}:step-ran"))
    return "not cancelled"


@task(name="manage-schedule")
def manage_schedule(event, ctx):
    """Creates (``{"create": name}``) or removes (``{"remove": name}``) a dynamic schedule."""
    if "create" in event.payload:
        ctx.schedule("scheduled-mark", event.payload["create"], event.payload["cron"],
                     payload={"by": ctx.execution_id})
        return "created"
    return ctx.unschedule("scheduled-mark", event.payload["remove"])
