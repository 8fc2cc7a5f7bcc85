"""The "new" code of the task ``versioned``: ``charge`` became ``charge-v2``, behind
``ctx.patched``, so executions that passed that point under v1 keep the old path."""

from conductor_django import task
from tests.testapp.models import Mark


@task(name="versioned", max_attempts=1)
def versioned(event, ctx):
    key = event.payload["key"]
    ctx.step("a", lambda: Mark.add(f"{key}:a:v2"))
    if event.payload.get("early"):
        ctx.sleep("nap-early", event.payload["nap"])
    if ctx.patched("charge-v2"):
        path = "new"
        ctx.step("charge-v2", lambda: Mark.add(f"{key}:charge:v2"))
    else:
        path = "old"
        ctx.step("charge", lambda: Mark.add(f"{key}:charge:v1"))
    ctx.sleep("nap-late", event.payload["nap"])
    return ctx.step("done", lambda: path)
