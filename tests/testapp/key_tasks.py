"""Tasks of the key tests (tests/test_keys.py): per-key concurrency, rate limits, fairness.

Each handler appends a line to the file named by the payload's ``log`` (``O_APPEND``,
outside every transaction): ``start|end <execution id> <key> <unix time>``, so a test
reads what really ran and when, not what the rows say.
"""

import os
import time

from conductor_django import RateLimit, task


def record(event, what: str) -> None:
    line = f"{what} {event.execution_id} {event.payload.get('key', '-')} {time.time():.6f}\n"
    fd = os.open(event.payload["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def hold(event, ctx) -> None:
    record(event, "start")
    try:
        ctx.signal.wait(event.payload.get("hold", 0.0))
    finally:
        record(event, "end")


@task(name="keyed-limited", key_concurrency=2, concurrency=5)
def keyed_limited(event, ctx):
    """At most 2 per key and 5 in all at once."""
    hold(event, ctx)


@task(name="keyed-ten", key_concurrency=10)
def keyed_ten(event, ctx):
    """At most 10 per key: more than one claim of 8 can take."""
    hold(event, ctx)


@task(name="rated", rate_limit=RateLimit(3, 2.0))
def rated(event, ctx):
    """At most 3 starts in any 2 seconds."""
    hold(event, ctx)


@task(name="rated-per-key", rate_limit=RateLimit(2, 2.0, per_key=True), key_concurrency=10)
def rated_per_key(event, ctx):
    """At most 2 starts of one key in any 2 seconds."""
    hold(event, ctx)


@task(name="fair", key_concurrency=1000)
def fair(event, ctx):
    """Keyed (so claimed round-robin across keys) with a limit that never binds here."""
    hold(event, ctx)


@task(name="rated-hourly", rate_limit=RateLimit(1, 3600))
def rated_hourly(event, ctx):
    """One start an hour (the admin's "rate limited until" test)."""
    hold(event, ctx)
