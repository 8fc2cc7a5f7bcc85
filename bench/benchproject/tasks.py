"""The benchmark's tasks: a no-op, three memoized steps, a latency probe, a cancel loop."""

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
