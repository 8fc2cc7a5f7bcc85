"""Tasks of the flow-control tests (listed in ``CONDUCTOR["TASK_MODULES"]``)."""

import os

from conductor_django import Batch, NonRetryableError, task

from .models import Gauge, Mark


@task(name="limited", concurrency=2)
def limited(event, ctx):
    """Holds a slot for a moment and records how many ran at once (``Gauge``)."""
    Gauge.enter("limited")
    try:
        ctx.signal.wait(event.payload.get("hold", 0.3))
    finally:
        Gauge.leave("limited")
    Mark.add("limited:done", str(event.payload["n"]))
    return os.getpid()


@task(name="ordered")
def ordered(event, ctx):
    Mark.add("ordered", str(event.payload["n"]))


@task(name="night-job", window=("22:00", "06:00"))
def night_job(event, ctx):
    Mark.add("night-job", str(event.payload))
    return "ran at night"


def _env_window():
    """The window a test gives the worker subprocess (``"HH:MM:SS-HH:MM:SS"``); else none."""
    spec = os.environ.get("CONDUCTOR_TEST_WINDOW")
    return tuple(spec.split("-")) if spec else None


@task(name="windowed-steps", window=_env_window())
def windowed_steps(event, ctx):
    """Numbered steps until the window closes; resumes from the first unfinished one."""
    key, pause = event.payload["key"], event.payload["pause"]
    for n in range(event.payload["steps"]):
        ctx.step(f"s{n}", lambda n=n: Mark.add(f"{key}:step", str(n)) or ctx.signal.wait(pause)
                 or n)
    return "all steps"


@task(name="batched", batch=Batch(size=3, timeout=30))
def batched(events, ctx):
    """Doubles each payload; records the batch it ran in."""
    ids = ",".join(e.execution_id for e in events)
    for e in events:
        Mark.add("batched", f"{e.execution_id}|{ids}")
    return [e.payload * 2 for e in events]


@task(name="batched-quick", batch=Batch(size=100, timeout=0.3))
def batched_quick(events, ctx):
    Mark.add("batched-quick", str(len(events)))
    return [e.payload for e in events]


@task(name="batched-wrong", batch=Batch(size=5, timeout=0), max_attempts=1)
def batched_wrong(events, ctx):
    return [1]


@task(name="batched-mixed", batch=Batch(size=5, timeout=0), max_attempts=1)
def batched_mixed(events, ctx):
    """An exception instance fails just its item."""
    return [NonRetryableError("odd one out") if e.payload == "bad" else e.payload
            for e in events]


@task(name="batched-cancellable", batch=Batch(size=3, timeout=30))
def batched_cancellable(events, ctx):
    """Waits until one item is cancelled, then skips it and finishes the others."""
    for e in events:
        Mark.add("cancellable:started", e.execution_id)
    while not any(ctx.cancelled(e) for e in events):
        if ctx.signal.wait(0.05):
            break
        ctx.checkpoint()
    ctx.checkpoint()  # one item cancelled is not the whole batch: this goes on
    return [None if ctx.cancelled(e) else f"done {e.payload}" for e in events]
