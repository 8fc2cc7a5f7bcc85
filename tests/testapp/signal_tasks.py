"""Tasks of the signal and progress tests (tests/test_signals*.py)."""

from conductor_django import SignalTimeout, task

from .models import Mark


@task(name="await-decision", max_attempts=3)
def await_decision(event, ctx):
    """Waits for the signal "decision"; reports progress around it."""
    p = event.payload or {}
    key = p.get("key", "d")
    ctx.step("before", lambda: Mark.add(f"{key}:before"))  # once, however often resumed
    ctx.progress(0, 2, "waiting for a decision")
    try:
        decision = ctx.wait_for_signal("decision", timeout=p.get("timeout"),
                                       choices=p.get("choices"))
    except SignalTimeout as exc:
        Mark.add(f"{key}:timed-out")
        if not p.get("catch"):
            raise
        ctx.progress(2, 2, "no decision")
        return {"timed_out": str(exc), "attempt": ctx.attempt}
    Mark.add(f"{key}:after", str(decision))
    if p.get("fail_after"):
        raise ValueError("after the decision")
    ctx.progress(2, 2, "decided")
    return {"decision": decision, "attempt": ctx.attempt}


@task(name="count-with-progress")
def count_with_progress(event, ctx):
    """Reports progress ``n`` times as fast as it can; the last report must be kept."""
    n = event.payload["n"]
    for i in range(1, n + 1):
        ctx.progress(i, n, f"item {i}")
    return n


@task(name="twice-same-signal")
def twice_same_signal(event, ctx):
    """Waits for "go" twice under the same name: the second returns the memoized payload."""
    first = ctx.wait_for_signal("go")
    second = ctx.wait_for_signal("go")
    return [first, second]
