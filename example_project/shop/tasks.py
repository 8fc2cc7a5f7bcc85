"""The example project's tasks (the README's quickstart runs these)."""

from conductor_django import Cron, task


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


# --- scheduling -------------------------------------------------------------------------


@task(name="daily-digest", invocable=False,
      cron=[Cron("0 8 * * *", name="morning", payload={"edition": "morning"}),
            Cron("0 18 * * 1-5", name="evening", payload={"edition": "evening"})])
def daily_digest(event, ctx):
    """Static schedules: written to the Schedule table when a worker starts."""
    edition = event.payload["edition"]  # event.name is the schedule's name
    ctx.step("compose", lambda: ctx.logger.info("composing the %s digest", edition))
    return {"schedule": event.name, "edition": edition}


@task(name="trial-reminder", invocable=False)
def trial_reminder(event, ctx):
    ctx.step("remind", lambda: ctx.logger.info("reminding user %s", event.payload["user"]))
    return {"reminded": event.payload["user"]}


@task(name="start-trial")
def start_trial(event, ctx):
    """Creates a dynamic schedule: a reminder every morning while the trial runs."""
    user = event.payload["user"]
    cron = event.payload.get("cron", "0 10 * * *")
    ctx.schedule("trial-reminder", f"trial-{user}", cron, payload={"user": user})
    return {"scheduled": f"trial-{user}", "cron": cron}


@task(name="end-trial")
def end_trial(event, ctx):
    """Removes it again; its queued reminder is cancelled."""
    return {"removed": ctx.unschedule("trial-reminder", f"trial-{event.payload['user']}")}
