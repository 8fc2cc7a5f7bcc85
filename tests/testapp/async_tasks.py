"""``async def`` tasks: the async twins of the cancellation, recovery and shutdown tasks.

Side effects that must show a double run go to an append-only file named in the
payload (``"log"``), written outside every transaction: one line per event.
"""

import asyncio
import os
import time

from asgiref.sync import sync_to_async

from conductor_django import task

from .models import Mark


def note(path: str, line: str) -> None:
    """Append one line to ``path`` (a test's side-effect log)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def lines(path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


mark = sync_to_async(Mark.add, thread_sensitive=False)


@task(name="async-echo")
async def async_echo(event, ctx):
    """An async step, a sync step (run in a thread), a memoized repeat."""

    async def fetch():
        await asyncio.sleep(0.01)
        return {"fetched": event.payload}

    first = await ctx.step("fetch", fetch)
    second = await ctx.step("sync", lambda: Mark.add("async-echo:sync") or "synced")
    again = await ctx.step("fetch", fetch)  # a repeated name returns the first result
    return {"first": first, "second": second, "same": again == first,
            "attempt": ctx.attempt, "queue": ctx.queue}


@task(name="async-nap-step", max_attempts=1)
async def async_nap_step(event, ctx):
    """One step that awaits ``asyncio.sleep(seconds)``: thousands share one event loop."""

    async def nap():
        await asyncio.sleep(event.payload.get("seconds", 1))
        return event.payload.get("n")

    return await ctx.step("nap", nap)


@task(name="async-loop-until-cancelled", max_attempts=3)
async def async_loop_until_cancelled(event, ctx):
    key = event.payload["key"]
    await mark(f"{key}:started")
    n = 0
    while n < 2000:
        n += 1
        await ctx.step(f"tick-{n}", lambda: asyncio.sleep(0.05))
    return "not cancelled"


@task(name="async-await-forever", max_attempts=3)
async def async_await_forever(event, ctx):
    """Awaits inside a step until interrupted; logs when the interruption arrived."""
    log = event.payload["log"]

    async def forever():
        # "started" once the step's coroutine runs: a cancel the test sends after seeing
        # it finds the await, not the step boundary before it
        note(log, f"started {ctx.attempt}")
        try:
            await asyncio.sleep(event.payload.get("seconds", 60))
        except asyncio.CancelledError:
            note(log, f"interrupted {time.time():.6f} {ctx.signal.reason}")
            raise
        note(log, "step-finished")
        return "slept"

    await ctx.step("wait", forever)
    note(log, "after-step")
    return "finished"


@task(name="async-swallow", max_attempts=3)
async def async_swallow(event, ctx):
    """Catches ``Exception`` around steps: ``Cancelled`` gets through all the same."""
    log = event.payload["log"]
    note(log, "started")
    try:
        await ctx.step("wait", lambda: asyncio.sleep(60))
    except Exception:  # noqa: BLE001 - the point of the test
        note(log, "swallowed")
    try:
        await ctx.step("after", lambda: note(log, "step-ran"))
    except Exception:  # noqa: BLE001
        note(log, "swallowed")
    return "returned"


@task(name="async-return-after-cancel", max_attempts=3)
async def async_return_after_cancel(event, ctx):
    """Catches the interruption and returns a value instead."""
    log = event.payload["log"]
    note(log, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        note(log, "interrupted")
    return {"stopped": ctx.signal.aborted, "reason": ctx.signal.reason}


@task(name="async-timeout", timeout=0.5, max_attempts=2)
async def async_timeout(event, ctx):
    log = event.payload["log"]
    note(log, f"attempt {ctx.attempt}")
    try:
        await ctx.step("slow", lambda: asyncio.sleep(10))
    except asyncio.CancelledError:
        note(log, f"interrupted {ctx.signal.reason}")  # the runner makes it the timeout
        raise
    return "never"


@task(name="async-hang-in-step", max_attempts=3)
async def async_hang_in_step(event, ctx):
    """Step ``a``, then step ``b`` hangs on the first attempt (until its worker is killed)."""
    log = event.payload["log"]
    await ctx.step("a", lambda: note(log, f"a {ctx.attempt}"))

    async def b():
        note(log, f"b {ctx.attempt} {os.getpid()}")
        if ctx.attempt == 1:
            await asyncio.sleep(60)
        return "B"

    return await ctx.step("b", b)


@task(name="async-kill-own-worker", max_attempts=2)
async def async_kill_own_worker(event, ctx):
    import signal as signals

    note(event.payload["log"], f"attempt {ctx.attempt}")
    os.kill(os.getpid(), signals.SIGKILL)


@task(name="async-steady-steps", max_attempts=3)
async def async_steady_steps(event, ctx):
    """``count`` steps, each logged with its attempt and awaiting ``pause`` seconds."""
    p = event.payload
    for n in range(p.get("count", 5)):
        async def one(n=n):
            note(p["log"], f"step-{n} {ctx.attempt} {os.getpid()}")
            await asyncio.sleep(p.get("pause", 0.2))
            return n
        await ctx.step(f"step-{n}", one)
    return {"attempt": ctx.attempt}


@task(name="async-sleepy", max_attempts=1)
async def async_sleepy(event, ctx):
    """Awaits without a step boundary (for the shutdown timeout)."""
    log = event.payload["log"]
    note(log, "started")
    await asyncio.sleep(event.payload.get("seconds", 60))
    note(log, "done")
    return "slept"


@task(name="async-durable", max_attempts=2)
async def async_durable(event, ctx):
    """A durable sleep, a child execution and a signal, awaited."""
    p = event.payload
    await ctx.step("before", lambda: note(p["log"], "before"))
    await ctx.sleep("nap", p.get("nap", 0.2))
    child = await ctx.invoke("child", "async-echo", {"from": ctx.execution_id})
    answer = await ctx.wait_for_signal("approval", timeout=p.get("timeout", 30))
    await ctx.step("after", lambda: note(p["log"], "after"))
    return {"child": child["first"], "answer": answer, "attempt": ctx.attempt}


@task(name="async-raise-after-cancel", max_attempts=3)
async def async_raise_after_cancel(event, ctx):
    log = event.payload["log"]
    note(log, "started")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        raise RuntimeError("cleanup failed") from None
    return "never"


@task(name="async-signal-checkpoint", max_attempts=3)
async def async_signal_checkpoint(event, ctx):
    """Records what ``ctx.signal`` says after the interruption, then reaches a boundary."""
    log = event.payload["log"]
    note(log, "started")
    try:
        await asyncio.sleep(event.payload.get("seconds", 60))
    except asyncio.CancelledError:
        note(log, f"aborted {ctx.signal.aborted}:{ctx.signal.reason}")
    await ctx.checkpoint()
    note(log, "after-checkpoint")
    return "finished"


@task(name="async-ping")
async def async_ping(event, ctx):
    """An awaited step and nothing else: what the worker itself writes."""
    return await ctx.step("pong", lambda: asyncio.sleep(0.01, result=event.payload))
