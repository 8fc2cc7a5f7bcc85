"""No-op tasks that differ only in their flow control, so a benchmark measures its cost."""

from conductor_django import Batch, RateLimit, task


@task(name="bench-plain")
def plain(event, ctx):
    return None


@task(name="bench-limit-4", concurrency=4)
def limit_4(event, ctx):
    return None


@task(name="bench-limit-100", concurrency=100)
def limit_100(event, ctx):
    """A limit never reached: the cost of the limited claim path alone."""
    return None


@task(name="bench-window", window=("00:00", "23:59:59"))
def windowed(event, ctx):
    ctx.checkpoint()  # one window check at a step boundary
    return None


@task(name="bench-batch-50", batch=Batch(size=50, timeout=0.2))
def batch_50(events, ctx):
    return [None] * len(events)


# --- keys (docs/flow-control.md, "Keys"): limits that never bind, to measure the keyed claim


@task(name="bench-keyed", key_concurrency=1_000_000)
def keyed(event, ctx):
    """Claimed key by key (round-robin), with a per-key limit that is never reached."""
    return None


@task(name="bench-keyed-rate", key_concurrency=1_000_000,
      rate_limit=RateLimit(1_000_000, 1.0, per_key=True))
def keyed_rate(event, ctx):
    """Keyed, and every claim also counts the key's starts of the last second."""
    return None
