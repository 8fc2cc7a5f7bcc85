"""The "old" code of the task ``versioned`` (tests/test_operator.py deploys v2 over it).

a -> (nap-early, when asked) -> charge -> nap-late -> done
"""

from conductor_django import task
from tests.testapp.models import Mark


@task(name="versioned", max_attempts=1)
def versioned(event, ctx):
    key = event.payload["key"]
    ctx.step("a", lambda: Mark.add(f"{key}:a:v1"))
    if event.payload.get("early"):
        ctx.sleep("nap-early", event.payload["nap"])
    ctx.step("charge", lambda: Mark.add(f"{key}:charge:v1"))
    ctx.sleep("nap-late", event.payload["nap"])
    return ctx.step("done", lambda: "v1")
