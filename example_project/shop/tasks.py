"""The example project's tasks (the README's quickstart runs these)."""

from conductor_django import Batch, task


@task(name="send-welcome-email", max_attempts=3)
def send_welcome_email(event, ctx):
    """Two memoized steps: a retry never renders or sends twice."""
    user = event.payload["user"]
    body = ctx.step("render", lambda: f"Welcome, {user}!")
    ctx.step("send", lambda: ctx.logger.info("sending %r", body) or {"sent_to": user})
    return {"sent": True}


@task(name="long-report")
def long_report(event, ctx):
    """One step per section, long enough to be cancelled while it runs."""
    sections = event.payload.get("sections", 60)
    for n in range(sections):
        ctx.step(f"section-{n}", lambda: ctx.signal.wait(0.5) and None)
    return {"sections": sections}


# --- flow control (docs/flow-control.md) ------------------------------------------------


@task(name="sync-inventory", concurrency=2)
def sync_inventory(event, ctx):
    """At most two syncs at once across every worker (the supplier's API limit)."""
    return ctx.step("fetch", lambda: {"sku": event.payload["sku"], "stock": 7})


@task(name="nightly-reindex", window=("22:00", "06:00"))
def nightly_reindex(event, ctx):
    """Runs only at night (TIME_ZONE); a run still going at 06:00 pauses until 22:00."""
    for n in range(event.payload.get("shards", 4)):
        ctx.step(f"shard-{n}", lambda n=n: f"reindexed shard {n}")
    return "reindexed"


@task(name="send-push", batch=Batch(size=50, timeout=2.0))
def send_push(events, ctx):
    """One call to the push provider for up to 50 notifications."""
    return [{"sent_to": e.payload["user"]} for e in events]
