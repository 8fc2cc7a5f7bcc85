"""The example project's tasks (the README's quickstart runs these)."""

from conductor_django import task


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
