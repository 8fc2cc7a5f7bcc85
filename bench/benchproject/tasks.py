"""The benchmark's tasks: a no-op, three memoized steps, a latency probe, a cancel loop, and
a start recorder (bench/many_workers.py)."""

import os
import time

from conductor_django import task


@task(name="bench.noop")
def noop(event, ctx):
    return None


@task(name="bench.steps3")
def steps3(event, ctx):
    for n in range(3):
        ctx.step(f"s{n}", lambda n=n: n)


@task(name="bench.lat")
def lat(event, ctx):
    return time.time() - event.payload["t"]


@task(name="bench.loop")
def loop(event, ctx):
    started = time.time()
    while not ctx.signal.aborted:
        ctx.signal.wait(0.01)
    return {"started": started, "noticed": time.time()}


@task(name="bench.record")
def record(event, ctx):
    """Append "execution attempt pid" to the payload's file, outside any transaction
    (one write of one line, O_APPEND): a second start of an execution shows there."""
    line = f"{ctx.execution_id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(event.payload["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
