"""The example project's tasks (the README's quickstart runs these)."""

from conductor_django import task

from . import mailer


@task(name="send-welcome-email", max_attempts=3)
def send_welcome_email(event, ctx):
    """The README's quickstart task: two memoized steps, never sent twice."""
    user = event.payload["user"]
    body = ctx.step("render", lambda: f"Welcome, {user}!")  # runs once, ever
    ctx.step("send", lambda: mailer.send(user, body))  # never sent twice
    return {"sent": True}


@task(name="long-report")
def long_report(event, ctx):
    """One step per section, long enough to be cancelled while it runs."""
    sections = event.payload.get("sections", 60)
    for n in range(sections):
        ctx.step(f"section-{n}", lambda: ctx.signal.wait(0.5) and None)
    return {"sections": sections}
