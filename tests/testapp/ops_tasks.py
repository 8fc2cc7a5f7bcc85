"""Tasks of the pause/resume and live-limits tests (tests/test_operations.py)."""

from conductor_django import task

from .models import Gauge, Mark


@task(name="ops-work", queue="ops")
def ops_work(event, ctx):
    """Marks its start and its end (append-only), holding a moment in between."""
    Mark.add("ops:start", ctx.execution_id)
    ctx.signal.wait(event.payload.get("hold", 0.2))
    Mark.add("ops:done", ctx.execution_id)


@task(name="ops-other", queue="ops-other")
def ops_other(event, ctx):
    Mark.add("ops-other", ctx.execution_id)


@task(name="ops-limited", concurrency=4)
def ops_limited(event, ctx):
    """Records how many run at once (``Gauge``)."""
    Gauge.enter("ops-limited")
    try:
        ctx.signal.wait(event.payload.get("hold", 0.3))
    finally:
        Gauge.leave("ops-limited")
    Mark.add("ops-limited:done", ctx.execution_id)


@task(name="ops-cron", queue="ops-cron")
def ops_cron(event, ctx):
    Mark.add("ops-cron", str(event.payload))
