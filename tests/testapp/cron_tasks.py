"""Tasks with static ``cron=`` schedules. Loaded only where a test asks for them
(``CONDUCTOR_TEST_TASK_MODULES``), so other tests' workers do not schedule anything."""

from conductor_django import Cron, task

from .models import Mark


@task(name="static-cron", cron=[Cron("* * * * * *", name="every-second", payload={"n": 1}),
                                 Cron("0 0 1 1 *", name="new-year")])
def static_cron(event, ctx):
    Mark.add(f"static:{event.name}", ctx.execution_id)
    return event.payload
